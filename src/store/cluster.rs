//! The Redis store on a Redis Cluster, over either transport.
//!
//! Every operation of the store touches one key, so it goes to the one node that serves
//! that key's slot: each node is a store of its own of the chosen transport (a pool, or a
//! connection per worker), with its own batch. Concurrent requests whose keys live on one
//! node share that node's round trips exactly as on a single Redis (Redis accepts a pipeline
//! of single-key commands for different slots, as long as the node serves them all); a
//! request still costs one round trip, to its node. Scripts are loaded per node, as each
//! node's store does after a `NOSCRIPT`.
//!
//! The slot map is ours: asked of the cluster with `CLUSTER SLOTS` on first use and after a
//! node failed (dropped, refused, timed out: the failover may have moved its slots), and
//! corrected slot by slot by `MOVED` replies. An `ASK` reply (a slot half-way through a
//! migration) sends that request's commands once to the node named, each after `ASKING`.
//! redis-rs's cluster clients are not used: the synchronous one routes a whole pipeline by
//! its first key and refuses `EVALSHA` in pipelines, the asynchronous one refuses a pipeline
//! whose keys span slots; neither could keep our batches.

use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
        Weak,
    },
    thread,
    time::{Duration, Instant},
};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, RedisError,
    ServerErrorKind, Value,
};
use tokio::sync::oneshot;

use super::{
    batch::{Replies, Sender},
    commands::{Commands, RedisOptions},
    MultiplexedStore, RedisStore,
};
use crate::{
    error::{ConfigError, StoreError, StoreErrorKind},
    Transport,
};

/// Hash slots of a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// A slot no node is known to serve.
const UNSERVED: u16 = u16::MAX;

/// Nodes met at most (indices stay below [`UNSERVED`]).
const MAX_NODES: usize = 4096;

/// Redirects one operation follows before it fails: a slot moves once per migration, so
/// more than two in a row means the cluster is being reconfigured faster than it answers.
const MAX_REDIRECTS: usize = 5;

/// Two slot-map refreshes are at least this far apart: requests that failed on one node
/// together ask once.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_millis(50);

/// After a node failed, the map is asked for this often (a replica's promotion is seen
/// within this, even while the circuit breaker keeps requests away)...
const POLL_EVERY: Duration = Duration::from_millis(200);

/// ...for this long after the last failure (or `MOVED`).
const KEEP_ASKING: Duration = Duration::from_secs(30);

/// The slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) of the key, or of its
/// hash tag (the part between the first `{` and the next `}`, if not empty), modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let len = rest.iter().position(|&b| b == b'}')?;
        (len > 0).then(|| &rest[..len])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection; one table
/// lookup per byte. Ours rather than a crate's: eight lines on the hot path of every
/// request, checked against Redis's own `CLUSTER KEYSLOT` in the cluster tests.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// One node's store, of the chosen transport.
#[derive(Clone)]
pub(crate) enum Node {
    Pool(RedisStore),
    Multiplexed(MultiplexedStore),
}

impl Sender for Node {
    fn commands(&self) -> &Commands {
        match self {
            Node::Pool(s) => s.commands(),
            Node::Multiplexed(s) => s.commands(),
        }
    }

    fn enqueue(
        &self,
        key: &str,
        build: impl Fn(&mut Pipeline),
    ) -> Result<oneshot::Receiver<Replies>, StoreError> {
        match self {
            Node::Pool(s) => s.enqueue(key, build),
            Node::Multiplexed(s) => s.enqueue(key, build),
        }
    }
}

/// The Redis-backed store on a cluster.
#[derive(Clone)]
pub(crate) struct ClusterStore {
    shared: Arc<Shared>,
    /// Multiplexed transport: this worker's stores of the nodes, by node index, opened on
    /// first use; `None` in the copy the configuration holds, and on the pool transport
    /// (whose node stores are shared by every worker).
    worker: Option<Arc<Mutex<Vec<Option<Node>>>>>,
}

