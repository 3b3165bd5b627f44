//! The local session cache, kept coherent by Redis ([`LocalCache`]).
//!
//! Loaded records are kept in this process's memory (a bounded map of our own,
//! [`cache_map`](super::cache_map), which says why not moka's), so that a request whose
//! session is here costs no round trip. What keeps the copies right is Redis's
//! server-assisted client-side caching in broadcast mode: one connection per process (the
//! *tracking* connection, RESP3) runs `CLIENT TRACKING ON BCAST PREFIX <key_prefix>`, and
//! Redis pushes on it the name of every key under the prefix that anyone changes (`HSET`,
//! `HDEL`, `PEXPIRE`, `DEL`, an expiry, `FLUSHDB`), whoever the writer: another instance of
//! the application, an administrator, another service. Each push evicts that key here.
//!
//! The rules that make it coherent:
//!
//! - **A racing reply is never cached.** Every key falls in one of [`BUCKETS`] buckets with
//!   a counter that each invalidation (and each write of this process) moves. A load takes a
//!   ticket (the counters as they are) before it asks Redis, and its reply enters the cache
//!   only if nothing moved its bucket meanwhile. Both the check and the eviction run under
//!   the map's lock for that key, so an eviction never falls between a check and its
//!   insert.
//! - **No tracking, no cache.** Until the tracking connection has said `OK` to `CLIENT
//!   TRACKING`, and from the moment it drops (the driver's disconnection push, a failed
//!   keep-alive `PING`), the cache is flushed and bypassed: loads go to Redis and nothing is
//!   kept. The `epoch` counter (odd: tracking on) stamps tickets and entries, so that a
//!   reply that was in flight across a reconnection is not kept either.
//! - **This process's own writes** update the entry in place (the fields the write set and
//!   removed, applied to what was loaded) if nothing else touched its bucket while the write
//!   was out. Redis echoes them back as invalidations like anyone else's: it cannot say who
//!   wrote (a push is a key name, and one push may stand for several writes of one event-loop
//!   turn). So an entry this process wrote is not just dropped at the echo: it is read again
//!   on the tracking connection ([`Refresh`]), and the next request finds it here. An entry
//!   that was only loaded is dropped at the next invalidation.
//! - **Expiry.** An entry lives no longer than the record's own TTL as Redis reported it
//!   (`PTTL`, read with every miss) or as this process's write set it, and no longer than
//!   [`LocalCache::time_to_live`].

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
        Arc, Weak,
    },
    time::{Duration, Instant},
};

use redis::{PushInfo, PushKind, Value};

use super::{
    cache_map::{fnv, Cached, Done, Map, Op},
    commands, Fields, Outcome, Write,
};
use crate::{error::StoreError, telemetry};

/// Buckets of the race check. More buckets, fewer false alarms (a load not cached because
/// another key of its bucket changed meanwhile), at 12 bytes each.
const BUCKETS: usize = 4096;

/// How often the tracking connection is asked `PING` when nothing else happens on it: a
/// connection that died without a word (a network partition) is noticed within this plus
/// the command timeout, and the cache is bypassed from then on.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// The first wait before trying to bring tracking back; it doubles up to
/// [`RECONNECT_AT_MOST_EVERY`].
const FIRST_RECONNECT: Duration = Duration::from_millis(50);

/// The longest wait between two attempts to bring tracking back.
const RECONNECT_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// Keys read again per round trip by the refresher.
const REFRESH_BATCH: usize = 64;

/// Keys waiting to be read again, at most; more are dropped (their entries are gone
/// already: the next load of each reads it).
const REFRESH_QUEUE: usize = 4096;

/// The local session cache: most requests find their session in this process's memory and
/// cost no Redis round trip at all, and Redis tells every process when a session changes
/// anywhere, so no process serves a copy that Redis has said is out of date.
///
/// Off by default; turn it on with
/// [`RedisSessionBuilder::local_cache`](crate::RedisSessionBuilder::local_cache). It needs
/// Redis 6 or later (`CLIENT TRACKING`, RESP3), one Redis or Redis Sentinel (not a cluster,
/// yet), and [`touch_after`](crate::RedisSessionBuilder::touch_after): every TTL refresh is a
/// write that evicts the session from every process's cache, so the refresh must be rare.
/// Left at zero, `touch_after` is set to 60 seconds (or half the idle timeout, if that is
/// shorter), and the build says so in the log. See the README's "Local cache" for what it
/// guarantees across processes and how to size it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_redis_session::{store::LocalCache, Key, RedisSession};
///
/// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
///     .touch_after(Duration::from_secs(60))
///     .local_cache(LocalCache::new().max_bytes(64 << 20).max_entries(100_000))
///     .build()?;
/// # drop(sessions);
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCache {
    pub(crate) max_bytes: u64,
    pub(crate) max_entries: u64,
    pub(crate) time_to_live: Duration,
}

