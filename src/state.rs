//! The per-request session state shared by the `Session` handles and the middleware, and
//! the plan for what to write once the handler is done.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    codec::DecodeError,
    config::SessionConfig,
    cookie::SessionId,
    error::SessionError,
    flash::FlashMessage,
    lifetime,
    record::{
        self, now_ms, AGENT, BOUND, CREATED, CSRF, FLASH_PREFIX, LEGACY_FLASH, NETWORK, TOUCHED,
        USER,
    },
    store::{
        cookie::{FIELD_OVERHEAD, HEADER_LEN},
        Fields, Write,
    },
};

/// What happened to the session during this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionStatus {
    /// Nothing changed; nothing will be written.
    Unchanged,
    /// Values changed; the changed fields will be written.
    Changed,
    /// [`Session::renew`](crate::Session::renew) was called: the data moves to a new id.
    Renewed,
    /// [`Session::purge`](crate::Session::purge) was called: the session is deleted and its cookie removed.
    Purged,
    /// The store failed and [`OnStoreError::FailOpen`](crate::OnStoreError::FailOpen) is in
    /// force: this session is empty and will not be saved.
    Degraded,
}

/// One request's view of its session. `Session` handles read `fields`, `id`, `key` and
/// `remember` directly and change everything through methods, which keep `dirty` in step.
pub(crate) struct State {
    config: Arc<SessionConfig>,
    /// `None` until a new session needs one.
    pub(crate) id: Option<SessionId>,
    /// The record's Redis key, while it exists in the store under `id` (as loaded).
    pub(crate) key: Option<String>,
    pub(crate) fields: Fields,
    /// The application's stored values (plain and typed) in a format this build does not
    /// read (a codec not named here, a feature off, a later release's): kept out of the
    /// handler's sight, and kept in the session. A write of the same name replaces one, a
    /// removal or [`State::clear`] deletes it, a renew carries it to the new record, a logout
    /// ends it.
    pub(crate) hidden: Fields,
    /// Names and values of the data fields in `fields` and `hidden`, in bytes.
    size: usize,
    /// Field names to write: set if present in `fields`, deleted if not.
    dirty: HashSet<String>,
    /// Degraded: the key of the record the cookie names, which could not be loaded.
    unloaded: Option<String>,
    /// The key of a stored record to delete (purge, renew, expired), and why.
    retire: Option<(String, Retired)>,
    pub(crate) remember: Option<Duration>,
    /// The cookie must be sent again with the lifetime in `remember`.
    pub(crate) remember_changed: bool,
    status: SessionStatus,
    flash: FlashState,
    /// Counts [`State::purge`] and [`State::clear`] calls, so that a [`TypedSession`] read
    /// before one of them knows that its value is from before and must not be written back.
    ///
    /// [`TypedSession`]: crate::TypedSession
    generation: u64,
    /// The client binding of this request's client (`m:b`), which a new record gets.
    bound: Option<Vec<u8>>,
    /// Fields the load dropped as unreadable, for
    /// [`on_session_load_error`](crate::RedisSessionBuilder::on_session_load_error).
    dropped: Vec<String>,
    /// The user of the stored session as loaded (whose index holds its handle), and its key.
    user_at_load: Option<String>,
    key_at_load: Option<String>,
    /// [`State::set_user`] was called: the device fields are written, the index updated.
    user_set: bool,
    /// [`State::sign_out_others`] was called.
    sign_out_others: bool,
    /// A session moved over from another library's record: its new record lives at most
    /// this long (the time the old one had left).
    ttl_cap: Option<Duration>,
}

/// What a request did to the session's user, for the per-user index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UserChange {
    /// The user of the stored session it came with, and that session's key.
    pub(crate) before: Option<String>,
    pub(crate) before_key: Option<String>,
    /// The user now (`None` after a purge).
    pub(crate) after: Option<String>,
    /// `set_user` was called.
    pub(crate) set: bool,
    /// `sign_out_other_sessions` was called.
    pub(crate) others: bool,
}