struct Shared {
    /// The first node's settings (credentials, TLS, protocol); every node is reached with
    /// them, at its own address.
    base: ConnectionInfo,
    options: RedisOptions,
    transport: Transport,
    /// Builds the writes and reads their answers ([`Sender::commands`]).
    commands: Commands,
    topology: RwLock<Topology>,
    /// Held by the one request that asks for the first slot map; the others wait, then use
    /// it.
    refreshing: tokio::sync::Mutex<()>,
    /// Wakes the thread that asks for the map again after a failure ([`watch`]).
    signal: Arc<Signal>,
}

/// Between the requests and the map's thread: failures seen, and whether the store is gone.
#[derive(Default)]
struct Signal {
    state: Mutex<Kicks>,
    changed: Condvar,
}

#[derive(Default)]
struct Kicks {
    kicked: bool,
    last: Option<Instant>,
    closed: bool,
}

impl Drop for Shared {
    /// Ends the map's thread.
    fn drop(&mut self) {
        lock(&self.signal.state).closed = true;
        self.signal.changed.notify_all();
    }
}

struct Topology {
    /// Moves on with every refresh of the whole map.
    epoch: u64,
    /// The node index serving each slot ([`UNSERVED`] if none is known).
    slots: Vec<u16>,
    /// Every node met: the ones given, and the masters and replicas the cluster named.
    /// Never removed (indices stay valid); a node that left serves no slot.
    nodes: Vec<NodeEntry>,
    refreshed: Option<Instant>,
    /// Where the next refresh starts asking (in turn, so one dead node is not always first).
    next_asked: usize,
}

struct NodeEntry {
    host: String,
    port: u16,
    node: Node,
}

impl ClusterStore {
    /// A store on the cluster that the nodes at `urls` belong to (one is enough; the others
    /// are asked when it does not answer). Nothing is connected until the first request.
    pub(crate) fn open(
        urls: &[String],
        options: &RedisOptions,
        transport: Transport,
    ) -> Result<ClusterStore, ConfigError> {
        let invalid = |reason| ConfigError::InvalidOption {
            option: "builder_cluster",
            reason,
        };
        if urls.is_empty() {
            return Err(invalid("needs the URL of at least one node of the cluster"));
        }
        let mut seeds = Vec::with_capacity(urls.len());
        for url in urls {
            let client = super::redis::client(url, options.tls.as_ref())?;
            let info = client.get_connection_info().clone();
            if info.redis_settings().db() != 0 {
                return Err(invalid("a Redis Cluster has database 0 only"));
            }
            let Some((host, port)) = host_port(info.addr()) else {
                return Err(invalid(
                    "cluster nodes are TCP addresses (redis:// or rediss://)",
                ));
            };
            seeds.push((info, host, port));
        }
        let base = seeds[0].0.clone();
        let cluster = ClusterStore {
            shared: Arc::new(Shared {
                base,
                options: options.clone(),
                transport,
                commands: Commands::new(options),
                topology: RwLock::new(Topology {
                    epoch: 0,
                    slots: vec![UNSERVED; SLOTS],
                    nodes: Vec::new(),
                    refreshed: None,
                    next_asked: 0,
                }),
                refreshing: tokio::sync::Mutex::new(()),
                signal: Arc::default(),
            }),
            worker: None,
        };
        for (_, host, port) in &seeds {
            cluster.shared.index_of(host, *port);
        }
        let (shared, signal) = (
            Arc::downgrade(&cluster.shared),
            Arc::clone(&cluster.shared.signal),
        );
        thread::Builder::new()
            .name("redis-cluster-map".into())
            .spawn(move || watch(&shared, &signal))
            .map_err(|_| invalid("could not start the thread that follows the slot map"))?;
        Ok(cluster)
    }

    /// A copy for one actix worker: on the multiplexed transport, with connections of its
    /// own to each node, opened on first use on that worker's runtime.
    pub(crate) fn for_worker(&self) -> ClusterStore {
        ClusterStore {
            shared: Arc::clone(&self.shared),
            worker: (self.shared.transport == Transport::Multiplexed)
                .then(|| Arc::new(Mutex::new(Vec::new()))),
        }
    }