impl Default for LocalCache {
    fn default() -> Self {
        LocalCache::new()
    }
}

impl LocalCache {
    /// 32 MiB, 100,000 sessions, 5 minutes.
    pub fn new() -> LocalCache {
        LocalCache {
            max_bytes: 32 << 20,
            max_entries: 100_000,
            time_to_live: Duration::from_secs(300),
        }
    }

    /// The most memory the cached sessions take in this process, as counted: their field
    /// names and values, 56 bytes per field, two copies of the storage key and about 200
    /// bytes of bookkeeping per session (about 350 bytes with a 70-byte key). When it is
    /// full, sessions not read since the clock hand last passed go first. The map has up to
    /// 64 shards (fewer for small bounds: at least 256 KiB each where possible, and no more
    /// than `max_entries`), each with its share of both bounds; a session larger than a
    /// shard's share (512 KiB at the defaults) is not cached. Default: 32 MiB. At least
    /// 64 KiB.
    pub fn max_bytes(mut self, bytes: u64) -> LocalCache {
        self.max_bytes = bytes;
        self
    }

    /// The most sessions kept in this process. Default: 100,000. At least 1.
    pub fn max_entries(mut self, entries: u64) -> LocalCache {
        self.max_entries = entries;
        self
    }

    /// How long a session stays cached at most, however often it is used, before it is
    /// read from Redis again: a bound on what a lost invalidation could cost, should one
    /// ever be lost. Default: 5 minutes. From 1 second to 1 day.
    pub fn time_to_live(mut self, ttl: Duration) -> LocalCache {
        self.time_to_live = ttl;
        self
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.max_bytes < 64 << 10 {
            return Err("max_bytes must be at least 64 KiB");
        }
        if self.max_entries == 0 {
            return Err("max_entries must be at least 1");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.time_to_live) {
            return Err("time_to_live must be from 1 second to 1 day");
        }
        Ok(())
    }
}

/// What the local cache has done since the middleware was built
/// ([`RedisSession::cache_stats`](crate::RedisSession::cache_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Loads served from the cache.
    pub hits: u64,
    /// Loads that went to Redis while tracking was on (the reply is cached unless an
    /// invalidation raced it).
    pub misses: u64,
    /// Loads that went to Redis while tracking was off (nothing cached).
    pub bypassed: u64,
    /// Sessions dropped because Redis said they changed.
    pub invalidations: u64,
    /// Sessions dropped to make room, or at their time to live.
    pub evictions: u64,
    /// Sessions read again after Redis echoed this process's own write.
    pub refreshes: u64,
    /// Times the whole cache was dropped: the tracking connection went away, or the
    /// database was flushed.
    pub flushes: u64,
    /// Sessions in the cache now (those past their deadline included until they are met).
    pub entries: u64,
    /// Their size in bytes, as [`LocalCache::max_bytes`] counts it.
    pub bytes: u64,
    /// Whether tracking is on now, so that the cache is used.
    pub tracking: bool,
}

/// A cached record.
#[derive(Debug)]
struct Record {
    fields: Fields,
    /// When the record expires in Redis (or the cache's own time to live ends), whichever
    /// comes first.
    deadline: Instant,
    /// The tracking epoch it was read in: an entry of another epoch is never served.
    epoch: u64,
    /// Written by this process: read again when Redis echoes the write.
    ours: bool,
    /// When its fields were last read from Redis whole (or written whole): updates in place
    /// never take it past this plus the cache's time to live.
    read_at: Instant,
}

/// What the map holds: a shared record (a hit clones its fields, not the map's copy).
#[derive(Clone, Debug)]
struct Entry(Arc<Record>);

impl Entry {
    fn new(fields: Fields, deadline: Instant, epoch: u64, ours: bool, read_at: Instant) -> Entry {
        Entry(Arc::new(Record {
            fields,
            deadline,
            epoch,
            ours,
            read_at,
        }))
    }
}

impl std::ops::Deref for Entry {
    type Target = Record;

    fn deref(&self) -> &Record {
        &self.0
    }
}