/// Why a stored record is being replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retired {
    /// [`State::renew`]: its data moves to a new id. The new record is created first; if the
    /// old one is gone by then, the session was ended meanwhile (a logout in another tab, an
    /// administrator) and the new one is deleted too.
    Renewed,
    /// [`State::purge`]: a logout. It must go, whatever else happens.
    Purged,
    /// Expired, or not a session (no creation marker): discarded on load.
    Discarded,
    /// Another library's record whose session moved into a new one of ours (the
    /// [actix-session bridge](crate::FromActixSession)): once the new one is stored,
    /// replaced with a short-lived forward to it (for the requests the browser sent with
    /// this one), or, as with [`Retired::Renewed`], the copy deleted if another request
    /// moved it first. A renew in the same request makes it [`Retired::Renewed`].
    Migrated,
}

/// Flash messages in flight during this request. Each stored message is a field of its own
/// (`f:<order>`), so that concurrent requests that send messages never overwrite each other,
/// and reading removes exactly the fields that were read.
#[derive(Default)]
struct FlashState {
    /// The stored messages were read: remove them at the end of the request.
    taken: bool,
    /// Sent during this request, for a later one.
    outgoing: Vec<FlashMessage>,
    /// What `outgoing` will add to the record: names and encoded values.
    outgoing_size: usize,
    /// For this request only.
    now: Vec<FlashMessage>,
}

/// What the middleware must do once the handler is done.
pub(crate) enum Plan {
    /// Nothing at all: the session could not be loaded and is not saved
    /// ([`SessionStatus::Degraded`]).
    Skip,
    /// No write. `live`: the stored session that continues.
    Keep { live: Option<Live> },
    /// A field-level write to the stored session.
    Update { write: Write, live: Live },
    /// The stored session holds no data any more: remove the fields and delete the record,
    /// unless a concurrent request added data meanwhile.
    Empty { write: Write, live: Live },
    /// Store a new record (new, renewed or purged-and-refilled session); `replaces` is the
    /// stored record it replaces, to delete (see [`Retired`] for the order).
    Create {
        id: SessionId,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
        replaces: Option<(String, Retired)>,
        remember: Option<Duration>,
    },
    /// Delete the old record; no new one.
    Delete { key: String },
}

impl Plan {
    /// What the save does, for its span: `skip`, `keep`, `update`, `empty`, `create`,
    /// `renew` or `delete`.
    /// The storage key the session will have once the plan is carried out, if any.
    pub(crate) fn key_after(&self, prefix: &str) -> Option<String> {
        match self {
            Plan::Keep { live: Some(live) } => Some(live.id.storage_key(prefix)),
            Plan::Update { write, .. } | Plan::Empty { write, .. } => match write {
                Write::Update { key, .. } | Write::Empty { key, .. } => Some(key.clone()),
                _ => None,
            },
            Plan::Create { id, .. } => Some(id.storage_key(prefix)),
            Plan::Skip | Plan::Keep { live: None } | Plan::Delete { .. } => None,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Plan::Skip => "skip",
            Plan::Keep { .. } => "keep",
            Plan::Update { .. } => "update",
            Plan::Empty { .. } => "empty",
            Plan::Create {
                replaces: Some((_, Retired::Renewed)),
                ..
            } => "renew",
            Plan::Create {
                replaces: Some((_, Retired::Migrated)),
                ..
            } => "migrate",
            Plan::Create { .. } => "create",
            Plan::Delete { .. } => "delete",
        }
    }
}

/// A stored session that goes on after this request.
pub(crate) struct Live {
    pub(crate) id: SessionId,
    pub(crate) remember: Option<Duration>,
    pub(crate) remember_changed: bool,
}

impl State {
    pub(crate) fn new(config: Arc<SessionConfig>) -> State {
        State {
            config,
            id: None,
            key: None,
            fields: Fields::new(),
            hidden: Fields::new(),
            size: 0,
            dirty: HashSet::new(),
            unloaded: None,
            retire: None,
            remember: None,
            remember_changed: false,
            status: SessionStatus::Unchanged,
            flash: FlashState::default(),
            generation: 0,
            bound: None,
            dropped: Vec::new(),
            user_at_load: None,
            key_at_load: None,
            user_set: false,
            sign_out_others: false,
            ttl_cap: None,
        }
    }

