//! A session store written against the public trait alone, as a user would write one for
//! their own database: a map behind a mutex, with expiry. It relies on the trait's default
//! `touch` and `empty`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_redis_session::{
    store::{Record, SessionStore},
    StoreError,
};

#[derive(Clone, Default)]
pub struct MapStore {
    records: Arc<Mutex<HashMap<String, (Record, Instant)>>>,
}

type Map = HashMap<String, (Record, Instant)>;

impl MapStore {
    /// Records held, expired ones included.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    fn live<'a>(map: &'a mut Map, key: &str) -> Option<&'a mut (Record, Instant)> {
        if map
            .get(key)
            .is_some_and(|(_, expires)| *expires <= Instant::now())
        {
            map.remove(key);
        }
        map.get_mut(key)
    }
}

impl SessionStore for MapStore {
    async fn load(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Record>, StoreError> {
        let mut map = self.records.lock().unwrap();
        Ok(Self::live(&mut map, key).map(|(record, expires)| {
            if let Some(ttl) = ttl {
                *expires = Instant::now() + ttl;
            }
            record.clone()
        }))
    }

    async fn update(
        &self,
        key: &str,
        set: &[(String, Vec<u8>)],
        remove: &[String],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut map = self.records.lock().unwrap();
        let Some((record, expires)) = Self::live(&mut map, key) else {
            return Ok(false);
        };
        record.extend(set.iter().cloned());
        for name in remove {
            record.remove(name);
        }
        *expires = Instant::now() + ttl;
        Ok(true)
    }

    async fn create(
        &self,
        key: &str,
        fields: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut map = self.records.lock().unwrap();
        if Self::live(&mut map, key).is_some() {
            return Ok(false);
        }
        map.insert(
            key.to_owned(),
            (fields.iter().cloned().collect(), Instant::now() + ttl),
        );
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut map = self.records.lock().unwrap();
        Ok(Self::live(&mut map, key).is_some() && map.remove(key).is_some())
    }
}