impl Cached for Entry {
    fn weight(&self) -> usize {
        self.fields
            .iter()
            .map(|(name, value)| FIELD_OVERHEAD + name.len() + value.len())
            .sum::<usize>()
            + RECORD_OVERHEAD
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// The counters at the moment a load asked Redis.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    seq: u64,
    /// When it was taken: before the load was sent, so that the record's time to live is
    /// counted from no later than Redis counted it.
    at: Instant,
}

/// The cache as the store layer uses it: shared by every worker of one middleware.
#[derive(Clone)]
pub(crate) struct Cache {
    core: Arc<Core>,
}

struct Core {
    entries: Map<Entry>,
    /// Odd while tracking is on.
    epoch: AtomicU64,
    /// Moves with every invalidation and every write of this process.
    seq: AtomicU64,
    /// The `seq` of the last change in each bucket.
    changed: Box<[AtomicU64]>,
    /// Writes of this process out now, per bucket.
    writing: Box<[AtomicU32]>,
    time_to_live: Duration,
    /// `key_prefix` + the infix of users' indexes, whose keys are never cached.
    index_prefix: String,
    /// Keys whose own write Redis echoed, for the refresher.
    refresh: tokio::sync::mpsc::Sender<String>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
    invalidations: AtomicU64,
    refreshes: AtomicU64,
    flushes: AtomicU64,
}

impl Cache {
    /// A cache kept coherent through a tracking connection to the server `source` names,
    /// for the keys under `prefix`; `timeouts` are (connect, command).
    pub(crate) fn start(
        settings: &LocalCache,
        source: Source,
        prefix: &str,
        timeouts: (Duration, Duration),
    ) -> Result<Cache, std::io::Error> {
        let entries = Map::new(settings.max_bytes, settings.max_entries);
        let (refresh, refreshes) = tokio::sync::mpsc::channel(REFRESH_QUEUE);
        let core = Arc::new(Core {
            entries,
            epoch: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            changed: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            writing: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            time_to_live: settings.time_to_live,
            index_prefix: format!("{prefix}{}", crate::record::INDEX_INFIX),
            refresh,
            stats: Counters::default(),
        });
        source.check()?;
        let weak = Arc::downgrade(&core);
        let prefix = prefix.to_owned();
        std::thread::Builder::new()
            .name("session-cache-tracking".into())
            .spawn(move || track(source, prefix, weak, refreshes, timeouts))?;
        telemetry::cache_tracking(false);
        Ok(Cache { core })
    }

    /// The cached record under `key`, if it is here, valid, and tracking is on.
    pub(crate) fn get(&self, key: &str) -> Option<Fields> {
        let core = &self.core;
        let epoch = core.epoch.load(SeqCst);
        if !on(epoch) {
            return None;
        }
        // The map serves nothing past its deadline.
        let entry = core.entries.get(key)?;
        if entry.epoch != epoch {
            return None;
        }
        core.stats.hits.fetch_add(1, SeqCst);
        telemetry::cache_event("hit");
        Some(entry.fields.clone())
    }

    /// A ticket for a load about to ask Redis; `None` (and counted as bypassed) while
    /// tracking is off.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        let core = &self.core;
        let epoch = core.epoch.load(SeqCst);
        if !on(epoch) {
            core.stats.bypassed.fetch_add(1, SeqCst);
            telemetry::cache_event("bypass");
            return None;
        }
        core.stats.misses.fetch_add(1, SeqCst);
        telemetry::cache_event("miss");
        Some(core.ticket(epoch))
    }

    /// Keeps what a load with `ticket` read: the record and its time to live in Redis.
    pub(crate) fn fill(&self, key: &str, ticket: Ticket, fields: &Fields, pttl: Duration) {
        self.core.fill(key, ticket, fields, ticket.at + pttl);
    }

    /// Before a write of this process goes out. A user's index is no session: its writes
    /// are left alone (and it is never cached).
    pub(crate) fn begin(&self, write: &Write) -> Option<Writing> {
        let key = write.key().to_owned();
        if key.starts_with(self.core.index_prefix.as_str()) {
            return None;
        }
        let bucket = bucket(&key);
        let core = &self.core;
        // In this order: a load that checks in between sees the write out.
        core.writing[bucket].fetch_add(1, SeqCst);
        let start = core.change(bucket);
        Some(Writing {
            core: Arc::clone(core),
            key,
            bucket,
            start,
            epoch: core.epoch.load(SeqCst),
            sent: Instant::now(),
            done: false,
        })
    }

    /// A write sent without waiting for its answer (a touch): the entry goes, since what
    /// Redis holds after it is not known here; the next load reads it again. (A load that
    /// reads before the touch lands keeps the record as it was, until the touch's echo
    /// evicts it: its only effect is that the touch looks due once more.)
    pub(crate) fn forget(&self, write: &Write) {
        self.forget_key(write.key());
    }

    /// Drops the entry under `key` (written or deleted elsewhere in this process), and
    /// keeps loads in flight from bringing it back.
    pub(crate) fn forget_key(&self, key: &str) {
        let core = &self.core;
        core.change(bucket(key));
        core.remove(key);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let core = &self.core;
        let s = &core.stats;
        CacheStats {
            hits: s.hits.load(SeqCst),
            misses: s.misses.load(SeqCst),
            bypassed: s.bypassed.load(SeqCst),
            invalidations: s.invalidations.load(SeqCst),
            evictions: core.entries.evictions(),
            refreshes: s.refreshes.load(SeqCst),
            flushes: s.flushes.load(SeqCst),
            entries: core.entries.len(),
            bytes: core.entries.bytes(),
            tracking: on(core.epoch.load(SeqCst)),
        }
    }
}