    /// A session moved over from another library's record under `old_key`: `fields` become
    /// a new record of ours (created at the end of the request whatever the handler does,
    /// living at most `left`), and the old record is deleted once it is stored.
    pub(crate) fn migrated(
        config: Arc<SessionConfig>,
        mut fields: Fields,
        left: Option<Duration>,
        old_key: String,
    ) -> State {
        let mut state = State::new(config);
        fields.retain(|name, _| record::is_data(name));
        state.size = record_size(&fields);
        state.fields = fields;
        state.retire = Some((old_key, Retired::Migrated));
        state.ttl_cap = left;
        state
    }

    pub(crate) fn replacing(config: Arc<SessionConfig>, old_key: String) -> State {
        let mut state = State::new(config);
        state.retire = Some((old_key, Retired::Discarded));
        state
    }

    /// A session that could not be loaded; `key` is the record the cookie names, which a
    /// [`State::purge`] must still delete.
    pub(crate) fn degraded(config: Arc<SessionConfig>, key: String) -> State {
        let mut state = State::new(config);
        state.unloaded = Some(key);
        state.status = SessionStatus::Degraded;
        state
    }

    pub(crate) fn loaded(
        config: Arc<SessionConfig>,
        id: SessionId,
        key: String,
        mut fields: Fields,
        remember: Option<Duration>,
    ) -> State {
        let shared = Arc::clone(&config);
        let codecs = &shared.codecs;
        let limits = &shared.limits;
        // What eager rewrites may add to the session, in all.
        let mut room = limits.max_session_size.saturating_sub(record_size(&fields));
        let mut state = State::new(config);
        fields.retain(|name, value| {
            let readable = if !record::is_data(name) {
                name != CREATED || record::created_ms(value).is_some()
            } else {
                match codecs.validate(value) {
                    Ok(()) => true,
                    Err(DecodeError::UnknownFormat(_) | DecodeError::UnsupportedFlags(_)) => {
                        // A format this build does not read (a codec not named here, a
                        // feature off, a later release): hidden from the handler, but left in
                        // the store for the instances that read it.
                        tracing::warn!(field = %name, "hiding a session value in a format this build does not read");
                        state.dropped.push(name.clone());
                        // The application's values go on with the session. The user, the
                        // CSRF token and flash messages stay in the store only: a renew
                        // must not carry a user that the user's index cannot be kept
                        // in step with, and reading flash messages removes what was read.
                        if record::is_value(name) {
                            state.hidden.insert(name.clone(), std::mem::take(value));
                        }
                        return false;
                    }
                    Err(_) => false,
                }
            };
            if !readable {
                tracing::warn!(field = %name, "dropping an unreadable session field");
                state.dirty.insert(name.clone());
                state.dropped.push(name.clone());
            } else if record::is_data(name) && codecs.rewrites_on_load() {
                // Stored in another format than the one written now: rewritten in it with
                // this request's save. A value that cannot be carried over exactly, or would
                // outgrow the limits, stays as it is.
                if let Some(rewritten) = codecs.rewrite(value) {
                    let growth = rewritten.len().saturating_sub(value.len());
                    if rewritten.len() <= limits.max_value_size && growth <= room {
                        room -= growth;
                        *value = rewritten;
                        state.dirty.insert(name.clone());
                    }
                }
            }
            readable
        });
        state.size = record_size(&fields) + record_size(&state.hidden);
        state.fields = fields;
        state.user_at_load = state.user();
        state.key_at_load = Some(key.clone());
        state.id = Some(id);
        state.key = Some(key);
        state.remember = remember;
        state
    }

    /// Writes the fields `names` again at the end of the request: as they are now if present
    /// (their stored form is not what the configuration says: see
    /// [`encrypt_at_rest`](crate::RedisSessionBuilder::encrypt_at_rest)), deleted if not
    /// (they did not open). Not a change the handler sees in [`status`](State::status).
    pub(crate) fn rewrite(&mut self, names: Vec<String>) {
        self.dirty.extend(names);
    }

