//! The per-request session state shared by the `Session` handles and the middleware, and
//! the plan for what to write once the handler is done.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    codec,
    config::SessionConfig,
    cookie::SessionId,
    error::SessionError,
    flash::FlashMessage,
    session::SessionStatus,
    store::{Fields, Write, META_PREFIX},
};

/// Field holding the creation time (unix milliseconds). Only the create script writes it, and a
/// record without it is not a session: a field-level update that raced with expiry can leave
/// such a remnant behind, and it is never adopted.
pub(crate) const CREATED: &str = "m:c";
/// Field holding when the idle timeout last moved (unix milliseconds), written only with
/// [`touch_after`](crate::RedisSessionBuilder::touch_after).
pub(crate) const TOUCHED: &str = "m:t";
/// Field holding the flash messages waiting to be read.
pub(crate) const FLASH: &str = "f";

/// One request's view of its session. `Session` handles read `fields`, `id`, `key` and
/// `remember` directly and change everything through methods, which keep `dirty` in step.
pub(crate) struct State {
    config: Arc<SessionConfig>,
    /// `None` until a new session needs one.
    pub(crate) id: Option<SessionId>,
    /// The record's Redis key, while it exists in the store under `id` (as loaded).
    pub(crate) key: Option<String>,
    pub(crate) fields: Fields,
    /// Field names to write: set if present in `fields`, deleted if not.
    dirty: HashSet<String>,
    /// The key of a stored record to delete (purge, renew, expired).
    retire: Option<String>,
    pub(crate) remember: Option<Duration>,
    remember_changed: bool,
    status: SessionStatus,
    flash: FlashState,
}

/// Flash messages in flight during this request.
#[derive(Default)]
struct FlashState {
    /// The stored messages were read: remove them at the end of the request.
    taken: bool,
    /// Sent during this request, for a later one.
    outgoing: Vec<FlashMessage>,
    /// For this request only.
    now: Vec<FlashMessage>,
}