/// Bytes of a record besides its fields (the `Arc`, the map, the deadline), and per field
/// (a `String` and a `Vec<u8>` in a hash map).
const RECORD_OVERHEAD: usize = 96;
const FIELD_OVERHEAD: usize = 56;

/// A write of this process, out now. [`Writing::finish`] with its answer; dropped without
/// (the request was cancelled), the entry goes.
pub(crate) struct Writing {
    core: Arc<Core>,
    key: String,
    bucket: usize,
    /// The bucket's counter as this write moved it.
    start: u64,
    epoch: u64,
    sent: Instant,
    done: bool,
}

impl Writing {
    /// Brings the entry in line with what the write did.
    pub(crate) fn finish(mut self, write: &Write, outcome: &Result<Outcome, StoreError>) {
        let core = Arc::clone(&self.core);
        let bucket = self.bucket;
        let epoch = self.epoch;
        // The TTL the write gave the record, counted from before Redis ran it, and never
        // past the cache's time to live from the last whole read.
        let sent = self.sent;
        let deadline =
            |ttl: Duration, read_at: Instant| (sent + ttl).min(read_at + core.time_to_live);
        let now = Instant::now();
        let applied = matches!(
            (write, outcome),
            (
                Write::Create { .. } | Write::Update { .. },
                Ok(Outcome::Applied)
            )
        );
        // Loads whose ticket is older than this may have read before the write: not kept.
        // Moved from the value this write gave it only if nothing else changed the bucket
        // while the write was out (no invalidation, no other write of this process).
        let end = core.seq.fetch_add(1, SeqCst) + 1;
        let alone = core.changed[bucket]
            .compare_exchange(self.start, end, SeqCst, SeqCst)
            .is_ok();
        if !alone {
            core.changed[bucket].fetch_max(end, SeqCst);
        }
        // And tracking stayed on: what this process knows of the record after its write is
        // what Redis holds. Checked again under the key lock: an invalidation that came
        // since is carried out after this (and drops what this puts).
        let quiet = || {
            alone
                && core.changed[bucket].load(SeqCst) == end
                && core.epoch.load(SeqCst) == epoch
                && on(epoch)
        };
        let mut reread = false;
        core.entries.compute(&self.key, |current| match write {
            _ if !applied => Op::Remove,
            // Something else changed the bucket while the write was out: an invalidation
            // (often the echo of this very write, which can arrive before its answer),
            // or another write of this process. What Redis holds now is read again.
            _ if !quiet() => {
                reread = true;
                Op::Remove
            }
            // A creation writes the whole record: as good as a read.
            Write::Create { fields, ttl, .. } => Op::Put(Entry::new(
                fields.iter().cloned().collect(),
                deadline(*ttl, sent),
                epoch,
                true,
                sent,
            )),
            Write::Update { set, del, ttl, .. } => match current {
                Some(current) if current.epoch == epoch && current.deadline > now => {
                    let mut fields = current.fields.clone();
                    fields.extend(set.iter().cloned());
                    for name in del {
                        fields.remove(name);
                    }
                    let read_at = current.read_at;
                    Op::Put(Entry::new(
                        fields,
                        deadline(*ttl, read_at),
                        epoch,
                        true,
                        read_at,
                    ))
                }
                // Not loaded here (or of another epoch, or past its time): nothing to update.
                _ => Op::Remove,
            },
            _ => Op::Remove,
        });
        self.done = true;
        core.writing[bucket].fetch_sub(1, SeqCst);
        // After the write counts as done: the refresher's load must be kept.
        if reread && on(epoch) {
            // Full: not read again (its entry is gone already; the next load reads it).
            let _ = core.refresh.try_send(self.key.clone());
        }
    }
}

impl Drop for Writing {
    /// A write that never finished (its request was cancelled): its effect is unknown, so
    /// the entry goes, and loads that asked while it was out are not kept.
    fn drop(&mut self) {
        if !self.done {
            self.core.change(self.bucket);
            self.core.remove(&self.key);
            self.core.writing[self.bucket].fetch_sub(1, SeqCst);
        }
    }
}

impl Core {
    fn ticket(&self, epoch: u64) -> Ticket {
        Ticket {
            epoch,
            seq: self.seq.load(SeqCst),
            at: Instant::now(),
        }
    }

    /// Moves the counter of `bucket`; the new value.
    fn change(&self, bucket: usize) -> u64 {
        let seq = self.seq.fetch_add(1, SeqCst) + 1;
        self.changed[bucket].fetch_max(seq, SeqCst);
        seq
    }

