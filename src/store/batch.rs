//! Concurrent requests' commands gathered into one pipeline, shared by both Redis transports.
//!
//! A request appends its commands to the batch being filled and awaits its replies; whoever
//! sends the batch (a blocking runner of the pool transport, a worker's task in the
//! multiplexed one) takes the whole batch at once, sends it in one write and hands every
//! request its own replies. The commands are built in place: no per-request pipeline, no
//! copy when batching.

use std::{
    panic::{self, AssertUnwindSafe},
    time::Duration,
};

use redis::{ErrorKind, Pipeline, RedisError, Value};
use tokio::sync::oneshot;

use super::{
    commands::{self, is_no_script, Commands},
    Fields, Outcome, Write,
};
use crate::error::{StoreError, StoreErrorKind};

/// The replies of one request's commands (ignored ones included), or why there are none.
pub(crate) type Replies = Result<Vec<Value>, StoreError>;

/// A Redis transport as the store's operations see it: where a request's commands go, and
/// the scripts they call. The operations themselves are the same for both transports.
pub(crate) trait Sender {
    fn commands(&self) -> &Commands;

    /// Adds the commands `build` makes to the batch being filled and makes sure that batch
    /// will be sent; the receiver gets the replies. Every command touches `key` alone (or
    /// no key): a cluster sends them to the node that serves it, one server ignores it.
    fn enqueue(
        &self,
        key: &str,
        build: impl Fn(&mut Pipeline),
    ) -> Result<oneshot::Receiver<Replies>, StoreError>;

    /// See [`super::Store::load`].
    async fn load(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Fields>, StoreError> {
        commands::loaded(self.query(key, |pipe| Commands::load(pipe, key, ttl)).await)
    }

    /// See [`super::Store::write`].
    async fn write(&self, write: &Write) -> Result<Outcome, StoreError> {
        let replies = self
            .query(write.key(), |pipe| self.commands().write(pipe, write))
            .await?;
        self.commands().answer(write, &replies)
    }

    /// Applies `write` without waiting for the answer.
    fn write_detached(&self, write: &Write) {
        drop(self.enqueue(write.key(), |pipe| self.commands().write(pipe, write)));
    }

    /// Adds the commands `build` makes (on `key` alone, see [`Sender::enqueue`]) to the next
    /// batch and awaits the replies. `build` may be called again: a cluster that redirects
    /// them sends them to another node.
    async fn query(&self, key: &str, build: impl Fn(&mut Pipeline)) -> Replies {
        replies(self.enqueue(key, build)?).await
    }
}

/// The commands of the requests queued so far.
#[derive(Default)]
pub(crate) struct Batch {
    pipe: Pipeline,
    requests: Vec<Request>,
    /// A request's commands were half built when building them panicked: commands nobody
    /// owns would shift every later reply onto the wrong request, so the batch is failed.
    torn: bool,
}

/// One request in a batch: how many of the batch's commands are its own, and where its
/// replies go.
struct Request {
    commands: usize,
    reply: oneshot::Sender<Replies>,
}

/// A request to send again on its own: its commands met NOSCRIPT (Redis restarted, or
/// `SCRIPT FLUSH`), and the path that sends a lone pipeline loads the scripts first.
pub(crate) struct Retry {
    pub(crate) pipe: Pipeline,
    reply: oneshot::Sender<Replies>,
}

impl Retry {
    /// Hands the request the replies of its lone pipeline: its own, or the first error
    /// Redis answered to one of its commands (as in a batch).
    pub(crate) fn answer(self, replies: Replies) {
        let replies = replies.and_then(|replies| match first_error(&replies) {
            Some(e) => Err(StoreError::redis(e)),
            None => Ok(replies),
        });
        // A request that went away no longer waits for its answer.
        let _ = self.reply.send(replies);
    }
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests in the batch.
    pub(crate) fn len(&self) -> usize {
        self.requests.len()
    }

