//! The local cache's map: sharded, bounded by bytes and entries, CLOCK eviction, entries
//! that end at their own deadline, and a check-and-change under the shard's lock.
//!
//! Ours rather than moka's, for the hot path: every request that writes its session changes
//! its entry (and Redis's echo of the write changes it again on the tracking thread), and a
//! moka `and_compute_with` (the per-key lock the coherence rules need) measured 1.7 µs per
//! insert on one thread and cost the read-write bench a quarter of its throughput (write log,
//! timer wheel, epoch-based reclamation, contention with the tracking thread); a mutex per
//! shard over a `HashMap` does the same check-and-insert in about 0.15 µs, and its lock is
//! the per-key lock.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex, MutexGuard, PoisonError,
    },
    time::Instant,
};

/// What the map needs of a value: its size and when it ends.
pub(crate) trait Cached: Clone {
    /// Bytes it takes, its key not counted.
    fn weight(&self) -> usize;
    /// When it stops being served.
    fn deadline(&self) -> Instant;
}

/// What [`Map::compute`] should do with the key's value.
pub(crate) enum Op<V> {
    Nop,
    Put(V),
    Remove,
}

/// What [`Map::compute`] did.
pub(crate) enum Done<V> {
    /// The value was stored.
    Put,
    /// The value under the key was removed: here it is.
    Removed(V),
    /// Nothing changed (or the value was too large to keep).
    Nothing,
}

/// Bytes of bookkeeping per entry (the key's `String`, the slot, the clock's copy of the
/// key), counted against the byte bound with the key's and the value's own.
const SLOT_OVERHEAD: usize = 96;

/// Most shards: enough that the workers and the tracking thread rarely meet on one lock.
const MAX_SHARDS: usize = 64;

pub(crate) struct Map<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    shard_bytes: usize,
    shard_entries: usize,
    bytes: AtomicU64,
    entries: AtomicU64,
    evictions: AtomicU64,
}

struct Shard<V> {
    slots: HashMap<String, Slot<V>, BuildHasherDefault<Fnv>>,
    /// Keys in the order the clock hand visits them, with the slot's id (a key removed and
    /// added again has a new one, so that its old place is skipped).
    clock: VecDeque<(String, u64)>,
    next_id: u64,
    bytes: usize,
}

struct Slot<V> {
    value: V,
    weight: usize,
    id: u64,
    /// Read since the hand last passed: it gets a second chance.
    referenced: bool,
}

impl<V: Cached> Map<V> {
    /// A map of at most `max_bytes` and `max_entries` (both at least 1).
    pub(crate) fn new(max_bytes: u64, max_entries: u64) -> Map<V> {
        let max_entries = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX).max(1);
        // A power of two no larger than the entry bound, so that every shard may hold one,
        // and with at least 256 KiB each where the byte bound allows (a record larger than
        // a shard is not kept).
        let by_bytes = (max_bytes / (256 << 10)).max(1);
        let shards = prev_power_of_two(max_entries.min(by_bytes).min(MAX_SHARDS));
        Map {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        slots: HashMap::default(),
                        clock: VecDeque::new(),
                        next_id: 0,
                        bytes: 0,
                    })
                })
                .collect(),
            shard_bytes: max_bytes / shards,
            shard_entries: max_entries / shards,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard<V>> {
        let index = (fnv(key.as_bytes()) >> 32) as usize & (self.shards.len() - 1);
        // A panic while a shard was held (it would be ours) leaves it consistent: each
        // change is done before the next starts.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key`, unless it is past its deadline (then it goes).
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let mut shard = self.shard(key);
        let slot = shard.slots.get_mut(key)?;
        if slot.value.deadline() <= Instant::now() {
            shard.remove(key, self);
            shard.compact();
            self.evicted();
            return None;
        }
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Whether there is a value under `key` (past its deadline or not).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.shard(key).slots.contains_key(key)
    }

    /// Calls `f` with the value under `key` (if any) under the shard's lock, and does what
    /// it says: nothing that changes `key` runs in between.
    pub(crate) fn compute(&self, key: &str, f: impl FnOnce(Option<&V>) -> Op<V>) -> Done<V> {
        let mut shard = self.shard(key);
        match f(shard.slots.get(key).map(|slot| &slot.value)) {
            Op::Nop => Done::Nothing,
            Op::Remove => match shard.remove(key, self) {
                Some(value) => {
                    shard.compact();
                    Done::Removed(value)
                }
                None => Done::Nothing,
            },
            Op::Put(value) => {
                let weight = SLOT_OVERHEAD + 2 * key.len() + value.weight();
                if weight > self.shard_bytes {
                    // Larger than a shard may hold: not kept, and no older copy either.
                    shard.remove(key, self);
                    return Done::Nothing;
                }
                shard.put(key, value, weight, self);
                shard.evict(self);
                // The hand may have taken the newcomer itself (everything older was read
                // since it last passed).
                if shard.slots.contains_key(key) {
                    Done::Put
                } else {
                    Done::Nothing
                }
            }
        }
    }

    /// Everything goes.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            self.entries.fetch_sub(shard.slots.len() as u64, Relaxed);
            self.bytes.fetch_sub(shard.bytes as u64, Relaxed);
            shard.slots.clear();
            shard.clock.clear();
            shard.bytes = 0;
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.load(Relaxed)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    fn evicted(&self) {
        self.evictions.fetch_add(1, Relaxed);
        crate::telemetry::cache_event("eviction");
    }

    /// Entries removed to make room or at their deadline, so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }
}

impl<V: Cached> Shard<V> {
    fn remove(&mut self, key: &str, map: &Map<V>) -> Option<V> {
        let slot = self.slots.remove(key)?;
        self.bytes -= slot.weight;
        map.bytes.fetch_sub(slot.weight as u64, Relaxed);
        map.entries.fetch_sub(1, Relaxed);
        Some(slot.value)
    }