    /// Keeps a record read with `ticket` (by a load, or the refresher) unless something
    /// changed its bucket since, or a write of this process is out on it; whether it was
    /// kept.
    fn fill(&self, key: &str, ticket: Ticket, fields: &Fields, deadline: Instant) -> bool {
        let bucket = bucket(key);
        let deadline = deadline.min(ticket.at + self.time_to_live);
        let done = self.entries.compute(key, |_| {
            let quiet = self.epoch.load(SeqCst) == ticket.epoch
                && self.changed[bucket].load(SeqCst) <= ticket.seq
                && self.writing[bucket].load(SeqCst) == 0;
            if quiet {
                Op::Put(Entry::new(
                    fields.clone(),
                    deadline,
                    ticket.epoch,
                    false,
                    ticket.at,
                ))
            } else {
                Op::Nop
            }
        });
        matches!(done, Done::Put)
    }

    /// Removes the entry under the key lock (after any check-and-insert in progress); the
    /// entry removed, if any.
    fn remove(&self, key: &str) -> Option<Entry> {
        match self.entries.compute(key, |current| match current {
            Some(_) => Op::Remove,
            None => Op::Nop,
        }) {
            Done::Removed(entry) => Some(entry),
            _ => None,
        }
    }

    /// Redis said `key` changed.
    fn invalidate(&self, key: &str) {
        self.change(bucket(key));
        if let Some(entry) = self.remove(key) {
            self.stats.invalidations.fetch_add(1, SeqCst);
            telemetry::cache_event("invalidation");
            if entry.ours {
                let _ = self.refresh.try_send(key.to_owned());
            }
        }
    }

    /// Tracking is on (again): the cache may be used.
    fn up(&self) {
        if !on(self.epoch.load(SeqCst)) {
            self.epoch.fetch_add(1, SeqCst);
            telemetry::cache_tracking(true);
        }
    }

    /// Tracking is off: everything goes, and the cache is bypassed until [`Core::up`].
    fn down(&self) {
        if on(self.epoch.load(SeqCst)) {
            self.epoch.fetch_add(1, SeqCst);
            self.flush();
            telemetry::cache_tracking(false);
        }
    }

    /// Everything goes (a new epoch, so that loads in flight are not kept either); tracking
    /// stays as it is.
    fn flush(&self) {
        if on(self.epoch.load(SeqCst)) {
            // Odd to odd: still on, but older tickets and entries are void.
            self.epoch.fetch_add(2, SeqCst);
        }
        self.entries.clear();
        self.stats.flushes.fetch_add(1, SeqCst);
        telemetry::cache_event("flush");
    }

    /// An invalidation push: the keys that changed, or nil for a flushed database.
    fn pushed(&self, data: &[Value]) {
        match data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    match key {
                        Value::BulkString(key) => {
                            // Not UTF-8: not a key of ours (the prefix is a `String`, the
                            // rest hex).
                            if let Ok(key) = std::str::from_utf8(key) {
                                self.invalidate(key);
                            }
                        }
                        _ => self.flush(),
                    }
                }
            }
            // `FLUSHDB`/`FLUSHALL`, or a push we do not know: everything goes.
            _ => self.flush(),
        }
    }
}

/// Whether tracking was on in `epoch`.
fn on(epoch: u64) -> bool {
    !epoch.is_multiple_of(2)
}

/// Which bucket `key` is in.
fn bucket(key: &str) -> usize {
    (fnv(key.as_bytes()) as usize) % BUCKETS
}

/// Where the tracking connection goes: the store's server, or the master that Redis
/// Sentinel names, asked again at every connect (a failover kills the old master's client
/// connections, so tracking starts over on the new one).
pub(crate) enum Source {
    Client(redis::Client),
    #[cfg(feature = "sentinel")]
    Sentinel(redis::sentinel::SentinelClient),
}

impl Source {
    /// Fails now, not in the thread, for a client that RESP3 cannot use.
    fn check(&self) -> Result<(), std::io::Error> {
        match self {
            Source::Client(client) => tracking_client(client).map(drop),
            #[cfg(feature = "sentinel")]
            Source::Sentinel(_) => Ok(()),
        }
    }

    /// Whether the server must be checked to still be the master (`ROLE`): under Sentinel
    /// a demoted master keeps its clients' connections.
    fn follows_master(&self) -> bool {
        match self {
            Source::Client(_) => false,
            #[cfg(feature = "sentinel")]
            Source::Sentinel(_) => true,
        }
    }

    /// The server to connect to now, in RESP3.
    async fn client(&mut self) -> Result<redis::Client, redis::RedisError> {
        let client = match self {
            Source::Client(client) => client.clone(),
            #[cfg(feature = "sentinel")]
            Source::Sentinel(sentinel) => sentinel.async_get_client().await?,
        };
        tracking_client(&client).map_err(redis::RedisError::from)
    }
}

/// The client for the tracking connection: the store's server and credentials, in RESP3
/// (invalidations arrive as pushes on the connection that asked for them).
fn tracking_client(client: &redis::Client) -> Result<redis::Client, std::io::Error> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings)).map_err(std::io::Error::other)
}

