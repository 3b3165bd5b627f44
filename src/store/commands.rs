//! The Redis commands of the session store, shared by both transports: one key layout, one
//! set of scripts, the same pipelines.

use std::time::Duration;

use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::{Fields, Outcome, RedisTls, Write};
use crate::{error::StoreError, record::CREATED};

/// Creates the record only if the key is free: `1` when created, `0` when taken. A key
/// taken by a record with the same creation marker is this create's own first attempt (its
/// reply was lost with a dropped connection), so the answer is `1` there too.
/// KEYS[1]: session key; ARGV[1]: TTL in ms; ARGV[2]: the creation marker (field `m:c`, also
/// among the pairs); ARGV[3..]: field, value pairs.
/// HSET is called in chunks so that huge sessions stay below Lua's unpack limit.
const CREATE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'm:c') == ARGV[2] then return 1 end
  return 0
end
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Removes fields, then deletes the record if no data field (one not starting with `m:`)
/// is left, which a concurrent request may have added: `1` when deleted, `0` when kept (its
/// TTL moved), `-1` when it was gone already.
/// KEYS[1]: session key; ARGV[1]: TTL in ms; ARGV[2..]: fields to remove.
const EMPTY_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 2, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 2) ~= 'm:' then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1
";

/// Connection settings of a store that opens its own connections.
#[derive(Clone, Debug)]
pub(crate) struct RedisOptions {
    pub(crate) capacity: u32,
    pub(crate) checkout_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    /// Certificates of its own for `rediss://`.
    pub(crate) tls: Option<RedisTls>,
    /// `WAIT` for this many replicas, this long, after every write.
    pub(crate) wait: Option<(u32, Duration)>,
    /// Credentials for the master and replicas that Sentinel names.
    #[cfg(feature = "sentinel")]
    pub(crate) node_auth: Option<NodeAuth>,
}

/// An ACL user (or none: `requirepass`) and its password, for the data nodes that Sentinel
/// names. Its `Debug` never shows the password.
#[cfg(feature = "sentinel")]
#[derive(Clone)]
pub(crate) struct NodeAuth {
    pub(crate) username: Option<String>,
    pub(crate) password: zeroize::Zeroizing<String>,
}

#[cfg(feature = "sentinel")]
impl std::fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            capacity: 2,
            checkout_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            tls: None,
            wait: None,
            #[cfg(feature = "sentinel")]
            node_auth: None,
        }
    }
}

/// The outcome of `write` from its replies. Each write's first reply is an integer: a
/// script's `1` (applied), `0` (refused) or `-1` (gone), how many keys DEL removed, or for an
/// update whether its first PEXPIRE found the record (`1`) or not (`0`).
pub(crate) fn answer(write: &Write, replies: &[Value]) -> RedisResult<Outcome> {
    match replies.first() {
        Some(&Value::Int(n)) => Ok(match (write, n) {
            (_, 1..) => Outcome::Applied,
            (Write::Delete { .. } | Write::Update { .. }, _) | (_, ..0) => Outcome::Gone,
            (_, 0) => Outcome::Refused,
        }),
        // The type alone: a reply out of place could hold anything, a session included.
        other => Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "session write answered",
            describe(other),
        ))),
    }
}

/// What kind of reply this is, for a log: its type and size, never its content.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "no reply".to_owned(),
        Some(Value::BulkString(bytes)) => format!("a bulk string of {} bytes", bytes.len()),
        Some(Value::Array(items)) => format!("an array of {} items", items.len()),
        Some(Value::Map(pairs)) => format!("a map of {} pairs", pairs.len()),
        Some(Value::SimpleString(text)) => format!("a simple string of {} bytes", text.len()),
        Some(other) => format!("a reply of another type ({})", variant(other)),
    }
}

fn variant(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::Okay => "OK",
        Value::Double(_) => "double",
        Value::Boolean(_) => "boolean",
        Value::ServerError(_) => "error",
        Value::Push { .. } => "push",
        Value::Set(_) => "set",
        _ => "other",
    }
}

/// The store's scripts, and the pipelines built on them.
pub(crate) struct Commands {
    create: Script,
    empty: Script,
    /// After every write, `WAIT <replicas> <ms>`
    /// ([`wait_for_replicas`](crate::RedisSessionBuilder::wait_for_replicas)).
    wait: Option<(u32, u64)>,
}