    fn put(&mut self, key: &str, value: V, weight: usize, map: &Map<V>) {
        if let Some(slot) = self.slots.get_mut(key) {
            self.bytes = self.bytes - slot.weight + weight;
            map.bytes.fetch_add(weight as u64, Relaxed);
            map.bytes.fetch_sub(slot.weight as u64, Relaxed);
            slot.value = value;
            slot.weight = weight;
            slot.referenced = true;
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.clock.push_back((key.to_owned(), id));
        self.slots.insert(
            key.to_owned(),
            Slot {
                value,
                weight,
                id,
                referenced: false,
            },
        );
        self.bytes += weight;
        map.bytes.fetch_add(weight as u64, Relaxed);
        map.entries.fetch_add(1, Relaxed);
    }

    /// The clock hand: over the bounds, entries read since it last passed get a second
    /// chance, the others (and any past their deadline) go.
    fn evict(&mut self, map: &Map<V>) {
        let now = Instant::now();
        while self.bytes > map.shard_bytes || self.slots.len() > map.shard_entries {
            let Some((key, id)) = self.clock.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(&key).filter(|slot| slot.id == id) else {
                continue;
            };
            if slot.referenced && slot.value.deadline() > now {
                slot.referenced = false;
                self.clock.push_back((key, id));
                continue;
            }
            self.remove(&key, map);
            map.evicted();
        }
        self.compact();
    }

    /// Places of removed keys are skipped when the hand meets them; this keeps them from
    /// piling up (their key copies are not counted once the entry is gone): at most twice
    /// the live entries, and 32.
    fn compact(&mut self) {
        if self.clock.len() > 2 * self.slots.len() + 32 {
            let slots = &self.slots;
            self.clock
                .retain(|(key, id)| slots.get(key).is_some_and(|slot| slot.id == *id));
        }
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}

/// FNV-1a: storage keys end in a hex SHA-256 of a random id, so any mix spreads them, and
/// none needs to resist chosen keys (nobody chooses them).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv::default();
    hasher.write(bytes);
    hasher.finish()
}

/// [`fnv`] as a [`Hasher`] for the shards' maps.
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = self.0;
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Value(usize, Instant);

    impl Cached for Value {
        fn weight(&self) -> usize {
            self.0
        }
        fn deadline(&self) -> Instant {
            self.1
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn bounds_hold_and_entries_read_since_the_hand_passed_stay() {
        let map: Map<Value> = Map::new(64 << 20, 8);
        assert_eq!(map.shards.len(), 8);
        for i in 0..100 {
            map.compute(&format!("k{i}"), |_| Op::Put(Value(10, later())));
            assert!(map.len() <= 8);
        }
        // In one shard of one entry, the newest is the one kept.
        let map: Map<Value> = Map::new(1 << 20, 1);
        map.compute("a", |_| Op::Put(Value(10, later())));
        map.compute("b", |_| Op::Put(Value(10, later())));
        assert!(map.get("a").is_none() && map.get("b").is_some());
        assert_eq!(map.evictions(), 1);
        // Bytes: each entry weighs its value, its key twice and the overhead; three fit.
        let weight = SLOT_OVERHEAD + 2 * 4 + 100;
        let map: Map<Value> = Map::new((3 * weight + 10) as u64, 1000);
        assert_eq!(map.shards.len(), 1);
        for i in 0..1000 {
            map.compute(&format!("k{i:03}"), |_| Op::Put(Value(100, later())));
            assert!(map.bytes() <= (3 * weight) as u64);
        }
        assert_eq!(map.len(), 3);
        assert!(map.get("k999").is_some());
        // Too large for a shard: not kept, and the older copy goes too.
        let map: Map<Value> = Map::new(4096, 1);
        map.compute("k", |_| Op::Put(Value(10, later())));
        assert!(matches!(
            map.compute("k", |_| Op::Put(Value(5000, later()))),
            Done::Nothing
        ));
        assert!(map.get("k").is_none());
        assert_eq!((map.len(), map.bytes()), (0, 0));
    }

    #[test]
    fn a_read_entry_gets_a_second_chance() {
        let map: Map<Value> = Map::new(1 << 20, 2);
        let map = Map {
            shards: map.shards.into_vec().into_iter().take(1).collect(),
            shard_entries: 2,
            ..map
        };
        map.compute("old", |_| Op::Put(Value(1, later())));
        map.compute("new", |_| Op::Put(Value(1, later())));
        assert!(map.get("old").is_some());
        map.compute("newest", |_| Op::Put(Value(1, later())));
        // "new" was not read since it came: it goes, "old" stays.
        assert!(map.get("old").is_some());
        assert!(map.get("new").is_none());
        assert!(map.get("newest").is_some());
    }

    #[test]
    fn entries_end_at_their_deadline_and_compute_sees_what_is_there() {
        let map: Map<Value> = Map::new(1 << 20, 100);
        map.compute("k", |_| Op::Put(Value(1, Instant::now())));
        assert!(map.get("k").is_none());
        assert_eq!(map.len(), 0);
        map.compute("k", |current| {
            assert!(current.is_none());
            Op::Put(Value(1, later()))
        });
        let removed = map.compute("k", |current| {
            assert_eq!(current.map(|v| v.0), Some(1));
            Op::Remove
        });
        assert!(matches!(removed, Done::Removed(Value(1, _))));
        assert!(matches!(map.compute("k", |_| Op::Remove), Done::Nothing));
        map.compute("k", |_| Op::Put(Value(1, later())));
        map.clear();
        assert_eq!((map.len(), map.bytes()), (0, 0));
        assert!(map.get("k").is_none());
    }
}