/// The tracking thread: connects, turns tracking on, keeps the connection alive, reads
/// echoed keys again; on any failure flushes the cache and starts over; ends when the
/// cache is gone.
fn track(
    mut source: Source,
    prefix: String,
    core: Weak<Core>,
    mut refreshes: tokio::sync::mpsc::Receiver<String>,
    (connect_timeout, command_timeout): (Duration, Duration),
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "session cache: no runtime for the tracking connection; the cache stays off");
            return;
        }
    };
    runtime.block_on(async move {
        let mut wait = FIRST_RECONNECT;
        // Told once per stretch without tracking, not at every attempt.
        let mut told = false;
        loop {
            if gone(&core) {
                return;
            }
            let mut was_on = false;
            let result = tracked(
                &mut source,
                &prefix,
                &core,
                &mut refreshes,
                (connect_timeout, command_timeout),
                &mut was_on,
            )
            .await;
            let Err(e) = result else { return };
            let Some(core) = core.upgrade() else { return };
            core.down();
            if was_on {
                tracing::warn!(error = %e, "session cache: tracking connection lost; the cache is off until it is back");
                told = true;
                wait = FIRST_RECONNECT;
            } else if !told {
                tracing::warn!(
                    error = %e,
                    "session cache: could not turn tracking on (it needs Redis 6 or later, and \
                     +client|tracking +pttl for an ACL user); the cache is off, every load goes to \
                     Redis, and it keeps trying"
                );
                told = true;
            } else {
                tracing::debug!(error = %e, "session cache: could not turn tracking on");
            }
            drop(core);
            // Refreshes asked for while tracking was off are moot: the cache was flushed.
            while refreshes.try_recv().is_ok() {}
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECONNECT_AT_MOST_EVERY);
        }
    });
}

/// Whether the cache is gone (every copy of the middleware dropped).
fn gone(core: &Weak<Core>) -> bool {
    core.strong_count() == 0
}

/// One tracking connection, while it lasts: `Ok` when the cache is gone, `Err` when the
/// connection failed; `was_on` says whether tracking got turned on before.
async fn tracked(
    source: &mut Source,
    prefix: &str,
    core: &Weak<Core>,
    refreshes: &mut tokio::sync::mpsc::Receiver<String>,
    (connect_timeout, command_timeout): (Duration, Duration),
    was_on: &mut bool,
) -> Result<(), redis::RedisError> {
    let dropped = Arc::new(tokio::sync::Notify::new());
    let pushes = {
        let core = core.clone();
        let dropped = Arc::clone(&dropped);
        // Runs in the connection's driver as each push is read: an invalidation takes
        // effect before any reply read after it is handed out.
        move |push: PushInfo| -> Result<(), redis::RedisError> {
            let Some(core) = core.upgrade() else {
                return Ok(());
            };
            match push.kind {
                PushKind::Invalidate => core.pushed(&push.data),
                // Only this connection's loop hears it (`track` then turns the cache off):
                // a late notice from an older connection must not turn off a newer one.
                PushKind::Disconnection => dropped.notify_one(),
                _ => {}
            }
            Ok(())
        }
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(command_timeout))
        .set_push_sender(pushes);
    let client = source.client().await?;
    // Under Sentinel: the master it named, to compare with what it names later.
    let node = client.get_connection_info().addr().to_string();
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut on = redis::cmd("CLIENT");
    on.arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(prefix);
    on.query_async::<()>(&mut connection).await?;
    // Every miss reads the record's TTL: an ACL user without PTTL would fail every load
    // that the cache does not answer, so without it tracking stays off.
    redis::cmd("PTTL")
        .arg(prefix)
        .query_async::<i64>(&mut connection)
        .await?;
    let follows_master = source.follows_master();
    if follows_master {
        still_master(&mut connection).await?;
    }
    match core.upgrade() {
        Some(core) => core.up(),
        None => return Ok(()),
    }
    *was_on = true;
    tracing::info!("session cache: tracking on");
    // One timer for the whole connection, so that refreshes cannot put the PING off.
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        tokio::select! {
            () = dropped.notified() => {
                return Err(redis::RedisError::from((redis::ErrorKind::Io, "tracking connection dropped")));
            }
            key = refreshes.recv() => {
                let Some(key) = key else { return Ok(()) };
                let mut keys = vec![key];
                while keys.len() < REFRESH_BATCH {
                    match refreshes.try_recv() {
                        Ok(key) => keys.push(key),
                        Err(_) => break,
                    }
                }
                let Some(core) = core.upgrade() else { return Ok(()) };
                refresh(&core, &mut connection, &keys).await?;
            }
            _ = keepalive.tick() => {
                if gone(core) {
                    return Ok(());
                }
                if follows_master {
                    still_master(&mut connection).await?;
                    // A failover asked of the sentinels leaves the old master a master for a
                    // while (both say `master` until the sentinels demote it): what the
                    // sentinels name decides. Sentinels that do not answer change nothing.
                    match source.client().await {
                        Ok(now) if now.get_connection_info().addr().to_string() != node => {
                            return Err(redis::RedisError::from((
                                redis::ErrorKind::Client,
                                "the sentinels name another master",
                            )));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "session cache: no sentinel answered"),
                    }
                } else {
                    redis::cmd("PING").query_async::<()>(&mut connection).await?;
                }
            }
        }
    }
}