    /// The batch's commands, to send in one write.
    pub(crate) fn pipe(&self) -> &Pipeline {
        &self.pipe
    }

    /// Appends one request's commands (`build` adds them to the pipeline); the receiver gets
    /// its replies once the batch is answered.
    pub(crate) fn push(&mut self, build: impl FnOnce(&mut Pipeline)) -> oneshot::Receiver<Replies> {
        let before = self.pipe.len();
        let pipe = &mut self.pipe;
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(move || build(pipe))) {
            self.torn = true;
            panic::resume_unwind(panic);
        }
        let (reply, replied) = oneshot::channel();
        self.requests.push(Request {
            commands: self.pipe.len() - before,
            reply,
        });
        replied
    }

    /// Hands every request its replies from `replies`, the answer to the whole batch: its
    /// own replies, or the first error Redis answered to one of its commands. Requests that
    /// met NOSCRIPT come back, to be sent again on their own. The batch is left empty, with
    /// its memory, for reuse.
    pub(crate) fn answer(&mut self, replies: Replies) -> Vec<Retry> {
        let mut retries = Vec::new();
        let replies = replies.and_then(|replies| {
            if self.torn || replies.len() != self.pipe.len() {
                let e = RedisError::from((
                    ErrorKind::Client,
                    "batch replies do not match its commands",
                    format!("{} replies to {} commands", replies.len(), self.pipe.len()),
                ));
                return Err(StoreError::redis(e));
            }
            Ok(replies)
        });
        match replies {
            Ok(replies) => self.hand_out(replies, &mut retries),
            Err(e) => {
                for request in self.requests.drain(..) {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
        self.pipe.clear();
        self.torn = false;
        retries
    }

    fn hand_out(&mut self, replies: Vec<Value>, retries: &mut Vec<Retry>) {
        let mut replies = replies.into_iter();
        let mut commands = self.pipe.cmd_iter();
        for request in self.requests.drain(..) {
            let mine: Vec<Value> = replies.by_ref().take(request.commands).collect();
            let own_commands = commands.by_ref().take(request.commands);
            match first_error(&mine) {
                Some(e) if is_no_script(&e) => {
                    let mut pipe = redis::pipe();
                    for cmd in own_commands {
                        pipe.add_command(cmd.clone());
                    }
                    retries.push(Retry {
                        pipe,
                        reply: request.reply,
                    });
                }
                error => {
                    own_commands.for_each(drop);
                    let answer = error.map_or(Ok(mine), |e| Err(StoreError::redis(e)));
                    let _ = request.reply.send(answer);
                }
            }
        }
    }
}

/// The first error reply among a request's replies.
fn first_error(replies: &[Value]) -> Option<RedisError> {
    replies.iter().find_map(|value| match value {
        Value::ServerError(e) => Some(RedisError::from(e.clone())),
        _ => None,
    })
}

/// What a request awaits: the replies, or an error if the sender went away (runtime or
/// blocking pool shutting down).
pub(crate) async fn replies(replied: oneshot::Receiver<Replies>) -> Replies {
    replied
        .await
        .map_err(|_| StoreError::from_kind(StoreErrorKind::Unavailable))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error reply as Redis sends it.
    fn server_error(line: &str) -> Value {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        value
    }

    #[test]
    fn each_request_gets_its_own_replies_or_its_own_error() {
        let mut batch = Batch::default();
        let a = batch.push(|p| {
            p.cmd("HGETALL").arg("a");
            p.cmd("PEXPIRE").arg("a").arg(1);
        });
        let b = batch.push(|p| {
            p.cmd("HGETALL").arg("b");
        });
        let c = batch.push(|p| {
            p.cmd("HSET").arg("c").arg("f").arg("v");
            p.cmd("PEXPIRE").arg("c").arg(1);
        });
        let d = batch.push(|p| {
            p.cmd("EVALSHA").arg("sha").arg(1).arg("d");
        });
        assert_eq!(batch.pipe().len(), 6);
        let mut batch = batch;
        let retries = batch.answer(Ok(vec![
            Value::Int(1),
            Value::Int(2),
            server_error("WRONGTYPE not a hash"),
            Value::Int(3),
            Value::Int(4),
            server_error("NOSCRIPT no script"),
        ]));
        let now = |mut rx: oneshot::Receiver<Replies>| rx.try_recv().expect("answered");
        assert_eq!(now(a).unwrap(), vec![Value::Int(1), Value::Int(2)]);
        let e = now(b).unwrap_err();
        assert!(e.redis_code() == Some("WRONGTYPE"), "{e:?}");
        assert_eq!(now(c).unwrap(), vec![Value::Int(3), Value::Int(4)]);
        // NOSCRIPT: handed back with its own commands, unanswered so far.
        assert_eq!(retries.len(), 1);
        let packed = String::from_utf8(retries[0].pipe.get_packed_pipeline()).unwrap();
        assert!(
            packed.contains("EVALSHA") && packed.contains("sha"),
            "{packed}"
        );
        assert_eq!(retries[0].pipe.len(), 1);
        let mut d = d;
        assert!(d.try_recv().is_err(), "not answered yet");
        retries
            .into_iter()
            .next()
            .unwrap()
            .answer(Ok(vec![Value::Int(1)]));
        assert_eq!(d.try_recv().unwrap().unwrap(), vec![Value::Int(1)]);
    }

    #[test]
    fn a_reply_count_that_does_not_match_fails_the_batch() {
        let mut batch = Batch::default();
        let a = batch.push(|p| {
            p.cmd("HGETALL").arg("a");
            p.cmd("PEXPIRE").arg("a").arg(1);
        });
        let b = batch.push(|p| {
            p.cmd("HGETALL").arg("b");
        });
        batch.answer(Ok(vec![Value::Int(1), Value::Int(2)]));
        for mut rx in [a, b] {
            assert!(matches!(rx.try_recv(), Ok(Err(e)) if e.kind() == StoreErrorKind::Backend));
        }
    }

    #[test]
    fn a_request_whose_commands_panicked_half_built_fails_its_batch() {
        let mut batch = Batch::default();
        let a = batch.push(|p| {
            p.cmd("HGETALL").arg("a");
        });
        let half = panic::catch_unwind(AssertUnwindSafe(|| {
            batch.push(|p| {
                p.cmd("HSET").arg("b").arg("f").arg("v");
                panic!("building failed");
            })
        }));
        assert!(half.is_err());
        let c = batch.push(|p| {
            p.cmd("HGETALL").arg("c");
        });
        // Three replies for three commands, but the second one belongs to nobody.
        batch.answer(Ok(vec![Value::Int(1), Value::Int(2), Value::Int(3)]));
        for mut rx in [a, c] {
            assert!(matches!(rx.try_recv(), Ok(Err(e)) if e.kind() == StoreErrorKind::Backend));
        }
        // The next batch is whole again.
        let d = batch.push(|p| {
            p.cmd("HGETALL").arg("d");
        });
        batch.answer(Ok(vec![Value::Int(4)]));
        let mut d = d;
        assert_eq!(d.try_recv().unwrap().unwrap(), vec![Value::Int(4)]);
    }

    #[test]
    fn a_failed_batch_fails_every_request_in_it() {
        let mut batch = Batch::default();
        let a = batch.push(|p| {
            p.cmd("HGETALL").arg("a");
        });
        let b = batch.push(|p| {
            p.cmd("HGETALL").arg("b");
        });
        let retries = batch.answer(Err(StoreErrorKind::Unavailable.into()));
        assert!(retries.is_empty());
        assert!(
            batch.is_empty() && batch.pipe().is_empty(),
            "ready for reuse"
        );
        for mut rx in [a, b] {
            assert!(matches!(rx.try_recv(), Ok(Err(e)) if e.kind() == StoreErrorKind::Unavailable));
        }
    }
}