    /// The store of node `index` as this worker uses it.
    pub(crate) fn node(&self, index: usize) -> Node {
        let node = self.shared.topology().nodes[index].node.clone();
        match (&self.worker, node) {
            (Some(worker), Node::Multiplexed(shared)) => {
                let mut mine = lock(worker);
                if mine.len() <= index {
                    mine.resize(index + 1, None);
                }
                mine[index]
                    .get_or_insert_with(|| Node::Multiplexed(shared.for_worker()))
                    .clone()
            }
            (_, node) => node,
        }
    }

    /// The node serving `slot` and the map's epoch, asking the cluster first if no node is
    /// known for it.
    async fn serving(&self, slot: u16) -> Result<(usize, u64), StoreError> {
        let (served, epoch) = self.shared.topology().serving(slot);
        if let Some(index) = served {
            return Ok((index, epoch));
        }
        self.refresh(epoch).await;
        match self.shared.topology().serving(slot) {
            (Some(index), epoch) => Ok((index, epoch)),
            (None, _) => Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "no node of the Redis cluster is known to serve this key's slot",
            )),
        }
    }

    /// The node serving `key`'s slot by the map as it is (`None` if none is known yet).
    pub(crate) fn node_of(&self, key: &str) -> Option<usize> {
        self.shared.topology().serving(slot(key.as_bytes())).0
    }

    /// The nodes serving slots by the map as it is (none before the first map), in index
    /// order.
    pub(crate) fn serving_nodes(&self) -> Vec<usize> {
        let topology = self.shared.topology();
        let mut nodes: Vec<usize> = topology
            .slots
            .iter()
            .filter(|&&index| index != UNSERVED)
            .map(|&index| usize::from(index))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The masters serving slots now (asking the cluster first if no map is known), in
    /// index order: for listings, which go through every master in turn.
    pub(crate) async fn masters(&self) -> Result<Vec<usize>, StoreError> {
        let epoch = self.shared.topology().epoch;
        if epoch == 0 {
            self.refresh(epoch).await;
        }
        if self.shared.topology().epoch == 0 {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "no node of the Redis cluster answered",
            ));
        }
        Ok(self.serving_nodes())
    }

    /// Asks the cluster for its slot map (`CLUSTER SLOTS`), node after node until one
    /// answers, unless another request did since the map of `epoch`: the first map, asked
    /// by the first requests. After a failure the map's thread asks ([`watch`]).
    async fn refresh(&self, epoch: u64) {
        let _one = self.shared.refreshing.lock().await;
        {
            let topology = self.shared.topology();
            let recent = topology
                .refreshed
                .is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY);
            if topology.epoch != epoch || recent {
                return;
            }
        }
        for (host, port) in self.shared.candidates() {
            match self.shared.ask_slots(&host, port).await {
                Ok(ranges) => {
                    self.shared.apply(&ranges);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, port, "a cluster node did not give its slot map");
                }
            }
        }
        tracing::warn!("no node of the Redis cluster answered CLUSTER SLOTS");
        self.shared.topology_mut().refreshed = Some(Instant::now());
        self.shared.kick();
    }
}

impl Shared {
    /// Every known node, those that serve slots first, starting with another one each
    /// time (so that one dead node is not always asked first).
    fn candidates(&self) -> Vec<(String, u16)> {
        let mut topology = self.topology_mut();
        let count = topology.nodes.len();
        let start = topology.next_asked % count.max(1);
        topology.next_asked = topology.next_asked.wrapping_add(1);
        let mut serving = vec![false; count];
        for &index in topology.slots.iter().filter(|&&i| i != UNSERVED) {
            if let Some(serves) = serving.get_mut(usize::from(index)) {
                *serves = true;
            }
        }
        let mut order: Vec<usize> = (0..count).map(|i| (start + i) % count).collect();
        // Stable: the rotation stays within each group.
        order.sort_by_key(|&i| !serving[i]);
        order
            .into_iter()
            .map(|i| {
                let node = &topology.nodes[i];
                (node.host.clone(), node.port)
            })
            .collect()
    }

