//! The server-side half of the lifecycle: loading a stored session by its signed id, and
//! carrying out the save plan against the store.

use std::{cell::RefCell, sync::Arc, time::Duration};

use actix_web::cookie::Cookie;

use super::ThisClient;
use crate::{
    binding::BindingMismatch,
    config::SessionConfig,
    cookie::{SessionId, Verified},
    error::{SessionLoadError, SessionLoadErrorKind, StoreError, StoreErrorKind},
    lifetime,
    record::{self, now_ms},
    session::Session,
    state::{created_ms, record_size, Live, Plan, Retired, UserChange},
    store::{Budget, Fields, Guarded, Outcome, Write},
    telemetry,
};

/// Attempts to find a free id for a new session. A collision of 256-bit random ids does not
/// happen in practice; the bound keeps a broken random source from looping forever.
const CREATE_ATTEMPTS: usize = 3;

/// Why a stored record is not this request's session.
enum NotAdopted {
    /// Not a session any more (too large, no creation marker, past its absolute timeout):
    /// its key, to delete.
    Discard(String),
    /// Bound to another client: it stays, for its owner.
    Mismatch(BindingMismatch),
}

/// A middleware's server-side store, with its configuration.
pub(super) struct Server<'a> {
    pub(super) config: &'a Arc<SessionConfig>,
    pub(super) store: &'a Guarded,
    /// The store time the request has left.
    pub(super) budget: &'a Budget,
}