    /// Binds the session to this request's client, whose `m:b` is `value`: a new record gets
    /// it; `write`: the loaded record's binding must be written (it had none, or an older
    /// one).
    pub(crate) fn bind(&mut self, value: &[u8], write: bool) {
        if write && self.key.is_some() {
            self.fields.insert(BOUND.to_owned(), value.to_vec());
            self.dirty.insert(BOUND.to_owned());
        }
        self.bound = Some(value.to_vec());
    }

    /// The formats of this middleware's values.
    pub(crate) fn codecs(&self) -> &crate::codec::Codecs {
        &self.config.codecs
    }

    /// The middleware's configuration, to use without holding the session's lock.
    pub(crate) fn shared_config(&self) -> Arc<SessionConfig> {
        Arc::clone(&self.config)
    }

    /// The fields the load dropped as unreadable (each told once).
    pub(crate) fn take_dropped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dropped)
    }

    /// The user this session belongs to.
    pub(crate) fn user(&self) -> Option<String> {
        self.config.codecs.decode(self.fields.get(USER)?).ok()
    }

    /// Makes the session `user`'s (see [`Session::set_user`](crate::Session::set_user)).
    pub(crate) fn set_user(&mut self, user: String) -> Result<(), SessionError> {
        if self.status == SessionStatus::Degraded {
            return Ok(());
        }
        let value = self
            .config
            .codecs
            .encode(&user)
            .map_err(|e| SessionError::Serialize {
                key: "user".to_owned(),
                source: e,
            })?;
        self.set(USER.to_owned(), value, "user")?;
        self.user_set = true;
        Ok(())
    }

    /// The device fields of a session whose user was set in this request.
    pub(crate) fn set_device(&mut self, agent: Option<&str>, network: Option<String>) {
        for (field, value) in [(AGENT, agent.map(str::to_owned)), (NETWORK, network)] {
            match value {
                Some(value) => {
                    self.fields.insert(field.to_owned(), value.into_bytes());
                }
                None => {
                    self.fields.remove(field);
                }
            }
            self.dirty.insert(field.to_owned());
        }
    }

    /// Ends the other sessions of this session's user after this request.
    pub(crate) fn sign_out_others(&mut self) {
        if self.status != SessionStatus::Degraded {
            self.sign_out_others = true;
        }
    }

    /// What this request did to the session's user.
    pub(crate) fn user_change(&self) -> UserChange {
        UserChange {
            before: self.user_at_load.clone(),
            before_key: self.key_at_load.clone(),
            after: self.user(),
            set: self.user_set,
            others: self.sign_out_others,
        }
    }

    pub(crate) fn is_bound(&self) -> bool {
        self.bound.is_some()
    }

    /// Sets the "remember me" lifetime (`None`: back to a browser-session cookie).
    pub(crate) fn remember(&mut self, lifetime: Option<Duration>) {
        if self.status == SessionStatus::Degraded {
            return;
        }
        if lifetime.is_some() && !self.config.allow_remember {
            tracing::debug!("\"remember me\" is turned off (allow_remember_me); ignored");
            return;
        }
        let lifetime = lifetime.map(|l| l.min(self.config.remember_max));
        if self.remember != lifetime {
            self.remember = lifetime;
            self.remember_changed = true;
            self.mark(SessionStatus::Changed);
        }
    }

    pub(crate) fn renew(&mut self) {
        if self.status == SessionStatus::Degraded {
            return;
        }
        self.detach(Retired::Renewed);
        // A session moved over from actix-session and renewed in the same request leaves no
        // forward at its old key: the old cookie must not lead to the session after a login.
        if let Some((_, why @ Retired::Migrated)) = &mut self.retire {
            *why = Retired::Renewed;
        }
        // A token an attacker may have seen before the login must not work after it.
        self.unset(CSRF);
        self.mark(SessionStatus::Renewed);
    }

    /// Ends the session. Degraded too: the record could not be read, but the logout must
    /// still delete it (or fail visibly).
    pub(crate) fn purge(&mut self) {
        self.generation += 1;
        if self.status == SessionStatus::Degraded {
            if let Some(key) = self.unloaded.take() {
                self.retire = Some((key, Retired::Purged));
            }
            return;
        }
        // A renew earlier in this request (or the load, for a record it discarded) already
        // moved the record out of the way: it is still in the store, and this logout ends it.
        let earlier = self.retire.take();
        self.detach(Retired::Purged);
        if let (None, Some((key, _))) = (&self.retire, earlier) {
            self.retire = Some((key, Retired::Purged));
        }
        self.fields.clear();
        self.hidden.clear();
        self.size = 0;
        self.flash = FlashState::default();
        self.remember = None;
        self.remember_changed = false;
        self.mark(SessionStatus::Purged);
    }

    /// Removes every value: plain, typed and flash (stored, and sent in this request).
    pub(crate) fn clear(&mut self) {
        self.generation += 1;
        self.unset_all(record::is_data);
        self.flash.outgoing.clear();
        self.flash.outgoing_size = 0;
        self.flash.now.clear();
        // What the handler did, even to an empty session (as actix-session reports it).
        self.mark(SessionStatus::Changed);
    }

    /// See [`State::generation`](State#structfield.generation).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this request ends the stored session it came with.
    pub(crate) fn purged(&self) -> bool {
        matches!(self.retire, Some((_, Retired::Purged)))
    }

    pub(crate) fn send_flash(
        &mut self,
        message: FlashMessage,
        now: bool,
    ) -> Result<(), SessionError> {
        let limits = self.config.flash;
        if message.level() < limits.min_level {
            return Ok(());
        }
        if message.content().len() > limits.max_message_size {
            return Err(SessionError::FlashTooLarge {
                size: message.content().len(),
                limit: limits.max_message_size,
            });
        }
        let queued = if now {
            self.flash.now.len()
        } else {
            let stored = if self.flash.taken {
                0
            } else {
                self.stored_flash().len()
            };
            stored + self.flash.outgoing.len()
        };
        if queued >= limits.max_messages {
            return Err(SessionError::TooManyFlashMessages {
                limit: limits.max_messages,
            });
        }
        if now {
            self.flash.now.push(message);
            return Ok(());
        }
        // It will be a field of its own: it counts towards the session's size now, so that
        // the send fails rather than the save.
        let encoded =
            self.config
                .codecs
                .encode(&message)
                .map_err(|source| SessionError::Serialize {
                    key: "flash".to_owned(),
                    source,
                })?;
        let size = self.size + self.flash.outgoing_size + FLASH_NAME_LEN + encoded.len();
        let limit = self.config.limits.max_session_size;
        if size > limit {
            return Err(SessionError::SessionTooLarge { size, limit });
        }
        if let Some(budget) = self.config.limits.cookie_budget {
            let sealed = self.sealed_len(FIELD_OVERHEAD + FLASH_NAME_LEN + encoded.len());
            if sealed > budget {
                return Err(SessionError::SessionTooLarge {
                    size: sealed,
                    limit: budget,
                });
            }
        }
        self.flash.outgoing_size += FLASH_NAME_LEN + encoded.len();
        self.flash.outgoing.push(message);
        Ok(())
    }

    pub(crate) fn take_flash(&mut self) -> Vec<FlashMessage> {
        let mut messages = if self.flash.taken {
            Vec::new()
        } else {
            self.flash.taken = true;
            self.stored_flash()
                .into_iter()
                .map(|(_, message)| message)
                .collect()
        };
        messages.append(&mut self.flash.now);
        messages
    }

    pub(crate) fn status(&self) -> SessionStatus {
        self.status
    }

    fn mark(&mut self, status: SessionStatus) {
        match (self.status, status) {
            // Degraded sticks; renew and purge stay visible after later changes.
            (SessionStatus::Degraded, _)
            | (SessionStatus::Renewed | SessionStatus::Purged, SessionStatus::Changed) => {}
            _ => self.status = status,
        }
    }

    fn has_data(&self) -> bool {
        !self.hidden.is_empty() || self.fields.keys().any(|k| record::is_data(k))
    }

    pub(crate) fn set(
        &mut self,
        field: String,
        value: Vec<u8>,
        key: &str,
    ) -> Result<(), SessionError> {
        let limits = self.config.limits;
        if field.starts_with(record::DATA_PREFIX) && key.len() > limits.max_key_len {
            return Err(SessionError::KeyTooLong {
                len: key.len(),
                limit: limits.max_key_len,
            });
        }
        if value.len() > limits.max_value_size {
            return Err(SessionError::ValueTooLarge {
                key: key.to_owned(),
                size: value.len(),
                limit: limits.max_value_size,
            });
        }
        if record::is_value(&field) && !self.fields.contains_key(&field) {
            // Flash messages have a limit of their own.
            let used = self.fields.keys().filter(|k| record::is_value(k)).count();
            if used >= limits.max_fields {
                return Err(SessionError::TooManyFields {
                    limit: limits.max_fields,
                });
            }
        }
        let shown = self.fields.get(&field);
        if shown == Some(&value) {
            return Ok(());
        }
        // A value the handler cannot see under this name is replaced.
        let old = shown.or_else(|| self.hidden.get(&field));
        let size = self
            .size
            .saturating_sub(old.map_or(0, |old| field.len() + old.len()))
            + field.len()
            + value.len();
        // Flash messages sent in this request count already (they are saved after this),
        // but are not part of `size`, which counts what is stored.
        let with_flash = size + self.flash.outgoing_size;
        if with_flash > limits.max_session_size {
            return Err(SessionError::SessionTooLarge {
                size: with_flash,
                limit: limits.max_session_size,
            });
        }
        if let Some(budget) = limits.cookie_budget {
            let old = old.map_or(0, |old| FIELD_OVERHEAD + field.len() + old.len());
            let sealed = self
                .sealed_len(FIELD_OVERHEAD + field.len() + value.len())
                .saturating_sub(old);
            if sealed > budget {
                return Err(SessionError::SessionTooLarge {
                    size: sealed,
                    limit: budget,
                });
            }
        }
        self.size = size;
        self.hidden.remove(&field);
        self.dirty.insert(field.clone());
        self.fields.insert(field, value);
        self.mark(SessionStatus::Changed);
        Ok(())
    }

    /// Removes `field`: the value the handler saw, if any. A value it could not see (in a
    /// format this build does not read) goes too, and is not returned.
    pub(crate) fn unset(&mut self, field: &str) -> Option<Vec<u8>> {
        let (old, shown) = match self.fields.remove(field) {
            Some(old) => (old, true),
            None => (self.hidden.remove(field)?, false),
        };
        if record::is_data(field) {
            self.size = self.size.saturating_sub(field.len() + old.len());
        }
        self.dirty.insert(field.to_owned());
        self.mark(SessionStatus::Changed);
        shown.then_some(old)
    }

    /// The cookie store: the plaintext bytes of this session sealed (with the flash messages
    /// sent so far, and the metadata a save adds), plus `extra`.
    fn sealed_len(&self, extra: usize) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .chain(&self.hidden)
            .map(|(name, value)| FIELD_OVERHEAD + name.len() + value.len())
            .sum();
        // The creation marker (`<13 digits>.<16 hex>`, room for more digits) and the last
        // touch (unix ms), if a save has yet to add them.
        let created = if self.fields.contains_key(CREATED) {
            0
        } else {
            FIELD_OVERHEAD + CREATED.len() + 40
        };
        let touched = if self.fields.contains_key(TOUCHED) {
            0
        } else {
            FIELD_OVERHEAD + TOUCHED.len() + 20
        };
        HEADER_LEN
            + fields
            + created
            + touched
            + self.flash.outgoing.len() * FIELD_OVERHEAD
            + self.flash.outgoing_size
            + extra
    }

    /// Removes every field whose name `which` picks.
    fn unset_all(&mut self, which: fn(&str) -> bool) {
        let names: Vec<String> = (self.fields.keys().chain(self.hidden.keys()))
            .filter(|k| which(k))
            .cloned()
            .collect();
        for name in names {
            self.unset(&name);
        }
    }

    /// Moves a stored record out of the way: it will be deleted, and what is saved next goes
    /// under a new id.
    fn detach(&mut self, why: Retired) {
        if let Some(key) = self.key.take() {
            self.retire = Some((key, why));
        }
        self.id = None;
        self.dirty.clear();
    }

    fn ttl(&self, now_ms: u64) -> Duration {
        let ttl = lifetime::ttl(
            &self.config,
            self.remember,
            created_ms(&self.fields),
            now_ms,
        );
        // At least a second: a moved session about to expire still gets its request.
        self.ttl_cap
            .map_or(ttl, |cap| ttl.min(cap.max(Duration::from_secs(1))))
    }

    /// Whether the load left the idle timeout alone ([`touch_after`]) and its last move is
    /// that old (or unknown), so that this request must move it.
    ///
    /// [`touch_after`]: crate::RedisSessionBuilder::touch_after
    fn touch_due(&self, now_ms: u64) -> bool {
        if self.config.touch_after.is_zero() {
            return false;
        }
        let touched = touched_ms(&self.fields);
        lifetime::touch_due(&self.config, self.remember, touched, Duration::ZERO, now_ms)
    }

    /// The write that moves the idle timeout of a loaded session now, if [`touch_after`]
    /// says it is due. The middleware sends it as soon as the session is loaded, without
    /// waiting for it, so that the TTL moves before the handler runs, not after.
    ///
    /// [`touch_after`]: crate::RedisSessionBuilder::touch_after
    pub(crate) fn due_touch(&mut self) -> Option<Write> {
        if self.config.touch_after.is_zero() {
            return None;
        }
        let now = now_ms();
        if !self.touch_due(now) {
            return None;
        }
        let key = self.key.clone()?;
        let stamp = now.to_string().into_bytes();
        self.fields.insert(TOUCHED.to_owned(), stamp.clone());
        Some(Write::Update {
            key,
            set: vec![(TOUCHED.to_owned(), stamp)],
            del: Vec::new(),
            ttl: self.ttl(now),
        })
    }

    /// The flash messages stored by earlier requests, by field name, in the order sent: the
    /// list of releases before 0.2 first, then one field per message, whose names sort in
    /// the order sent. An unreadable message counts as none.
    fn stored_flash(&self) -> Vec<(String, FlashMessage)> {
        let mut names: Vec<&String> = self
            .fields
            .keys()
            .filter(|name| name.starts_with(FLASH_PREFIX))
            .collect();
        names.sort_unstable();
        let mut messages = Vec::with_capacity(names.len());
        if let Some(raw) = self.fields.get(LEGACY_FLASH) {
            match self.config.codecs.decode::<Vec<FlashMessage>>(raw) {
                Ok(list) => messages.extend(list.into_iter().map(|m| (LEGACY_FLASH.to_owned(), m))),
                Err(e) => tracing::warn!(error = %e, "dropping unreadable flash messages"),
            }
        }
        for name in names {
            match self
                .config
                .codecs
                .decode::<FlashMessage>(&self.fields[name])
            {
                Ok(message) => messages.push((name.clone(), message)),
                Err(e) => tracing::warn!(error = %e, "dropping an unreadable flash message"),
            }
        }
        messages
    }

    /// Writes the flash changes of this request into the fields: the messages read go (the
    /// fields present at load, and no others: a message a concurrent request sent meanwhile
    /// stays for the next read), the ones sent become fields of their own.
    fn settle_flash(&mut self) {
        let FlashState {
            taken, outgoing, ..
        } = std::mem::take(&mut self.flash);
        if taken {
            self.unset_all(record::is_flash);
        }
        let mut order = FlashOrder::default();
        for message in outgoing {
            let name = order.next_name();
            match self.config.codecs.encode(&message) {
                Ok(raw) => {
                    if let Err(e) = self.set(name, raw, "flash") {
                        tracing::error!(error = %e, "flash message not saved");
                    }
                }
                Err(e) => tracing::error!(error = %e, "flash message not saved"),
            }
        }
    }

    pub(crate) fn plan(&mut self) -> Plan {
        if self.status == SessionStatus::Degraded {
            return match self.retire.take() {
                Some((key, _)) => Plan::Delete { key },
                None => Plan::Skip,
            };
        }
        self.settle_flash();
        let now = now_ms();
        if let Some(key) = self.key.clone() {
            let live = Live {
                id: self.id.clone().expect("a stored session has an id"),
                remember: self.remember,
                remember_changed: self.remember_changed,
            };
            let empty = !self.has_data();
            let lazy = !self.config.touch_after.is_zero();
            if self.dirty.is_empty() && !self.remember_changed && !empty && !self.touch_due(now) {
                return Plan::Keep { live: Some(live) };
            }
            if lazy && !empty {
                // This write moves the idle timeout: record when.
                self.fields
                    .insert(TOUCHED.to_owned(), now.to_string().into_bytes());
                self.dirty.insert(TOUCHED.to_owned());
            }
            let (mut set, mut del) = (Vec::new(), Vec::new());
            for name in self.dirty.drain() {
                // A hidden value named here is one to write again in the form the store
                // keeps now ([`State::rewrite`]).
                match self.fields.get(&name).or_else(|| self.hidden.get(&name)) {
                    Some(value) => set.push((name, value.clone())),
                    None => del.push(name),
                }
            }
            let ttl = self.ttl(now);
            if empty {
                let write = Write::Empty { key, del, ttl };
                return Plan::Empty { write, live };
            }
            let write = Write::Update { key, set, del, ttl };
            return Plan::Update { write, live };
        }
        let replaces = self.retire.take();
        if !self.has_data() {
            return match replaces {
                Some((key, _)) => Plan::Delete { key },
                None => Plan::Keep { live: None },
            };
        }
        // A renewed session keeps its creation time (the absolute timeout counts from the
        // first login, not the last renew); the marker's random part is new with each record.
        let created = created_ms(&self.fields).unwrap_or(now);
        self.fields
            .insert(CREATED.to_owned(), record::creation_marker(created));
        if !self.config.touch_after.is_zero() {
            self.fields
                .insert(TOUCHED.to_owned(), now.to_string().into_bytes());
        }
        if let Some(bound) = &self.bound {
            self.fields.insert(BOUND.to_owned(), bound.clone());
        }
        let id = self.id.get_or_insert_with(SessionId::generate).clone();
        Plan::Create {
            id,
            // What this build does not read moves too (a renew).
            fields: (self.fields.iter().chain(&self.hidden))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ttl: self.ttl(now),
            replaces,
            remember: self.remember,
        }
    }
}

