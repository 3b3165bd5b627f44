//! The cookie store's half of the lifecycle: a session opened from its sealed cookie, and the
//! save plan carried out as a new sealed cookie (or its removal). No I/O.

use std::{sync::Arc, time::Duration};

use actix_web::cookie::Cookie;

use super::ThisClient;
use crate::{
    config::SessionConfig,
    cookie::SessionId,
    error::{StoreError, StoreErrorKind},
    lifetime,
    record::{now_ms, TOUCHED},
    session::Session,
    state::{created_ms, touched_ms, Plan},
    store::{
        cookie::{Opened, Sealer, MAX_COOKIE_BYTES},
        Fields,
    },
};

/// The session in an opened cookie, which [`is_live`] let through when the cookie was read.
/// The answer also says whether it was sealed under an old key; `None`: the session is bound
/// to another client.
pub(super) fn open(
    config: &Arc<SessionConfig>,
    opened: &Opened,
    client: Option<&ThisClient<'_>>,
) -> Option<(Session, bool)> {
    let rebind = match client.map(|client| (client, client.check(&opened.fields))) {
        Some((client, Err(mismatch))) => {
            client.mismatch.set(Some(mismatch));
            return None;
        }
        Some((_, Ok(rebind))) => rebind,
        None => false,
    };
    let remember = lifetime::remembered(config, opened.remember);
    let session = Session::loaded(
        Arc::clone(config),
        opened.id.clone(),
        opened.id.storage_key(&config.key_prefix),
        opened.fields.clone(),
        remember,
    );
    if remember != opened.remember {
        // Sealed with a longer lifetime than the policy allows now: seal it again.
        session.lock().remember_changed = true;
    }
    if let Some(client) = client {
        session.lock().bind(client.bound(), rebind);
    }
    Some((session, opened.stale_key))
}

/// Whether the idle and absolute timeouts sealed in the cookie leave it alive at `now`.
pub(super) fn is_live(config: &SessionConfig, opened: &Opened, now: u64) -> bool {
    let remember = lifetime::remembered(config, opened.remember);
    match (touched_ms(&opened.fields), created_ms(&opened.fields)) {
        (Some(touched), Some(created)) => {
            !lifetime::idle_expired(config, remember, touched, now)
                && !lifetime::past_absolute(config, created, now)
        }
        _ => false,
    }
}

/// Carries out the plan: the cookie to set, if any.
pub(super) fn save(
    config: &SessionConfig,
    sealer: &Sealer,
    session: &Session,
    plan: Plan,
    remove_dead: bool,
    stale_key: bool,
) -> Result<Option<Cookie<'static>>, StoreError> {
    let now = now_ms();
    Ok(match plan {
        Plan::Skip => None,
        Plan::Keep { live: None } => remove_dead.then(|| config.cookie.removal_cookie()),
        Plan::Keep { live: Some(live) } => {
            let mut state = session.lock();
            // A persistent cookie's Max-Age moves on every response, as with a server-side
            // store.
            let persistent = live.remember.or(config.cookie.max_age).is_some();
            let due = stale_key
                || live.remember_changed
                || persistent
                || refresh_due(config, &state.fields, live.remember, now);
            if !due {
                return Ok(None);
            }
            let state = &mut *state;
            Some(seal(
                config,
                sealer,
                &live.id,
                live.remember,
                &mut state.fields,
                &state.hidden,
                now,
            )?)
        }
        // The whole session goes into the cookie, not only what changed.
        Plan::Update { live, .. } => {
            let mut state = session.lock();
            let state = &mut *state;
            Some(seal(
                config,
                sealer,
                &live.id,
                live.remember,
                &mut state.fields,
                &state.hidden,
                now,
            )?)
        }
        Plan::Empty { .. } | Plan::Delete { .. } => Some(config.cookie.removal_cookie()),
        // New, renewed (a new id: nothing on a server to delete) or purged and refilled.
        Plan::Create {
            id,
            fields,
            remember,
            ..
        } => {
            let mut fields: Fields = fields.into_iter().collect();
            Some(seal(
                config,
                sealer,
                &id,
                remember,
                &mut fields,
                &Fields::new(),
                now,
            )?)
        }
    })
}

/// How often an unchanged session's cookie is sealed again to move its idle timeout, when
/// [`touch_after`](crate::RedisSessionBuilder::touch_after) does not say: every move costs a
/// Set-Cookie with the whole session.
const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// Whether the idle timeout sealed in the cookie must move: once per `touch_after`, by
/// default once a minute, and at least twice per lifetime.
fn refresh_due(
    config: &SessionConfig,
    fields: &Fields,
    remember: Option<Duration>,
    now: u64,
) -> bool {
    lifetime::touch_due(config, remember, touched_ms(fields), DEFAULT_REFRESH, now)
}

/// Seals `fields` and the values in `hidden` (a format this build does not read: they stay in
/// the session for the builds that do).
fn seal(
    config: &SessionConfig,
    sealer: &Sealer,
    id: &SessionId,
    remember: Option<Duration>,
    fields: &mut Fields,
    hidden: &Fields,
    now: u64,
) -> Result<Cookie<'static>, StoreError> {
    fields.insert(TOUCHED.to_owned(), now.to_string().into_bytes());
    let sealed = if hidden.is_empty() {
        sealer.seal(id, remember, fields.iter())
    } else {
        let all: Vec<_> = fields.iter().chain(hidden).collect();
        sealer.seal(id, remember, all.into_iter())
    };
    let cookie = config.cookie.session_cookie(sealed, remember);
    // The limits checked at every insert keep it within; should they not, no cookie that
    // the browser would drop silently.
    let size = cookie.to_string().len();
    if size > MAX_COOKIE_BYTES {
        tracing::error!(size, "sealed session too large for a cookie");
        return Err(StoreError::new(
            StoreErrorKind::Backend,
            "the sealed session does not fit in a cookie",
        ));
    }
    Ok(cookie)
}