impl Commands {
    pub(crate) fn new(options: &RedisOptions) -> Commands {
        Commands {
            create: Script::new(CREATE_SCRIPT),
            empty: Script::new(EMPTY_SCRIPT),
            wait: options
                .wait
                .map(|(replicas, timeout)| (replicas, millis(timeout))),
        }
    }

    /// The outcome of `write` from its replies ([`answer`]); with
    /// [`wait_for_replicas`](crate::RedisSessionBuilder::wait_for_replicas), an error if
    /// fewer replicas than asked acknowledged it in time (the write is on the master; the
    /// request is not answered as saved).
    pub(crate) fn answer(&self, write: &Write, replies: &[Value]) -> Result<Outcome, StoreError> {
        let outcome = answer(write, replies).map_err(StoreError::redis)?;
        if let Some((replicas, ms)) = self.wait {
            let acknowledged = match replies.last() {
                Some(&Value::Int(n)) => n,
                _ => -1,
            };
            if acknowledged < i64::from(replicas) {
                tracing::warn!(
                    acknowledged,
                    wanted = replicas,
                    timeout_ms = ms,
                    "a session write was not acknowledged by enough replicas in time"
                );
                return Err(StoreError::new(
                    crate::error::StoreErrorKind::NotReplicated,
                    "the write was not acknowledged by enough replicas in time (WAIT)",
                ));
            }
        }
        Ok(outcome)
    }

    /// Appends the load of `key` with its time to live, as the local cache reads records:
    /// HGETALL, then PTTL ([`with_ttl`] reads the two replies).
    pub(crate) fn load_with_ttl(pipe: &mut Pipeline, key: &str) {
        Commands::load(pipe, key, None);
        let mut pttl = command("PTTL", 1, key.len());
        pttl.arg(key);
        pipe.add_command(pttl);
    }

    /// Appends the load of `key` to `pipe`: HGETALL, and the TTL refresh if `ttl` is given.
    /// The first reply is the record ([`loaded`]).
    pub(crate) fn load(pipe: &mut Pipeline, key: &str, ttl: Option<Duration>) {
        let mut hgetall = command("HGETALL", 1, key.len());
        hgetall.arg(key);
        pipe.add_command(hgetall);
        if let Some(ttl) = ttl {
            pexpire(pipe, key, ttl);
        }
    }

    /// Appends the command that applies `write` to `pipe`; [`answer`] reads its reply.
    pub(crate) fn write(&self, pipe: &mut Pipeline, write: &Write) {
        match write {
            Write::Update { key, set, del, ttl } => {
                // Plain commands, not a script (a script costs Redis several times the CPU of
                // these three): the first PEXPIRE says whether the record is still there.
                // If it is not (a logout, a deletion, the expiry won the race), HSET makes a
                // remnant without a creation marker, which is never adopted; the last
                // PEXPIRE gives it a TTL, and the caller deletes it.
                pexpire(pipe, key, *ttl);
                if !set.is_empty() {
                    let data = set.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>();
                    let mut hset = command("HSET", 1 + 2 * set.len(), key.len() + data);
                    hset.arg(key).arg(set);
                    pipe.add_command(hset).ignore();
                }
                if !del.is_empty() {
                    let data = del.iter().map(String::len).sum::<usize>();
                    let mut hdel = command("HDEL", 1 + del.len(), key.len() + data);
                    hdel.arg(key).arg(del);
                    pipe.add_command(hdel).ignore();
                }
                pexpire(pipe, key, *ttl);
            }
            Write::Create { key, fields, ttl } => {
                let marker = fields
                    .iter()
                    .find(|(name, _)| name == CREATED)
                    .map_or(&[][..], |(_, marker)| marker.as_slice());
                let mut invocation = self.create.key(key);
                invocation.arg(millis(*ttl)).arg(marker).arg(fields);
                pipe.invoke_script(&invocation);
            }
            Write::Empty { key, del, ttl } => {
                let mut invocation = self.empty.key(key);
                invocation.arg(millis(*ttl)).arg(del);
                pipe.invoke_script(&invocation);
            }
            Write::Delete { key } => {
                pipe.cmd("DEL").arg(key);
            }
        }
        if let Some((replicas, ms)) = self.wait {
            // Its reply is the write's last ([`Commands::answer`]).
            pipe.cmd("WAIT").arg(replicas).arg(ms);
        }
    }