/// Length of a flash message's field name ([`FlashOrder::next_name`]).
const FLASH_NAME_LEN: usize = FLASH_PREFIX.len() + 16 + 8;

/// Names for the flash messages one request sends: `f:` + the time sent in microseconds (16
/// hex digits, so that names sort by time) + 8 random hex digits. Within a request every
/// name is later than the one before, even within one microsecond; two requests that send
/// in the same microsecond are ordered by the random part.
#[derive(Default)]
struct FlashOrder {
    last: u64,
}

impl FlashOrder {
    fn next_name(&mut self) -> String {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.last = micros.max(self.last.saturating_add(1));
        let mut tie = [0u8; 4];
        getrandom::fill(&mut tie).expect("the OS random number generator failed");
        format!(
            "{FLASH_PREFIX}{:016x}{:08x}",
            self.last,
            u32::from_be_bytes(tie)
        )
    }
}

/// Names and values of a record's data fields, in bytes: what
/// [`max_session_size`](crate::RedisSessionBuilder::max_session_size) bounds.
pub(crate) fn record_size(fields: &Fields) -> usize {
    fields
        .iter()
        .filter(|(name, _)| record::is_data(name))
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

/// When the idle timeout last moved, if the record says ([`touch_after`], the cookie store).
///
/// [`touch_after`]: crate::RedisSessionBuilder::touch_after
pub(crate) fn touched_ms(fields: &Fields) -> Option<u64> {
    record::parse_millis(fields.get(TOUCHED)?)
}

/// When the stored session was created, if its record says.
pub(crate) fn created_ms(fields: &Fields) -> Option<u64> {
    record::created_ms(fields.get(CREATED)?)
}
