//! The embedded store: sessions in this process's memory.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    thread,
    time::{Duration, Instant},
};

use super::{Fields, Write};
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
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_redis_session::{store::MemoryStore, Key, RedisSession};
///
/// let store = MemoryStore::with_gc_interval(Duration::from_secs(60));
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
    records: Mutex<HashMap<String, Record>>,
    gc_interval: Duration,
}

struct Record {
    fields: Fields,
    expires: Instant,
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
            records: Mutex::new(HashMap::new()),
            gc_interval: interval,
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

    pub(crate) fn gc_interval(&self) -> Duration {
        self.inner.gc_interval
    }

    /// Number of records held, expired ones included until the next sweep or read.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// `true` when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn load(&self, key: &str, ttl: Option<Duration>) -> Option<Fields> {
        let now = Instant::now();
        let mut records = self.inner.lock();
        let record = records.get_mut(key)?;
        if record.expires <= now {
            records.remove(key);
            return None;
        }
        if let Some(ttl) = ttl {
            record.expires = deadline(now, ttl);
        }
        Some(record.fields.clone())
    }

    pub(crate) fn write(&self, write: &Write) -> bool {
        let now = Instant::now();
        let mut records = self.inner.lock();
        match write {
            Write::Update { key, set, del, ttl } => {
                // Like the Redis store, an update never brings back a record that is gone.
                let Some(record) = records.get_mut(key).filter(|r| r.expires > now) else {
                    return false;
                };
                record.fields.extend(set.iter().cloned());
                for name in del {
                    record.fields.remove(name);
                }
                record.expires = deadline(now, *ttl);
                true
            }
            Write::Create { key, fields, ttl } => {
                if let Some(record) = records.get(key).filter(|r| r.expires > now) {
                    // Taken, unless by this very create (same creation marker).
                    let marker = fields.iter().find(|(name, _)| name == CREATED);
                    return marker.is_some_and(|(_, m)| record.fields.get(CREATED) == Some(m));
                }
                records.insert(
                    key.clone(),
                    Record {
                        fields: fields.iter().cloned().collect(),
                        expires: deadline(now, *ttl),
                    },
                );
                true
            }
            Write::Empty { key, del, ttl } => {
                let Some(record) = records.get_mut(key).filter(|r| r.expires > now) else {
                    records.remove(key);
                    return true;
                };
                for name in del {
                    record.fields.remove(name);
                }
                if record.fields.keys().any(|k| record::is_data(k)) {
                    record.expires = deadline(now, *ttl);
                    false
                } else {
                    records.remove(key);
                    true
                }
            }
            Write::Delete { key } => records
                .remove(key)
                .is_some_and(|record| record.expires > now),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // A panic while holding the lock cannot leave a record half-written: every
        // mutation is a single map operation.
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
        let now = Instant::now();
        inner.lock().retain(|_, r| r.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(store: &MemoryStore, key: &str, ttl: Duration) -> bool {
        store.write(&Write::Create {
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
        store.write(&Write::Update {
            key: "gone".into(),
            set: vec![("d:x".into(), b"\x011".to_vec())],
            del: vec![],
            ttl: Duration::from_secs(60),
        });
        assert!(store.is_empty());
    }

    #[test]
    fn expired_records_are_not_read_and_are_swept() {
        let store = MemoryStore::with_gc_interval(Duration::from_millis(20));
        assert!(create(&store, "a", Duration::from_millis(1)));
        assert!(create(&store, "b", Duration::from_millis(1)));
        thread::sleep(Duration::from_millis(5));
        assert!(store.load("a", Some(Duration::from_secs(1))).is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(store.is_empty(), "the sweeper should have removed b");
    }
}