/// Under Sentinel: fails unless the node is (still) the master. A failover does not end the
/// old master's client connections; this keep-alive does, within [`KEEPALIVE`], and the next
/// connect asks the sentinels.
async fn still_master(
    connection: &mut redis::aio::MultiplexedConnection,
) -> Result<(), redis::RedisError> {
    let role: Vec<Value> = redis::cmd("ROLE").query_async(connection).await?;
    let master = match role.first() {
        Some(Value::BulkString(role)) => role.as_slice() == b"master",
        Some(Value::SimpleString(role)) => role == "master",
        _ => false,
    };
    if master {
        Ok(())
    } else {
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the tracked node is no longer the master",
        )))
    }
}

/// Reads again, in one round trip, the records whose own write Redis echoed, and keeps
/// those that nothing changed meanwhile.
async fn refresh(
    core: &Core,
    connection: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Result<(), redis::RedisError> {
    let epoch = core.epoch.load(SeqCst);
    if !on(epoch) {
        return Ok(());
    }
    let ticket = core.ticket(epoch);
    // A request that missed meanwhile has read it already.
    let keys: Vec<&String> = keys
        .iter()
        .filter(|key| !core.entries.contains(key))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for key in &keys {
        commands::Commands::load_with_ttl(&mut pipe, key);
    }
    // A key that is not a hash (or a command the server refuses) spoils its own replies,
    // not the batch's nor the connection.
    let replies: Vec<Value> = pipe.ignore_errors().query_async(connection).await?;
    let mut replies = replies.into_iter();
    for key in keys {
        let (fields, pttl) = commands::with_ttl(replies.next(), replies.next());
        if let (false, Some(pttl)) = (fields.is_empty(), pttl) {
            if core.fill(key, ticket, &fields, ticket.at + pttl) {
                core.stats.refreshes.fetch_add(1, SeqCst);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> (Cache, tokio::sync::mpsc::Receiver<String>) {
        core_living(LocalCache::new().time_to_live)
    }

    fn core_living(time_to_live: Duration) -> (Cache, tokio::sync::mpsc::Receiver<String>) {
        let (refresh, refreshes) = tokio::sync::mpsc::channel(REFRESH_QUEUE);
        let settings = LocalCache::new().time_to_live(time_to_live);
        let core = Core {
            entries: Map::new(settings.max_bytes, settings.max_entries),
            epoch: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            changed: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            writing: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            time_to_live: settings.time_to_live,
            index_prefix: "p:user:".to_owned(),
            refresh,
            stats: Counters::default(),
        };
        (
            Cache {
                core: Arc::new(core),
            },
            refreshes,
        )
    }

    fn record(value: &str) -> Fields {
        [("d:v".to_owned(), value.as_bytes().to_vec())]
            .into_iter()
            .collect()
    }

    fn value(cache: &Cache, key: &str) -> Option<String> {
        cache
            .get(key)
            .map(|fields| String::from_utf8(fields["d:v"].clone()).unwrap())
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn nothing_is_cached_or_served_while_tracking_is_off() {
        let (cache, _r) = core();
        assert!(cache.ticket().is_none());
        cache.core.up();
        let ticket = cache.ticket().unwrap();
        cache.fill("k", ticket, &record("1"), TTL);
        assert_eq!(value(&cache, "k").as_deref(), Some("1"));
        cache.core.down();
        assert_eq!(value(&cache, "k"), None);
        cache.core.up();
        // Flushed, and of the old epoch anyway.
        assert_eq!(value(&cache, "k"), None);
        // A load that started before the drop is not kept after it.
        let before = cache.ticket().unwrap();
        cache.core.down();
        cache.core.up();
        cache.fill("k", before, &record("1"), TTL);
        assert_eq!(value(&cache, "k"), None);
        let stats = cache.stats();
        assert_eq!(
            (stats.bypassed, stats.flushes, stats.tracking),
            (1, 2, true)
        );
    }

    #[test]
    fn a_reply_that_raced_an_invalidation_is_not_kept() {
        let (cache, _r) = core();
        cache.core.up();
        let ticket = cache.ticket().unwrap();
        cache.core.invalidate("k");
        cache.fill("k", ticket, &record("old"), TTL);
        assert_eq!(value(&cache, "k"), None);
        // Other keys are not held back (unless they share the bucket).
        let other = (0..)
            .map(|i| format!("o{i}"))
            .find(|o| bucket(o) != bucket("k"))
            .unwrap();
        cache.fill(&other, ticket, &record("x"), TTL);
        assert_eq!(value(&cache, &other).as_deref(), Some("x"));
        let ticket = cache.ticket().unwrap();
        cache.fill("k", ticket, &record("new"), TTL);
        assert_eq!(value(&cache, "k").as_deref(), Some("new"));
        cache.core.invalidate("k");
        assert_eq!(value(&cache, "k"), None);
    }

    #[test]
    fn own_writes_update_the_entry_and_are_read_again_when_echoed() {
        let (cache, mut refreshes) = core();
        cache.core.up();
        let ticket = cache.ticket().unwrap();
        cache.fill("k", ticket, &record("1"), TTL);
        let write = Write::Update {
            key: "k".into(),
            set: vec![("d:v".into(), b"2".to_vec())],
            del: vec![],
            ttl: TTL,
        };
        // A load that asked while the write was out is not kept (it may have read before).
        let during = cache.ticket().unwrap();
        let writing = cache.begin(&write).unwrap();
        cache.fill("k", during, &record("1"), TTL);
        writing.finish(&write, &Ok(Outcome::Applied));
        assert_eq!(value(&cache, "k").as_deref(), Some("2"));
        cache.fill("k", during, &record("1"), TTL);
        assert_eq!(value(&cache, "k").as_deref(), Some("2"));
        // The echo: dropped, and asked again.
        cache.core.invalidate("k");
        assert_eq!(value(&cache, "k"), None);
        assert_eq!(refreshes.try_recv().unwrap(), "k");
        // A load's entry is just dropped.
        let ticket = cache.ticket().unwrap();
        cache.fill("k", ticket, &record("2"), TTL);
        cache.core.invalidate("k");
        assert!(refreshes.try_recv().is_err());
    }

    #[test]
    fn a_write_that_something_else_raced_or_that_failed_drops_the_entry() {
        let (cache, mut refreshes) = core();
        cache.core.up();
        let write = Write::Update {
            key: "k".into(),
            set: vec![("d:v".into(), b"2".to_vec())],
            del: vec![],
            ttl: TTL,
        };
        for case in 0..4 {
            let ticket = cache.ticket().unwrap();
            cache.fill("k", ticket, &record("1"), TTL);
            assert!(value(&cache, "k").is_some());
            let writing = cache.begin(&write).unwrap();
            match case {
                0 => {
                    cache.core.invalidate("k");
                    writing.finish(&write, &Ok(Outcome::Applied));
                }
                1 => writing.finish(&write, &Err(crate::StoreErrorKind::Timeout.into())),
                2 => writing.finish(&write, &Ok(Outcome::Gone)),
                _ => drop(writing),
            }
            assert_eq!(value(&cache, "k"), None, "case {case}");
            // Raced (by its own echo, say): what Redis holds is read again. Failed or
            // gone: nothing is.
            assert_eq!(refreshes.try_recv().is_ok(), case == 0, "case {case}");
        }
    }

    #[test]
    fn updates_in_place_never_outlive_the_last_whole_read_and_indexes_are_left_alone() {
        let (cache, _r) = core_living(Duration::from_millis(60));
        cache.core.up();
        let ticket = cache.ticket().unwrap();
        cache.fill("k", ticket, &record("0"), TTL);
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(120) {
            n += 1;
            let write = Write::Update {
                key: "k".into(),
                set: vec![("d:v".into(), n.to_string().into_bytes())],
                del: vec![],
                ttl: TTL,
            };
            cache
                .begin(&write)
                .unwrap()
                .finish(&write, &Ok(Outcome::Applied));
            if started.elapsed() < Duration::from_millis(50) {
                assert_eq!(value(&cache, "k"), Some(n.to_string()));
            }
        }
        // Written all along, never read again: gone at the time to live of the first read.
        assert_eq!(value(&cache, "k"), None);
        let index = Write::Create {
            key: "p:user:abc".into(),
            fields: vec![("i:x".into(), b"1".to_vec())],
            ttl: TTL,
        };
        assert!(cache.begin(&index).is_none());
    }

    #[test]
    fn entries_end_at_their_deadline_and_a_flush_ends_them_all() {
        let (cache, _r) = core();
        cache.core.up();
        let ticket = cache.ticket().unwrap();
        cache.fill("short", ticket, &record("1"), Duration::from_millis(30));
        cache.fill("long", ticket, &record("1"), TTL);
        assert!(value(&cache, "short").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(value(&cache, "short"), None);
        assert!(value(&cache, "long").is_some());
        cache.core.pushed(&[Value::Nil]);
        assert_eq!(value(&cache, "long"), None);
        assert!(cache.stats().tracking);
    }
}