impl Server<'_> {
    /// Loads the first of the candidates (`first`, then `rest`) that the store knows; the
    /// answer says whether its cookie was signed with an old key. None known: a fresh session
    /// (strict mode: a signed id that the store does not know is never adopted).
    pub(super) async fn load(
        &self,
        first: &Verified,
        rest: &[Verified],
        client: Option<&ThisClient<'_>>,
        problems: &RefCell<Vec<SessionLoadError>>,
    ) -> Result<(Session, bool), (StoreError, String)> {
        let config = self.config;
        // A record that exists but is no session any more (too large, no creation marker,
        // past its absolute timeout) does not stop the search either; it is deleted if no
        // other candidate is a session.
        let mut discarded = None;
        for verified in std::iter::once(first).chain(rest) {
            // A lifetime from before the policy was shortened is cut to the policy's.
            let remember = lifetime::remembered(config, verified.remember);
            // With touch_after, the TTL moves only when due, right after this load
            // (State::due_touch).
            let ttl = lifetime::on_load(config, remember);
            let key = verified.id.storage_key(&config.key_prefix);
            let fields = match self.store.load_session(&key, ttl, self.budget).await {
                Ok(Some(fields)) => fields,
                Ok(None) => {
                    tracing::debug!("session not found");
                    continue;
                }
                // The key that failed: a degraded session's purge must delete that one.
                Err(e) => return Err((e, key)),
            };
            match self.adopt(verified, remember, key, fields, client, problems) {
                Ok(session) => return Ok((session, verified.stale_key)),
                Err(NotAdopted::Discard(key)) => {
                    discarded.get_or_insert(key);
                }
                Err(NotAdopted::Mismatch(mismatch)) => {
                    if let Some(client) = client {
                        client.mismatch.set(Some(mismatch));
                    }
                }
            }
        }
        let session = match discarded {
            Some(key) => Session::replacing(Arc::clone(config), key),
            None => Session::fresh(Arc::clone(config)),
        };
        Ok((session, false))
    }

    /// The session of a record the store had under `key`, after the checks on it; `Err`
    /// with the key when the record is not to be adopted.
    fn adopt(
        &self,
        verified: &Verified,
        remember: Option<Duration>,
        key: String,
        mut fields: Fields,
        client: Option<&ThisClient<'_>>,
        problems: &RefCell<Vec<SessionLoadError>>,
    ) -> Result<Session, NotAdopted> {
        let config = self.config;
        // Sealed and compressed values back to their encoded form; those stored
        // otherwise than the configuration says now are written again.
        let mut failed = Vec::new();
        let migrate = config.at_rest.open_record(&key, &mut fields, &mut failed);
        problems
            .borrow_mut()
            .extend(failed.into_iter().map(SessionLoadError::unreadable));
        let size = record_size(&fields);
        if size > config.limits.max_session_size {
            tracing::warn!(
                size,
                limit = config.limits.max_session_size,
                "stored session over the size limit; discarding it"
            );
            let problem = SessionLoadError::new(SessionLoadErrorKind::TooLarge, None);
            problems.borrow_mut().push(problem);
            return Err(NotAdopted::Discard(key));
        }
        let Some(created) = created_ms(&fields) else {
            tracing::debug!("record without a creation marker; discarding it");
            let problem = SessionLoadError::new(SessionLoadErrorKind::NotASession, None);
            problems.borrow_mut().push(problem);
            return Err(NotAdopted::Discard(key));
        };
        if lifetime::past_absolute(config, created, now_ms()) {
            tracing::debug!("session reached its absolute timeout");
            return Err(NotAdopted::Discard(key));
        }
        let rebind = match client {
            Some(client) => client.check(&fields).map_err(NotAdopted::Mismatch)?,
            None => false,
        };
        let session = Session::loaded(
            Arc::clone(config),
            verified.id.clone(),
            key,
            fields,
            remember,
        );
        if remember != verified.remember {
            // The cookie still carries the longer lifetime: send it again.
            session.lock().remember_changed = true;
        }
        {
            let mut state = session.lock();
            state.rewrite(migrate);
            problems.borrow_mut().extend(
                state
                    .take_dropped()
                    .into_iter()
                    .map(SessionLoadError::unreadable),
            );
            if let Some(client) = client {
                state.bind(client.bound(), rebind);
            }
        }
        let touch = session.lock().due_touch();
        if let Some(touch) = touch {
            // Sent while the handler runs; a touch that fails is due again next time.
            self.store.write_detached(&touch);
            telemetry::touch();
        }
        Ok(session)
    }

    /// Carries out the plan; returns the cookie to set, if any.
    pub(super) async fn save(
        &self,
        plan: Plan,
        remove_dead: bool,
        stale_key: bool,
    ) -> Result<Option<Cookie<'static>>, StoreError> {
        let config = self.config;
        Ok(match plan {
            Plan::Skip => None,
            Plan::Keep { live: None } => {
                // A cookie that led nowhere (rejected, unknown id): tell the browser to drop it.
                remove_dead.then(|| config.cookie.removal_cookie())
            }
            Plan::Keep { live: Some(live) } => self.refreshed_cookie(&live, stale_key),
            Plan::Update { mut write, live } => {
                match self
                    .store
                    .write(self.sealed(&mut write), self.budget)
                    .await?
                {
                    // Ended while this request ran (a logout in another tab, a renew, the
                    // expiry): what the write left is removed. No cookie either: a removal could
                    // clobber the cookie a concurrent renew just set; a stale cookie is removed on
                    // its next request anyway.
                    Outcome::Gone => {
                        if let Write::Update { key, .. } = write {
                            // Housekeeping (the remnant is never adopted and has a TTL): a
                            // failure here does not fail the response.
                            if let Err(e) =
                                self.store.write(&Write::Delete { key }, self.budget).await
                            {
                                tracing::warn!(error = %e, "could not delete a session remnant");
                            }
                        }
                        None
                    }
                    _ => self.refreshed_cookie(&live, stale_key),
                }
            }
            Plan::Empty { write, live } => match self.store.write(&write, self.budget).await? {
                Outcome::Applied => Some(config.cookie.removal_cookie()),
                Outcome::Refused => self.refreshed_cookie(&live, stale_key),
                Outcome::Gone => None,
            },
            Plan::Delete { key } => {
                self.store
                    .write(&Write::Delete { key }, self.budget)
                    .await?;
                Some(config.cookie.removal_cookie())
            }
            Plan::Create {
                id,
                fields,
                ttl,
                replaces,
                remember,
            } => {
                // A record that must go in any case goes first: a logout is carried out even
                // if the session that carries its flash message cannot be stored.
                let renewed = match replaces {
                    Some((old, why @ (Retired::Renewed | Retired::Migrated))) => Some((old, why)),
                    Some((old, Retired::Purged)) => {
                        self.store
                            .write(&Write::Delete { key: old }, self.budget)
                            .await?;
                        None
                    }
                    Some((old, Retired::Discarded)) => {
                        // Not a session any more: deleting it is housekeeping, which a later
                        // load repeats if this one fails.
                        if let Err(e) = self
                            .store
                            .write(&Write::Delete { key: old }, self.budget)
                            .await
                        {
                            tracing::warn!(error = %e, "could not delete a discarded session record");
                        }
                        None
                    }
                    None => None,
                };
                let id = self.create(id, fields, ttl).await?;
                if let Some((old, why)) = renewed {
                    // Only now that the new record exists may the old one go. If it was gone
                    // already, the session was ended while this request ran (a logout in
                    // another tab, an administrator, another renew): the renewed copy must
                    // not outlive it, and no cookie is sent (the browser keeps what the
                    // request that ended it sent). A moved actix-session state leaves a
                    // forward to the new session for the requests sent with this one; gone,
                    // or forwarded already, another request moved it first.
                    let outcome = match (why, &config.bridge) {
                        (Retired::Migrated, Some(bridge)) => {
                            bridge
                                .forward(self.store, self.budget, &old, &id, remember)
                                .await?
                        }
                        _ => {
                            self.store
                                .write(&Write::Delete { key: old }, self.budget)
                                .await?
                        }
                    };
                    if outcome == Outcome::Gone {
                        tracing::debug!("session ended during its renewal; discarding the copy");
                        let key = id.storage_key(&config.key_prefix);
                        self.store
                            .write(&Write::Delete { key }, self.budget)
                            .await?;
                        return Ok(None);
                    }
                }
                let value = config.signer.sign(&id, remember);
                Some(config.cookie.session_cookie(value, remember))
            }
        })
    }

    /// Carries out the plan and what the request did to the session's user: the session
    /// goes into its user's index no later than it is stored under that user (so that "sign
    /// out everywhere" never misses it), leaves the index of the user it no longer has (or
    /// its old handle, after a renew or a logout) afterwards, and with
    /// [`sign_out_other_sessions`](crate::Session::sign_out_other_sessions) ends the user's
    /// other sessions once it is saved.
    pub(super) async fn save_with_user(
        &self,
        plan: Plan,
        remove_dead: bool,
        stale_key: bool,
        change: UserChange,
    ) -> Result<Option<Cookie<'static>>, StoreError> {
        let old_key = change.before_key.clone();
        let planned = plan.key_after(&self.config.key_prefix);
        let add = match (&change.after, &planned) {
            (Some(user), Some(key)) if change.set || old_key.as_ref() != Some(key) => {
                Some((user, key))
            }
            _ => None,
        };
        let cookie = match add {
            // A new record (a login with renew, a first session): its index entry and the
            // record go together, in the same batch where the store batches. Should the
            // index fail, the answer is an error and no cookie names the new record: nobody
            // is signed in without being in the index.
            Some((user, key)) if matches!(plan, Plan::Create { .. }) => {
                let (indexed, saved) = futures_util::future::join(
                    self.index_add(user, key),
                    self.save(plan, remove_dead, stale_key),
                )
                .await;
                indexed?;
                saved?
            }
            // An existing record whose user changes: into the index first, so that a
            // failure leaves the session as it was.
            Some((user, key)) => {
                self.index_add(user, key).await?;
                self.save(plan, remove_dead, stale_key).await?
            }
            None => self.save(plan, remove_dead, stale_key).await?,
        };
        if let (Some(before), Some(old)) = (&change.before, &old_key) {
            if planned.as_ref() != Some(old) || change.after.as_ref() != Some(before) {
                // A stale member is pruned when the index is read: not worth failing for.
                if let Err(e) = self.index_remove(before, std::slice::from_ref(old)).await {
                    tracing::warn!(error = %e, "could not update a user's session index");
                }
            }
        }
        if let (true, Some(user), Some(own)) = (change.others, &change.after, &planned) {
            self.sign_out_others(user, own).await?;
        }
        Ok(cookie)
    }

    /// Adds the session under `key` to `user`'s index (created if absent), and moves the
    /// index's expiry to that of the longest session.
    async fn index_add(&self, user: &str, key: &str) -> Result<(), StoreError> {
        let index = record::index_key(&self.config.key_prefix, user);
        let set = vec![(self.member(key), Vec::new())];
        let ttl = lifetime::longest(self.config);
        let update = Write::Update {
            key: index.clone(),
            set: set.clone(),
            del: Vec::new(),
            ttl,
        };
        if self.store.write(&update, self.budget).await? == Outcome::Applied {
            return Ok(());
        }
        let create = Write::Create {
            key: index,
            fields: set,
            ttl,
        };
        if self.store.write(&create, self.budget).await? == Outcome::Applied {
            return Ok(());
        }
        // Created meanwhile by a concurrent login of the same user (or a Redis remnant of
        // the update above, without its expiry): the update now finds it.
        self.store.write(&update, self.budget).await.map(drop)
    }

    /// Removes the sessions under `keys` from `user`'s index.
    async fn index_remove(&self, user: &str, keys: &[String]) -> Result<(), StoreError> {
        let write = Write::Update {
            key: record::index_key(&self.config.key_prefix, user),
            set: Vec::new(),
            del: keys.iter().map(|key| self.member(key)).collect(),
            ttl: lifetime::longest(self.config),
        };
        self.store.write(&write, self.budget).await.map(drop)
    }

    /// The index field of the session under `key`: `h:<handle>`.
    fn member(&self, key: &str) -> String {
        let handle = key.strip_prefix(&self.config.key_prefix).unwrap_or(key);
        format!("{}{handle}", record::INDEX_FIELD)
    }

    /// Ends every session in `user`'s index but the one under `own`.
    async fn sign_out_others(&self, user: &str, own: &str) -> Result<(), StoreError> {
        let index = record::index_key(&self.config.key_prefix, user);
        let Some(members) = self.store.load(&index, None, self.budget).await? else {
            return Ok(());
        };
        let own = self.member(own);
        let mut ended = Vec::new();
        for member in members.into_keys() {
            let Some(handle) = member.strip_prefix(record::INDEX_FIELD) else {
                continue;
            };
            if member == own || crate::Handle::parse(handle).is_none() {
                continue;
            }
            let key = format!("{}{handle}", self.config.key_prefix);
            self.store
                .write(&Write::Delete { key: key.clone() }, self.budget)
                .await?;
            ended.push(key);
        }
        if !ended.is_empty() {
            tracing::info!(
                sessions = ended.len(),
                "signed out the user's other sessions"
            );
            self.index_remove(user, &ended).await?;
        }
        Ok(())
    }

    /// Stores a new record under `id`, or under another fresh id if that one is taken;
    /// returns the id used.
    async fn create(
        &self,
        mut id: SessionId,
        mut fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> Result<SessionId, StoreError> {
        let at_rest = &self.config.at_rest;
        let mut attempt = 1;
        loop {
            let key = id.storage_key(&self.config.key_prefix);
            // Sealed for this key: a value sealed for another does not open in this record.
            let stored = if at_rest.is_plain() {
                std::mem::take(&mut fields)
            } else {
                let mut stored = fields.clone();
                at_rest.seal_fields(&key, &mut stored);
                stored
            };
            let write = Write::Create {
                key,
                fields: stored,
                ttl,
            };
            if self.store.write(&write, self.budget).await? == Outcome::Applied {
                return Ok(id);
            }
            if attempt == CREATE_ATTEMPTS {
                return Err(StoreErrorKind::IdCollision.into());
            }
            tracing::warn!("new session id already taken; drawing another");
            attempt += 1;
            id = SessionId::generate();
            if let (true, Write::Create { fields: stored, .. }) = (at_rest.is_plain(), write) {
                fields = stored;
            }
        }
    }

    /// The write with its values in their stored form (sealed, compressed).
    fn sealed<'w>(&self, write: &'w mut Write) -> &'w Write {
        if let Write::Update { key, set, .. } = write {
            self.config.at_rest.seal_fields(key, set);
        }
        write
    }

    /// The cookie of a session that goes on, when it must be sent again: signed with an old
    /// key, a new "remember me" lifetime, or a persistent cookie whose Max-Age moves.
    fn refreshed_cookie(&self, live: &Live, stale_key: bool) -> Option<Cookie<'static>> {
        let config = self.config;
        let persistent = live.remember.or(config.cookie.max_age).is_some();
        (stale_key || live.remember_changed || persistent).then(|| {
            let value = config.signer.sign(&live.id, live.remember);
            config.cookie.session_cookie(value, live.remember)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use actix_web::{cookie::Cookie, test, web, App};

    use super::*;
    use crate::{
        key::Key,
        middleware::RedisSession,
        store::{MemoryStore, Record, SessionStore},
    };

    /// A memory store that answers "key taken" to the next `refuse` creates, and records the
    /// keys every create asked for.
    #[derive(Clone, Default)]
    struct TakenStore {
        memory: MemoryStore,
        refuse: Arc<AtomicUsize>,
        asked: Arc<Mutex<Vec<String>>>,
    }

    impl SessionStore for TakenStore {
        async fn load(
            &self,
            key: &str,
            ttl: Option<Duration>,
        ) -> Result<Option<Record>, StoreError> {
            self.memory.load(key, ttl).await
        }

        async fn update(
            &self,
            key: &str,
            set: &[(String, Vec<u8>)],
            remove: &[String],
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.memory.update(key, set, remove, ttl).await
        }

        async fn create(
            &self,
            key: &str,
            fields: &[(String, Vec<u8>)],
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.asked.lock().unwrap().push(key.to_owned());
            let refuse = self
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                return Ok(false);
            }
            self.memory.create(key, fields, ttl).await
        }

        async fn delete(&self, key: &str) -> Result<bool, StoreError> {
            self.memory.delete(key).await
        }
    }

    async fn set(session: Session, value: web::Path<String>) -> actix_web::Result<String> {
        session.insert("v", value.into_inner())?;
        Ok("ok".into())
    }

    async fn get(session: Session) -> actix_web::Result<String> {
        Ok(session.get::<String>("v")?.unwrap_or_default())
    }

    #[actix_web::test]
    async fn a_taken_key_makes_the_middleware_draw_another_id() {
        let store = TakenStore::default();
        store.refuse.store(1, Ordering::SeqCst);
        let sessions = RedisSession::builder_with(store.clone(), Key::generate())
            .build()
            .unwrap();
        let app = test::init_service(
            App::new()
                .wrap(sessions.clone())
                .route("/set/{v}", web::get().to(set))
                .route("/", web::get().to(get)),
        )
        .await;
        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/set/first").to_request(),
        )
        .await;
        assert!(res.status().is_success());
        let cookie = res
            .response()
            .cookies()
            .next()
            .expect("a session cookie")
            .into_owned();
        let asked = store.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "taken, then another id");
        assert_ne!(asked[0], asked[1]);
        // The cookie names the id that was stored.
        let verified = sessions.inner.config.signer.verify(cookie.value()).unwrap();
        assert_eq!(verified.id.storage_key("session:"), asked[1]);
        let req = test::TestRequest::get()
            .cookie(Cookie::new("sid", cookie.value().to_owned()))
            .to_request();
        assert_eq!(test::call_and_read_body(&app, req).await, "first");

        // A store that is always taken (a broken random source): an error, not a loop.
        store.refuse.store(usize::MAX, Ordering::SeqCst);
        store.asked.lock().unwrap().clear();
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/set/x").to_request()).await;
        assert_eq!(res.status(), 503);
        assert_eq!(store.asked.lock().unwrap().len(), CREATE_ATTEMPTS);
        assert_eq!(store.memory.len(), 1, "only the first session");
    }

    #[actix_web::test]
    async fn redis_never_creates_over_a_taken_key() {
        let server = crate::test_redis::RedisServer::start();
        let store = crate::store::RedisStore::open(
            &server.url(),
            &crate::store::commands::RedisOptions::default(),
        )
        .unwrap();
        let ttl = Duration::from_secs(60);
        let first = [("m:c".to_owned(), b"1.0123456789abcdef".to_vec())];
        let second = [("m:c".to_owned(), b"2.fedcba9876543210".to_vec())];
        assert!(SessionStore::create(&store, "session:k", &first, ttl)
            .await
            .unwrap());
        assert!(!SessionStore::create(&store, "session:k", &second, ttl)
            .await
            .unwrap());
        let record = SessionStore::load(&store, "session:k", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.get("m:c").unwrap(), &first[0].1);
    }
}