/// What the middleware must do once the handler is done.
pub(crate) enum Plan {
    /// No write. `live`: the stored session that continues.
    Keep { live: Option<Live> },
    /// A field-level write to the stored session.
    Update { write: Write, live: Live },
    /// The stored session holds no data any more: remove the fields and delete the record,
    /// unless a concurrent request added data meanwhile.
    Empty { write: Write, live: Live },
    /// Store a new record (new, renewed or purged-and-refilled session).
    Create {
        id: SessionId,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
        retire: Option<String>,
        remember: Option<Duration>,
    },
    /// Delete the old record; no new one.
    Delete { key: String },
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
            dirty: HashSet::new(),
            retire: None,
            remember: None,
            remember_changed: false,
            status: SessionStatus::Unchanged,
            flash: FlashState::default(),
        }
    }

    pub(crate) fn replacing(config: Arc<SessionConfig>, old_key: String) -> State {
        let mut state = State::new(config);
        state.retire = Some(old_key);
        state
    }

    pub(crate) fn degraded(config: Arc<SessionConfig>) -> State {
        let mut state = State::new(config);
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
        let mut state = State::new(config);
        fields.retain(|name, value| {
            let readable = if name.starts_with(META_PREFIX) {
                name != CREATED || parse_millis(value).is_some()
            } else {
                codec::validate(value).is_ok()
            };
            if !readable {
                tracing::warn!(field = %name, "dropping an unreadable session field");
                state.dirty.insert(name.clone());
            }
            readable
        });
        state.fields = fields;
        state.id = Some(id);
        state.key = Some(key);
        state.remember = remember;
        state
    }

    pub(crate) fn remember(&mut self, lifetime: Duration) {
        if self.remember != Some(lifetime) {
            self.remember = Some(lifetime);
            self.remember_changed = true;
            self.mark(SessionStatus::Changed);
        }
    }

    pub(crate) fn renew(&mut self) {
        if self.status == SessionStatus::Degraded {
            return;
        }
        self.detach();
        self.mark(SessionStatus::Renewed);
    }

    pub(crate) fn purge(&mut self) {
        if self.status == SessionStatus::Degraded {
            return;
        }
        self.detach();
        self.fields.clear();
        self.flash = FlashState::default();
        self.remember = None;
        self.remember_changed = false;
        self.mark(SessionStatus::Purged);
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
        } else {
            self.flash.outgoing.push(message);
        }
        Ok(())
    }

    pub(crate) fn take_flash(&mut self) -> Vec<FlashMessage> {
        let mut messages = if self.flash.taken {
            Vec::new()
        } else {
            self.flash.taken = true;
            self.stored_flash()
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
        self.fields.keys().any(|k| !k.starts_with(META_PREFIX))
    }

    pub(crate) fn set(
        &mut self,
        field: String,
        value: Vec<u8>,
        key: &str,
    ) -> Result<(), SessionError> {
        let limits = self.config.limits;
        if value.len() > limits.max_value_size {
            return Err(SessionError::ValueTooLarge {
                key: key.to_owned(),
                size: value.len(),
                limit: limits.max_value_size,
            });
        }
        if !self.fields.contains_key(&field) {
            let used = self
                .fields
                .keys()
                .filter(|k| !k.starts_with(META_PREFIX))
                .count();
            if used >= limits.max_fields {
                return Err(SessionError::TooManyFields {
                    limit: limits.max_fields,
                });
            }
        }
        if self.fields.get(&field) == Some(&value) {
            return Ok(());
        }
        self.dirty.insert(field.clone());
        self.fields.insert(field, value);
        self.mark(SessionStatus::Changed);
        Ok(())
    }

    pub(crate) fn unset(&mut self, field: &str) -> Option<Vec<u8>> {
        let old = self.fields.remove(field)?;
        self.dirty.insert(field.to_owned());
        self.mark(SessionStatus::Changed);
        Some(old)
    }

    /// Moves a stored record out of the way: it will be deleted, and what is saved next goes
    /// under a new id.
    fn detach(&mut self) {
        if let Some(key) = self.key.take() {
            self.retire = Some(key);
        }
        self.id = None;
        self.dirty.clear();
    }

    fn ttl(&self, now_ms: u64) -> Duration {
        let ttl = self.remember.unwrap_or(self.config.idle_timeout);
        match (self.config.absolute_timeout, created_ms(&self.fields)) {
            (Some(absolute), Some(created)) => {
                let end =
                    created.saturating_add(u64::try_from(absolute.as_millis()).unwrap_or(u64::MAX));
                ttl.min(Duration::from_millis(end.saturating_sub(now_ms).max(1)))
            }
            _ => ttl,
        }
    }

    /// Whether the load left the idle timeout alone ([`touch_after`]) and its last move is
    /// that old (or unknown), so that this request must move it.
    ///
    /// [`touch_after`]: crate::RedisSessionBuilder::touch_after
    fn touch_due(&self, now_ms: u64) -> bool {
        let interval = self.config.touch_after;
        if interval.is_zero() {
            return false;
        }
        // A "remember me" lifetime can be shorter than the interval: a session used more
        // often than its lifetime must never expire, so move it at least twice per lifetime.
        let lifetime = self.remember.unwrap_or(self.config.idle_timeout);
        let interval = u64::try_from(interval.min(lifetime / 2).as_millis()).unwrap_or(u64::MAX);
        match self.fields.get(TOUCHED).and_then(|raw| parse_millis(raw)) {
            Some(touched) => now_ms.saturating_sub(touched) >= interval,
            None => true,
        }
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

    /// The flash messages stored by earlier requests (an unreadable list counts as none).
    fn stored_flash(&self) -> Vec<FlashMessage> {
        let Some(raw) = self.fields.get(FLASH) else {
            return Vec::new();
        };
        codec::decode(raw).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "dropping unreadable flash messages");
            Vec::new()
        })
    }

    /// Writes the flash changes of this request into the fields: read messages go, sent
    /// ones are appended. Nothing happens when no message was read or sent.
    fn settle_flash(&mut self) {
        let FlashState {
            taken, outgoing, ..
        } = std::mem::take(&mut self.flash);
        if !taken && outgoing.is_empty() {
            return;
        }
        let mut waiting = if taken {
            Vec::new()
        } else {
            self.stored_flash()
        };
        waiting.extend(outgoing);
        if waiting.is_empty() {
            self.unset(FLASH);
            return;
        }
        match codec::encode(&waiting) {
            Ok(raw) => {
                if let Err(e) = self.set(FLASH.to_owned(), raw, FLASH) {
                    tracing::error!(error = %e, "flash messages not saved");
                }
            }
            Err(e) => tracing::error!(error = %e, "flash messages not saved"),
        }
    }

    pub(crate) fn plan(&mut self) -> Plan {
        if self.status == SessionStatus::Degraded {
            return Plan::Keep { live: None };
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
                match self.fields.get(&name) {
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
        let retire = self.retire.take();
        if !self.has_data() {
            return match retire {
                Some(key) => Plan::Delete { key },
                None => Plan::Keep { live: None },
            };
        }
        if !self.fields.contains_key(CREATED) {
            self.fields
                .insert(CREATED.to_owned(), now.to_string().into_bytes());
        }
        if !self.config.touch_after.is_zero() {
            self.fields
                .insert(TOUCHED.to_owned(), now.to_string().into_bytes());
        }
        let id = self.id.get_or_insert_with(SessionId::generate).clone();
        Plan::Create {
            id,
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ttl: self.ttl(now),
            retire,
            remember: self.remember,
        }
    }
}

/// When the stored session was created, if its record says.
pub(crate) fn created_ms(fields: &Fields) -> Option<u64> {
    parse_millis(fields.get(CREATED)?)
}

fn parse_millis(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
