//! Where sessions live: Redis (default) or memory (development and tests).
//!
//! Both stores keep one record per session, a map of field name to bytes, and apply the same
//! operations: load (with TTL refresh), field-level update of an existing record, create if
//! absent, delete. The session logic on top is shared, so both behave alike.

pub(crate) mod batch;
pub(crate) mod commands;
pub(crate) mod memory;
pub(crate) mod multiplexed;
pub(crate) mod redis;

use std::{collections::HashMap, time::Duration};

use self::batch::Sender as _;
pub use self::memory::MemoryStore;
pub(crate) use self::{multiplexed::MultiplexedStore, redis::RedisStore};
use crate::error::StoreError;

/// A session record as stored: field name to encoded value.
pub(crate) type Fields = HashMap<String, Vec<u8>>;

/// One write, applied in one round trip.
#[derive(Debug)]
pub(crate) enum Write {
    /// Field-level change of an existing record. The answer says whether it was there; if
    /// not, the write may have left a remnant without a creation marker (never adopted, with
    /// the TTL), which the caller should delete.
    Update {
        key: String,
        set: Vec<(String, Vec<u8>)>,
        del: Vec<String>,
        ttl: Duration,
    },
    /// A new record, only if the key is free. `fields` holds the creation marker
    /// ([`CREATED`](crate::record::CREATED)): a retried create that finds the record its first
    /// attempt wrote (same marker) counts as created.
    Create {
        key: String,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    },
    /// Removal of the fields `del`, then of the whole record if no data field is left (a
    /// concurrent request may have added one); otherwise the TTL moves to `ttl`.
    Empty {
        key: String,
        del: Vec<String>,
        ttl: Duration,
    },
    /// Removal of a record.
    Delete { key: String },
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done: updated, created, emptied and deleted, deleted.
    Applied,
    /// Left undone on purpose: a create whose key is taken, an empty whose record a
    /// concurrent request gave data again (kept, its TTL moved).
    Refused,
    /// The record was not there: ended while the request ran (a logout, a deletion, the
    /// expiry), or by an earlier attempt of this very write.
    Gone,
}

/// The configured store.
#[derive(Clone)]
pub(crate) enum Store {
    Redis(RedisStore),
    Multiplexed(MultiplexedStore),
    Memory(MemoryStore),
}

impl Store {
    /// The record under `key`, if any, with its TTL moved to `ttl` (if given).
    pub(crate) async fn load(
        &self,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Fields>, StoreError> {
        match self {
            Store::Redis(s) => s.load(key, ttl).await,
            Store::Multiplexed(s) => s.load(key, ttl).await,
            Store::Memory(s) => Ok(s.load(key, ttl)),
        }
    }

    /// Applies `write` without waiting for the answer (which only a log could use).
    pub(crate) fn write_detached(&self, write: &Write) {
        match self {
            Store::Redis(s) => s.write_detached(write),
            Store::Multiplexed(s) => s.write_detached(write),
            Store::Memory(s) => {
                s.write(write);
            }
        }
    }

    /// Applies `write`; see [`Outcome`] for what each write answers.
    pub(crate) async fn write(&self, write: &Write) -> Result<Outcome, StoreError> {
        match self {
            Store::Redis(s) => s.write(write).await,
            Store::Multiplexed(s) => s.write(write).await,
            Store::Memory(s) => Ok(s.write(write)),
        }
    }

    /// The store as one actix worker uses it: the multiplexed transport gets a connection
    /// of its own per worker; the others are shared.
    pub(crate) fn for_worker(&self) -> Store {
        match self {
            Store::Multiplexed(s) => Store::Multiplexed(s.for_worker()),
            other => other.clone(),
        }
    }
}