    /// The commands that load the store's scripts, to send ahead of a pipeline that met
    /// NOSCRIPT (Redis restarted, or `SCRIPT FLUSH`); they answer one reply each.
    pub(crate) fn load_scripts(&self, pipe: &mut Pipeline) {
        for code in [CREATE_SCRIPT, EMPTY_SCRIPT] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
    }

    /// Runs a pipeline on an async connection; if Redis lost our scripts (restart,
    /// SCRIPT FLUSH), loads them and runs it again. Every command here is safe to repeat.
    pub(crate) async fn query_async<C>(
        &self,
        conn: &mut C,
        pipe: &Pipeline,
    ) -> RedisResult<Vec<Value>>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        match pipe.query_async(conn).await {
            Err(e) if is_no_script(&e) => {
                self.create.load_async(conn).await?;
                self.empty.load_async(conn).await?;
                pipe.query_async(conn).await
            }
            other => other,
        }
    }
}

pub(crate) fn is_no_script(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// The record from the reply of a [`Commands::load`] pipeline.
///
/// Something that is not a hash under the key (WRONGTYPE) is not a session, but no reason to
/// fail the request either: it comes back as an empty record, which the caller discards
/// (deletes) like any record without a creation marker.
pub(crate) fn loaded(reply: Result<Vec<Value>, StoreError>) -> Result<Option<Fields>, StoreError> {
    match reply {
        Ok(replies) => {
            let fields = to_fields(replies.into_iter().next().unwrap_or(Value::Nil));
            Ok((!fields.is_empty()).then_some(fields))
        }
        Err(e) if e.is_wrong_type() => Ok(Some(Fields::new())),
        Err(e) => Err(e),
    }
}

/// The replies of a [`Commands::load_with_ttl`]: the record's fields (empty: no record) and
/// its time left, if it has one.
pub(crate) fn with_ttl(record: Option<Value>, ttl: Option<Value>) -> (Fields, Option<Duration>) {
    (to_fields(record.unwrap_or(Value::Nil)), pttl(ttl))
}

/// A `PTTL` reply as the time left: `None` for no expiry or no key.
pub(crate) fn pttl(reply: Option<Value>) -> Option<Duration> {
    match reply {
        Some(Value::Int(ms)) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        _ => None,
    }
}

/// A command sized for its arguments up front: building it costs one allocation for the
/// data and one for the argument list, not one per growth step.
fn command(name: &str, args: usize, data: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(1 + args, name.len() + data);
    cmd.arg(name);
    cmd
}

fn pexpire(pipe: &mut Pipeline, key: &str, ttl: Duration) {
    // 20 bytes: the longest u64 in decimal.
    let mut pexpire = command("PEXPIRE", 2, key.len() + 20);
    pexpire.arg(key).arg(millis(ttl));
    pipe.add_command(pexpire).ignore();
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The fields of an HGETALL reply (RESP2 flat array or RESP3 map). Field names that are not
/// UTF-8 cannot be ours and are skipped.
fn to_fields(value: Value) -> Fields {
    fn field(pair: (Value, Value)) -> Option<(String, Vec<u8>)> {
        match pair {
            (Value::BulkString(name), Value::BulkString(value)) => {
                String::from_utf8(name).ok().map(|name| (name, value))
            }
            _ => None,
        }
    }
    match value {
        Value::Map(pairs) => pairs.into_iter().filter_map(field).collect(),
        Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?)))
                .filter_map(field)
                .collect()
        }
        _ => Fields::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply out of place may be another request's session: only its type and size may
    /// reach a log.
    #[test]
    fn an_unexpected_reply_is_described_by_its_type_and_size_only() {
        let session = b"d:user\x01\"alice@example.com\"".to_vec();
        let replies = [
            Value::BulkString(session.clone()),
            Value::Array(vec![Value::BulkString(session.clone())]),
            Value::Map(vec![(
                Value::BulkString(b"d:user".to_vec()),
                Value::BulkString(session),
            )]),
            Value::SimpleString("alice@example.com".into()),
        ];
        let write = Write::Delete { key: "k".into() };
        for reply in replies {
            let e = answer(&write, std::slice::from_ref(&reply)).unwrap_err();
            let logged = format!("{e} {e:?}");
            assert!(!logged.contains("alice"), "{logged}");
            assert!(
                logged.contains("bytes") || logged.contains("items") || logged.contains("pairs")
            );
        }
        assert_eq!(answer(&write, &[Value::Int(1)]).unwrap(), Outcome::Applied);
        assert_eq!(answer(&write, &[Value::Int(0)]).unwrap(), Outcome::Gone);
    }
}
