//! The Redis store over redis-rs's multiplexed async connection.
//!
//! Concurrent requests share one connection per actix worker and their commands are
//! pipelined on the wire, which costs Redis far less CPU per request than one blocking
//! connection per request. No thread hop either: the commands are awaited on the worker.
//! Key layout, scripts and pipelines are the pool transport's ([`super::commands`]).

use std::{sync::Arc, time::Duration};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Pipeline, Value,
};

use super::{
    commands::{self, Commands, RedisOptions},
    Fields, Write,
};
use crate::error::{ConfigError, StoreError};

/// The Redis-backed store (multiplexed transport).
#[derive(Clone)]
pub(crate) struct MultiplexedStore {
    shared: Arc<Shared>,
    /// This worker's connection; `None` in the copy held by the configuration.
    connection: Option<ConnectionManager>,
}

struct Shared {
    client: redis::Client,
    config: ConnectionManagerConfig,
    commands: Commands,
}

impl MultiplexedStore {
    pub(crate) fn open(url: &str, options: &RedisOptions) -> Result<MultiplexedStore, ConfigError> {
        let client = super::redis::client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout))
            // Reconnection runs in the background with backoff; requests meanwhile fail
            // fast by the OnStoreError policy instead of waiting for it.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        Ok(MultiplexedStore {
            shared: Arc::new(Shared {
                client,
                config,
                commands: Commands::new(),
            }),
            connection: None,
        })
    }

    /// A copy for one actix worker with its own connection, opened on first use on that
    /// worker's runtime, so that its I/O never crosses threads.
    pub(crate) fn for_worker(&self) -> MultiplexedStore {
        let connection = ConnectionManager::new_lazy_with_config(
            self.shared.client.clone(),
            self.shared.config.clone(),
        );
        if let Err(e) = &connection {
            tracing::error!(error = %e, "could not set up the Redis connection");
        }
        MultiplexedStore {
            shared: Arc::clone(&self.shared),
            connection: connection.ok(),
        }
    }

    pub(crate) async fn load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Fields>, StoreError> {
        let pipe = Commands::load(key, ttl);
        commands::loaded(self.query(&pipe).await.map_err(StoreError::Redis))
    }

    pub(crate) async fn write(&self, write: &Write) -> Result<bool, StoreError> {
        let prepared = self.shared.commands.write(write);
        let replies = self.query(&prepared.pipe).await?;
        prepared.reply.answer(&replies).map_err(StoreError::Redis)
    }

    async fn query(&self, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        let mut connection = match &self.connection {
            Some(connection) => connection.clone(),
            None => {
                ConnectionManager::new_with_config(
                    self.shared.client.clone(),
                    self.shared.config.clone(),
                )
                .await?
            }
        };
        match self
            .shared
            .commands
            .query_async(&mut connection, pipe)
            .await
        {
            // The manager reconnects after a dropped connection: one more try.
            Err(e) if commands::worth_retrying(&e) => {
                tracing::debug!(error = %e, "redis connection dropped; retrying");
                self.shared
                    .commands
                    .query_async(&mut connection, pipe)
                    .await
            }
            other => other,
        }
    }
}
