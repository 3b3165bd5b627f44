//! The embedded store: sessions in this process's memory.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    thread,
    time::{Duration, Instant},
};

use super::{Fields, Outcome, Write};
use crate::record::{self, CREATED};

/// Sessions kept in the memory of this process, shared by all actix workers.
///
/// For development, tests and single-process deployments: sessions are lost on restart and
/// are not shared between processes. It has the same semantics as the Redis store
/// (field-level updates, idle expiry, create-if-absent), so an application behaves alike on
/// both. Expiry is enforced on every read; a background thread also sweeps expired sessions
/// every [`gc_interval`](MemoryStore::with_gc_interval) so that abandoned ones do not pile up.
/// The thread ends when the last clone of the store is dropped.
///
/// It holds at most [`max_records`](MemoryStore::max_records) sessions (default 100,000): a
/// new one beyond that evicts the one that would expire first, so that a flood of
/// cookie-less requests to a page that stores a session cannot exhaust the process's memory.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_redis_session::{store::MemoryStore, Key, RedisSession};
///
/// let store = MemoryStore::with_gc_interval(Duration::from_secs(60)).max_records(10_000);
/// let sessions = RedisSession::builder_with_memory(store.clone(), Key::generate())
///     .build()
///     .unwrap();
/// assert_eq!(store.len(), 0);
/// # drop(sessions);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    records: Mutex<Records>,
    gc_interval: Duration,
    max_records: AtomicUsize,
}

/// The sessions, and their keys in the order they expire.
#[derive(Default)]
struct Records {
    map: HashMap<Arc<str>, Record>,
    by_expiry: BTreeSet<(Instant, Arc<str>)>,
}

struct Record {
    fields: Fields,
    expires: Instant,
}

impl Records {
    /// The live record under `key`; an expired one is removed.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Record> {
        let expired = self.map.get(key)?.expires <= now;
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn set_expiry(&mut self, key: &str, expires: Instant) {
        let Some((key, record)) = self.map.get_key_value(key) else {
            return;
        };
        let key = Arc::clone(key);
        let old = record.expires;
        self.by_expiry.remove(&(old, Arc::clone(&key)));
        self.by_expiry.insert((expires, Arc::clone(&key)));
        if let Some(record) = self.map.get_mut(&key) {
            record.expires = expires;
        }
    }

    fn insert(&mut self, key: &str, record: Record) {
        self.remove(key);
        let key: Arc<str> = Arc::from(key);
        self.by_expiry.insert((record.expires, Arc::clone(&key)));
        self.map.insert(key, record);
    }

    fn remove(&mut self, key: &str) -> Option<Record> {
        let (key, record) = self.map.remove_entry(key)?;
        self.by_expiry.remove(&(record.expires, key));
        Some(record)
    }

    /// Removes the expired records, then, while more than `max` are left, those that would
    /// expire first.
    fn trim(&mut self, now: Instant, max: usize) {
        while let Some((expires, key)) = self.by_expiry.first().cloned() {
            if expires > now && self.map.len() <= max {
                break;
            }
            self.remove(&key);
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.len())
            .finish()
    }
}

impl MemoryStore {
    /// Default interval of the background sweep: 4 minutes.
    pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(240);

    /// Shortest interval of the background sweep: 1 millisecond.
    pub const MIN_GC_INTERVAL: Duration = Duration::from_millis(1);

    /// Default of [`max_records`](MemoryStore::max_records): 100,000.
    pub const DEFAULT_MAX_RECORDS: usize = 100_000;

    /// An empty store that sweeps expired sessions every 4 minutes.
    pub fn new() -> MemoryStore {
        MemoryStore::with_gc_interval(Self::DEFAULT_GC_INTERVAL)
    }