    /// A node failed (or an operation on it was given up): the map's thread asks for the
    /// map again, and keeps asking for a while.
    fn kick(&self) {
        let mut kicks = lock(&self.signal.state);
        kicks.kicked = true;
        kicks.last = Some(Instant::now());
        self.signal.changed.notify_one();
    }

    /// The map asked of one node after the other until one answers, on connections of the
    /// map's thread's own.
    fn refresh_blocking(&self) {
        for (host, port) in self.candidates() {
            match self.ask_slots_blocking(&host, port) {
                Ok(ranges) => return self.apply(&ranges),
                Err(e) => {
                    tracing::debug!(error = %e, port, "a cluster node did not give its slot map");
                }
            }
        }
        tracing::warn!("no node of the Redis cluster answered CLUSTER SLOTS");
    }

    fn ask_slots_blocking(&self, host: &str, port: u16) -> Result<Vec<Range>, RedisError> {
        let client = redis::Client::open(self.node_info(host, port))?;
        let mut conn = client.get_connection_with_timeout(self.options.connect_timeout)?;
        conn.set_read_timeout(Some(self.options.command_timeout))?;
        conn.set_write_timeout(Some(self.options.command_timeout))?;
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
        slot_map(reply, host)
    }

    fn topology(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn topology_mut(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The index of the node at `host:port`, registered (with a store of its own, which
    /// connects on first use) if it is new.
    fn index_of(&self, host: &str, port: u16) -> usize {
        if let Some(index) = self.topology().find(host, port) {
            return index;
        }
        // Opened outside the lock (a pool starts its threads): requests go on meanwhile. Two
        // requests that meet a new node at once open two; one is kept.
        let node = self.open_node(host, port);
        let mut topology = self.topology_mut();
        if let Some(index) = topology.find(host, port) {
            return index;
        }
        if topology.nodes.len() >= MAX_NODES {
            // Never in a real cluster (Redis Cluster's own limit is about 1000 nodes): the
            // slot goes to the first node, whose MOVED sends it on.
            tracing::error!(port, "too many Redis cluster nodes met; not adding another");
            return 0;
        }
        topology.nodes.push(NodeEntry {
            host: host.to_owned(),
            port,
            node,
        });
        topology.nodes.len() - 1
    }

    /// How to reach the node at `host:port`: the first node's settings at that address.
    fn node_info(&self, host: &str, port: u16) -> ConnectionInfo {
        let addr = match self.base.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        self.base.clone().set_addr(addr)
    }

    fn open_node(&self, host: &str, port: u16) -> Node {
        let client = redis::Client::open(self.node_info(host, port))
            .expect("a connection info built from a valid one");
        match self.transport {
            // `capacity` connections per node (one by default on a cluster, see
            // `builder_cluster`).
            Transport::Pool => Node::Pool(RedisStore::for_client(client, &self.options)),
            Transport::Multiplexed => {
                Node::Multiplexed(MultiplexedStore::for_client(client, &self.options))
            }
        }
    }

    /// `CLUSTER SLOTS` of the node at `host:port`, on a connection of its own (a node that
    /// is down costs one connect timeout, not a checkout of its pool).
    async fn ask_slots(&self, host: &str, port: u16) -> Result<Vec<Range>, RedisError> {
        let client = redis::Client::open(self.node_info(host, port))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.command_timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        slot_map(reply, host)
    }

    /// Takes `ranges` as the slot map. Replicas are registered too: they are asked for the
    /// map when their master does not answer.
    fn apply(&self, ranges: &[Range]) {
        if ranges.is_empty() {
            // A node that has not joined the cluster (yet) knows no slot: not a map.
            tracing::debug!("a cluster node gave an empty slot map; kept the one known");
            return;
        }
        let served: Vec<(usize, usize, u16)> = ranges
            .iter()
            .map(|range| {
                for (host, port) in &range.replicas {
                    self.index_of(host, *port);
                }
                let master = self.index_of(&range.master.0, range.master.1);
                let end = usize::from(range.end).min(SLOTS - 1);
                let index = u16::try_from(master).unwrap_or(UNSERVED);
                (usize::from(range.start), end, index)
            })
            .collect();
        // Only the slots the reply covers move: one that names no master for a slot (a
        // master failed without a replica, or a node that knows less) leaves it where it was.
        let mut topology = self.topology_mut();
        for (start, end, index) in served {
            if start <= end {
                topology.slots[start..=end].fill(index);
            }
        }
        topology.epoch += 1;
        topology.refreshed = Some(Instant::now());
    }
}

impl Topology {
    fn find(&self, host: &str, port: u16) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.port == port && node.host == host)
    }

    fn serving(&self, slot: u16) -> (Option<usize>, u64) {
        let index = self.slots[usize::from(slot)];
        (
            (index != UNSERVED).then_some(usize::from(index)),
            self.epoch,
        )
    }
}

impl Sender for ClusterStore {
    fn commands(&self) -> &Commands {
        &self.shared.commands
    }

