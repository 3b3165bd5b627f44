//! A loopback TCP proxy in front of a test redis-server: it counts round trips (how often the
//! client starts sending after Redis has answered) and can cut a connection right after Redis
//! answered, before the client reads the answer: the command ran, its reply is lost.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc, Mutex,
    },
    thread,
};

type Matcher = Box<dyn Fn(&[u8]) -> bool + Send>;

#[derive(Default)]
struct Shared {
    round_trips: AtomicU64,
    /// Replies to swallow (closing their connection), and which ones.
    cuts: Mutex<Option<(usize, Matcher)>>,
    stopped: AtomicBool,
}

/// The proxy; stops accepting when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

const CLIENT_SENT: u8 = 1;
const SERVER_SENT: u8 = 2;

impl Proxy {
    /// A proxy on a free loopback port to the Redis at `upstream` (a TCP address).
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let last = Arc::new(AtomicU8::new(0));
                let (c, s) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (shared, last2) = (Arc::clone(&accepting), Arc::clone(&last));
                thread::spawn(move || forward_requests(c, s, &shared, &last2));
                let shared = Arc::clone(&accepting);
                thread::spawn(move || forward_replies(server, client, &shared, &last));
            }
        });
        Proxy { addr, shared }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://` URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Round trips since the last reset.
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::SeqCst)
    }

    pub fn reset_round_trips(&self) {
        self.shared.round_trips.store(0, Ordering::SeqCst);
    }

    /// The next `n` replies for which `matches` is true never reach the client: their
    /// connection is closed instead, after Redis ran the command.
    pub fn cut_replies(&self, n: usize, matches: impl Fn(&[u8]) -> bool + Send + 'static) {
        *self.shared.cuts.lock().unwrap() = Some((n, Box::new(matches)));
    }

    /// How many of the cuts asked for are still to come.
    pub fn cuts_left(&self) -> usize {
        self.shared
            .cuts
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |(n, _)| *n)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn forward_requests(mut from: TcpStream, mut to: TcpStream, shared: &Shared, last: &AtomicU8) {
    let mut buf = vec![0u8; 64 * 1024];
    // A cluster replica's link to its master (through the master's proxy, at the port the
    // master announces) is not the client's traffic: its acknowledgements are not counted.
    let mut replication = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        replication = replication || buf[..n].windows(8).any(|w| w == b"REPLCONF");
        if last.swap(CLIENT_SENT, Ordering::SeqCst) != CLIENT_SENT && !replication {
            shared.round_trips.fetch_add(1, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn forward_replies(mut from: TcpStream, mut to: TcpStream, shared: &Shared, last: &AtomicU8) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let cut = {
            let mut cuts = shared.cuts.lock().unwrap();
            match cuts.as_mut() {
                Some((left, matches)) if *left > 0 && matches(&buf[..n]) => {
                    *left -= 1;
                    true
                }
                _ => false,
            }
        };
        if cut {
            break;
        }
        last.store(SERVER_SENT, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