    /// An empty store that sweeps expired sessions every `interval`, from
    /// [`MIN_GC_INTERVAL`](Self::MIN_GC_INTERVAL) to 400 days
    /// ([`MAX_LIFETIME`](crate::config::MAX_LIFETIME)); building the middleware over a store
    /// with an interval out of that range is a
    /// [`ConfigError::InvalidOption`](crate::ConfigError::InvalidOption).
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot start the sweeper thread.
    pub fn with_gc_interval(interval: Duration) -> MemoryStore {
        let inner = Arc::new(Inner {
            records: Mutex::default(),
            gc_interval: interval,
            max_records: AtomicUsize::new(Self::DEFAULT_MAX_RECORDS),
        });
        // Never a busy loop on the store's lock, even before the configuration is checked.
        let interval = interval.max(Self::MIN_GC_INTERVAL);
        let weak = Arc::downgrade(&inner);
        thread::Builder::new()
            .name("session-memory-gc".into())
            .spawn(move || sweep_until_dropped(&weak, interval))
            .expect("could not start the session sweeper thread");
        MemoryStore { inner }
    }

    /// The most sessions held at once (at least 1): creating one more evicts the session that
    /// would expire first (the one idle the longest, for sessions of one idle timeout).
    /// Default: [`DEFAULT_MAX_RECORDS`](Self::DEFAULT_MAX_RECORDS). Applies to every clone
    /// of this store.
    #[must_use]
    pub fn max_records(self, records: usize) -> MemoryStore {
        self.inner
            .max_records
            .store(records.max(1), Ordering::Relaxed);
        self
    }

    pub(crate) fn gc_interval(&self) -> Duration {
        self.inner.gc_interval
    }