    /// To the node the map says serves `key` (no redirect followed: for writes nobody
    /// awaits).
    fn enqueue(
        &self,
        key: &str,
        build: impl Fn(&mut Pipeline),
    ) -> Result<oneshot::Receiver<Replies>, StoreError> {
        let (served, _) = self.shared.topology().serving(slot(key.as_bytes()));
        let Some(index) = served else {
            return Err(StoreErrorKind::Unavailable.into());
        };
        self.node(index).enqueue(key, build)
    }

    /// To the node serving `key`, following `MOVED` (the map is corrected for that slot)
    /// and `ASK` (this request alone goes to the node named, once). A node that failed
    /// makes the map be asked for again before the error goes up to the retry.
    async fn query(&self, key: &str, build: impl Fn(&mut Pipeline)) -> Replies {
        let slot = slot(key.as_bytes());
        let mut asked: Option<usize> = None;
        for _ in 0..=MAX_REDIRECTS {
            let (index, asking) = match asked.take() {
                Some(index) => (index, true),
                None => (self.serving(slot).await?.0, false),
            };
            let node = self.node(index);
            // Given up while waiting (the request's budget ran out): most likely a node that
            // does not answer, so the map is asked for again.
            let mut waiting = Waiting {
                shared: &self.shared,
                answered: false,
            };
            let replies = if asking {
                node.query(key, |pipe| each_asking(pipe, &build))
                    .await
                    .map(without_asking)
            } else {
                node.query(key, &build).await
            };
            waiting.answered = true;
            let e = match replies {
                Ok(replies) => return Ok(replies),
                Err(e) => e,
            };
            match redirect(&e) {
                Some(Redirect { moved, host, port }) => {
                    let host = if host.is_empty() || host == "?" {
                        self.shared.topology().nodes[index].host.clone()
                    } else {
                        host
                    };
                    let to = self.shared.index_of(&host, port);
                    if moved {
                        let mut topology = self.shared.topology_mut();
                        topology.slots[usize::from(slot)] = u16::try_from(to).unwrap_or(UNSERVED);
                        drop(topology);
                        // A resharding or a failover moves more than this slot: the map's
                        // thread asks for the whole map.
                        self.shared.kick();
                    } else {
                        asked = Some(to);
                    }
                }
                None => {
                    if matches!(
                        e.kind(),
                        StoreErrorKind::Unavailable | StoreErrorKind::Timeout
                    ) {
                        // The node may be gone, its slots on a promoted replica: the retry
                        // finds the map asked for again.
                        self.shared.kick();
                    }
                    return Err(e);
                }
            }
        }
        Err(StoreError::new(
            StoreErrorKind::Unavailable,
            "the Redis cluster redirected an operation too often",
        ))
    }
}

/// Kicks the map's thread if dropped before the node answered.
struct Waiting<'a> {
    shared: &'a Shared,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.kick();
        }
    }
}