    /// Number of records held, expired ones included until the next sweep or read.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// `true` when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live keys that start with `prefix` (the session administration's listing; the
    /// store is bounded by [`max_records`](Self::max_records), and so is this).
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let now = Instant::now();
        let records = self.inner.lock();
        records
            .map
            .iter()
            .filter(|(key, record)| key.starts_with(prefix) && record.expires > now)
            .map(|(key, _)| key.to_string())
            .collect()
    }

    /// The record under `key` and how long it has left, without moving its expiry.
    pub(crate) fn peek(&self, key: &str) -> Option<(Fields, Duration)> {
        let now = Instant::now();
        let mut records = self.inner.lock();
        let record = records.live(key, now)?;
        Some((record.fields.clone(), record.expires - now))
    }

    pub(crate) fn load_now(&self, key: &str, ttl: Option<Duration>) -> Option<Fields> {
        let now = Instant::now();
        let mut records = self.inner.lock();
        let fields = records.live(key, now)?.fields.clone();
        if let Some(ttl) = ttl {
            records.set_expiry(key, deadline(now, ttl));
        }
        Some(fields)
    }

    pub(crate) fn write_now(&self, write: &Write) -> Outcome {
        let now = Instant::now();
        let mut records = self.inner.lock();
        match write {
            Write::Update { key, set, del, ttl } => {
                // An update never brings back a record that is gone (the Redis store's may leave
                // a remnant without a creation marker for a moment, which the middleware
                // deletes; it is never adopted).
                let Some(record) = records.live(key, now) else {
                    return Outcome::Gone;
                };
                record.fields.extend(set.iter().cloned());
                for name in del {
                    record.fields.remove(name);
                }
                records.set_expiry(key, deadline(now, *ttl));
                Outcome::Applied
            }
            Write::Create { key, fields, ttl } => {
                if let Some(record) = records.live(key, now) {
                    // Taken, unless by this very create (same creation marker).
                    let marker = fields.iter().find(|(name, _)| name == CREATED);
                    let ours = marker.is_some_and(|(_, m)| record.fields.get(CREATED) == Some(m));
                    return if ours {
                        Outcome::Applied
                    } else {
                        Outcome::Refused
                    };
                }
                let max = self.inner.max_records.load(Ordering::Relaxed);
                records.trim(now, max.saturating_sub(1));
                let record = Record {
                    fields: fields.iter().cloned().collect(),
                    expires: deadline(now, *ttl),
                };
                records.insert(key, record);
                Outcome::Applied
            }
            Write::Empty { key, del, ttl } => {
                let Some(record) = records.live(key, now) else {
                    return Outcome::Gone;
                };
                for name in del {
                    record.fields.remove(name);
                }
                if record.fields.keys().any(|k| record::is_data(k)) {
                    records.set_expiry(key, deadline(now, *ttl));
                    Outcome::Refused
                } else {
                    records.remove(key);
                    Outcome::Applied
                }
            }
            Write::Delete { key } => match records.remove(key) {
                Some(record) if record.expires > now => Outcome::Applied,
                _ => Outcome::Gone,
            },
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Records> {
        // Every mutation keeps the map and the expiry index in step before it can panic
        // (allocation failure aside), so a poisoned lock still guards consistent records.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `now + ttl`, capped at 100 years: the configuration bounds every TTL, but an `Instant`
/// overflow would be a panic, so the store does not rely on that alone.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn sweep_until_dropped(store: &Weak<Inner>, interval: Duration) {
    loop {
        thread::sleep(interval);
        let Some(inner) = store.upgrade() else { return };
        let max = inner.max_records.load(Ordering::Relaxed);
        inner.lock().trim(Instant::now(), max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(store: &MemoryStore, key: &str, ttl: Duration) -> bool {
        Outcome::Applied
            == store.write_now(&Write::Create {
                key: key.into(),
                fields: vec![("m:c".into(), record::creation_marker(1))],
                ttl,
            })
    }

    #[test]
    fn create_only_takes_a_free_key() {
        let store = MemoryStore::new();
        assert!(create(&store, "k", Duration::from_secs(60)));
        assert!(!create(&store, "k", Duration::from_secs(60)));
    }

    #[test]
    fn update_never_resurrects_a_missing_record() {
        let store = MemoryStore::new();
        store.write_now(&Write::Update {
            key: "gone".into(),
            set: vec![("d:x".into(), b"\x011".to_vec())],
            del: vec![],
            ttl: Duration::from_secs(60),
        });
        assert!(store.is_empty());
    }

    #[test]
    fn beyond_the_record_cap_the_session_that_expires_first_goes() {
        let store = MemoryStore::new().max_records(3);
        assert!(create(&store, "soon", Duration::from_secs(10)));
        assert!(create(&store, "later", Duration::from_secs(60)));
        assert!(create(&store, "latest", Duration::from_secs(90)));
        // Refreshed: now it expires last.
        assert!(store
            .load_now("soon", Some(Duration::from_secs(120)))
            .is_some());
        assert!(create(&store, "new", Duration::from_secs(30)));
        assert_eq!(store.len(), 3);
        assert!(
            store.load_now("later", None).is_none(),
            "expired first, evicted"
        );
        for key in ["soon", "latest", "new"] {
            assert!(store.load_now(key, None).is_some(), "{key}");
        }
        // Many more: never more than the cap.
        for i in 0..100 {
            assert!(create(&store, &format!("k{i}"), Duration::from_secs(5)));
        }
        assert_eq!(store.len(), 3);
        // The expiry index follows every change: a deleted record is not evicted twice.
        store.write_now(&Write::Delete { key: "k99".into() });
        assert!(create(&store, "last", Duration::from_secs(1)));
        assert_eq!(store.len(), 3);
        let inner = store.inner.lock();
        assert_eq!(inner.by_expiry.len(), inner.map.len());
    }

    #[test]
    fn expired_records_are_not_read_and_are_swept() {
        let store = MemoryStore::with_gc_interval(Duration::from_millis(20));
        assert!(create(&store, "a", Duration::from_millis(1)));
        assert!(create(&store, "b", Duration::from_millis(1)));
        thread::sleep(Duration::from_millis(5));
        assert!(store.load_now("a", Some(Duration::from_secs(1))).is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(store.is_empty(), "the sweeper should have removed b");
    }
}