/// The map's thread: asks for the slot map when a request saw a node fail, then every
/// [`POLL_EVERY`] for [`KEEP_ASKING`] after the last failure (a failover takes the
/// cluster a few seconds), and ends with the store. A thread of its own, not a task: it
/// works for both transports, and no request that gives up can cancel it.
fn watch(shared: &Weak<Shared>, signal: &Signal) {
    loop {
        {
            let mut kicks = lock(&signal.state);
            loop {
                if kicks.closed {
                    return;
                }
                if kicks.kicked {
                    break;
                }
                let troubled = kicks.last.is_some_and(|at| at.elapsed() < KEEP_ASKING);
                if troubled {
                    let (next, waited) = signal
                        .changed
                        .wait_timeout(kicks, POLL_EVERY)
                        .unwrap_or_else(PoisonError::into_inner);
                    kicks = next;
                    if waited.timed_out() {
                        break;
                    }
                } else {
                    kicks = signal
                        .changed
                        .wait(kicks)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            kicks.kicked = false;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.refresh_blocking();
        drop(shared);
        thread::sleep(REFRESH_AT_MOST_EVERY);
    }
}

/// `build`'s commands, each after `ASKING` (which lets the next command, only, through to a
/// slot being imported).
fn each_asking(pipe: &mut Pipeline, build: &impl Fn(&mut Pipeline)) {
    let mut own = redis::pipe();
    build(&mut own);
    for cmd in own.cmd_iter() {
        pipe.cmd("ASKING");
        pipe.add_command(cmd.clone());
    }
}

/// The replies of [`each_asking`]'s commands without those of the `ASKING`s.
fn without_asking(replies: Vec<Value>) -> Vec<Value> {
    replies.into_iter().skip(1).step_by(2).collect()
}

/// A `MOVED` or `ASK` reply: where to go.
struct Redirect {
    moved: bool,
    host: String,
    port: u16,
}

fn redirect(e: &StoreError) -> Option<Redirect> {
    let e = e.source_as::<RedisError>()?;
    let moved = match e.kind() {
        ErrorKind::Server(ServerErrorKind::Moved) => true,
        ErrorKind::Server(ServerErrorKind::Ask) => false,
        _ => return None,
    };
    let (addr, _slot) = e.redirect_node()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some(Redirect {
        moved,
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

/// One range of `CLUSTER SLOTS`: its slots, the master serving them, its replicas.
#[derive(Debug, PartialEq, Eq)]
struct Range {
    start: u16,
    end: u16,
    master: (String, u16),
    replicas: Vec<(String, u16)>,
}

/// A `CLUSTER SLOTS` reply of the node on `host` as a slot map: its ranges, if it has any
/// (a node that has not joined the cluster knows none, which is no map).
fn slot_map(reply: Value, host: &str) -> Result<Vec<Range>, RedisError> {
    parse_slots(reply, host)
        .filter(|ranges| !ranges.is_empty())
        .ok_or_else(|| {
            RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "unexpected CLUSTER SLOTS reply",
            ))
        })
}

/// The ranges of a `CLUSTER SLOTS` reply asked of the node on `asked` (a node whose host is
/// empty or unknown is on that host).
fn parse_slots(reply: Value, asked: &str) -> Option<Vec<Range>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let int = |value: &Value| match value {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let node = |value: &Value| {
        let Value::Array(parts) = value else {
            return None;
        };
        let host = match parts.first()? {
            Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
            Value::SimpleString(host) => host.clone(),
            Value::Nil => String::new(),
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            asked.to_owned()
        } else {
            host
        };
        Some((host, int(parts.get(1)?)?))
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let (start, end) = (int(parts.first()?)?, int(parts.get(1)?)?);
            Some(Range {
                start,
                end,
                master: node(parts.get(2)?)?,
                replicas: parts.iter().skip(3).filter_map(node).collect(),
            })
        })
        .collect()
}

fn host_port(addr: &ConnectionAddr) -> Option<(String, u16)> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.clone(), *port))
        }
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // The CRC16 check value, and slots Redis's documentation and `CLUSTER KEYSLOT` give.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b""), 0);
        // Hash tags: the first {...} that is not empty.
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn the_slot_map_is_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.2", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let ranges = parse_slots(reply, "10.0.0.9").unwrap();
        assert_eq!(
            ranges,
            vec![
                Range {
                    start: 0,
                    end: 5460,
                    master: ("10.0.0.1".into(), 7000),
                    replicas: vec![("10.0.0.2".into(), 7003)],
                },
                Range {
                    start: 5461,
                    end: 16383,
                    master: ("10.0.0.9".into(), 7001),
                    replicas: vec![],
                },
            ]
        );
        assert!(parse_slots(Value::Int(1), "h").is_none());
        assert!(parse_slots(Value::Array(vec![Value::Int(1)]), "h").is_none());
    }

    #[test]
    fn an_empty_map_is_no_map_and_slots_a_reply_leaves_out_stay_where_they_were() {
        let cluster = ClusterStore::open(
            &["redis://127.0.0.1:7000".to_owned()],
            &RedisOptions::default(),
            Transport::Pool,
        )
        .unwrap();
        let range = |start, end, port| Range {
            start,
            end,
            master: ("127.0.0.1".into(), port),
            replicas: vec![("127.0.0.1".into(), port + 3)],
        };
        assert_eq!(cluster.node_of("k"), None, "nothing known before a map");
        cluster.shared.apply(&[range(0, 16383, 7000)]);
        let a = cluster.node_of("k").expect("served");
        assert_eq!(cluster.serving_nodes(), vec![a]);
        let epoch = cluster.shared.topology().epoch;
        cluster.shared.apply(&[]);
        assert_eq!(
            cluster.shared.topology().epoch,
            epoch,
            "an empty reply is no map"
        );
        assert_eq!(cluster.node_of("k"), Some(a));
        // `foo` is in slot 12182, `bar` in 5061: only the range given moves.
        cluster.shared.apply(&[range(12000, 12999, 7001)]);
        let b = cluster.node_of("foo").unwrap();
        assert_ne!(a, b);
        assert_eq!(cluster.node_of("bar"), Some(a));
        assert_eq!(cluster.serving_nodes().len(), 2);
        // The replicas are known (asked for the map when their masters do not answer), but
        // serve nothing.
        assert_eq!(cluster.shared.topology().nodes.len(), 4);
    }

    #[test]
    fn moved_and_ask_replies_name_where_to_go() {
        let error = |line: &str| {
            let Value::ServerError(e) = redis::parse_redis_value(line.as_bytes()).unwrap() else {
                panic!("an error reply");
            };
            StoreError::redis(RedisError::from(e))
        };
        let moved = redirect(&error("-MOVED 3999 127.0.0.1:6381\r\n")).unwrap();
        assert!(moved.moved && moved.host == "127.0.0.1" && moved.port == 6381);
        let ask = redirect(&error("-ASK 3999 ::1:6382\r\n")).unwrap();
        assert!(!ask.moved && ask.host == "::1" && ask.port == 6382);
        assert!(redirect(&error("-WRONGTYPE Operation\r\n")).is_none());
    }

    #[test]
    fn asked_commands_each_follow_asking_and_their_replies_come_back_alone() {
        let mut pipe = redis::pipe();
        each_asking(&mut pipe, &|p: &mut Pipeline| {
            p.cmd("HGETALL").arg("k");
            p.cmd("PEXPIRE").arg("k").arg(1);
        });
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert_eq!(packed.matches("ASKING").count(), 2);
        assert!(packed.find("ASKING").unwrap() < packed.find("HGETALL").unwrap());
        let replies = without_asking(vec![Value::Okay, Value::Int(1), Value::Okay, Value::Int(2)]);
        assert_eq!(replies, vec![Value::Int(1), Value::Int(2)]);
    }
}
