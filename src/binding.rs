//! Client binding: a session remembers a keyed digest of the User-Agent and of the client's
//! IP address (or network), and a request whose digest differs does not get it.

use std::{
    cell::OnceCell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use actix_web::{http::header, HttpRequest};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{callback::run_callback, key::Key, record::BOUND, store::Fields};

/// Which client IP address a session is bound to
/// ([`bind_to_ip`](crate::RedisSessionBuilder::bind_to_ip)), and where it is read from.
///
/// By default it is the TCP peer's address, and no header is believed: `X-Forwarded-For`
/// and `Forwarded` are written by whoever sends the request, so an attacker holding a stolen
/// cookie would simply send the victim's address in them. Behind a reverse proxy or load
/// balancer every peer is the proxy: name it with [`ClientIp::trust_proxies`], and the
/// address is then read from those headers, walking from the nearest hop outwards and
/// stopping at the first address that is not a trusted proxy (the client, or someone who
/// claims to be one: never further).
///
/// Mobile clients change addresses within their carrier's network as they move:
/// [`ClientIp::network`] binds to a prefix (/24 for IPv4 and /64 for IPv6 are common)
/// rather than to the exact address.
///
/// # Examples
///
/// ```
/// use actix_redis_session::{ClientIp, Key, RedisSession};
///
/// // Behind a load balancer on 10.0.0.0/8, bound to the client's /24 (or /64).
/// let client_ip = ClientIp::peer()
///     .trust_proxies(["10.0.0.0/8", "::1"])
///     .network(24, 64);
/// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
///     .bind_to_user_agent(true)
///     .bind_to_ip(client_ip)
///     .build()?;
/// # drop(sessions);
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIp {
    trusted: Vec<Net>,
    /// A `trust_proxies` entry that is no address or network, which the builder refuses.
    invalid: bool,
    v4_prefix: u8,
    v6_prefix: u8,
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp::peer()
    }
}

impl ClientIp {
    /// The TCP peer's exact address; no forwarding header is trusted. The default.
    pub fn peer() -> ClientIp {
        ClientIp {
            trusted: Vec::new(),
            invalid: false,
            v4_prefix: 32,
            v6_prefix: 128,
        }
    }

    /// Trusts these proxies to report the client's address in `Forwarded` (RFC 7239, read
    /// when present) or `X-Forwarded-For`. Each entry is an address (`"10.1.2.3"`, `"::1"`)
    /// or a network (`"10.0.0.0/8"`, `"fd00::/8"`); each call adds to the list. An entry
    /// that is neither makes [`build`](crate::RedisSessionBuilder::build) fail.
    ///
    /// Name only the proxies that overwrite or append to these headers: a trusted address
    /// that passes a client's own header through unchanged lets the client choose its
    /// address.
    pub fn trust_proxies<I, S>(mut self, proxies: I) -> ClientIp
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for proxy in proxies {
            match Net::parse(proxy.as_ref()) {
                Some(net) => self.trusted.push(net),
                None => self.invalid = true,
            }
        }
        self
    }

    /// Binds to the client's network rather than its address: the first `v4_prefix` bits of
    /// an IPv4 address (0 to 32), the first `v6_prefix` bits of an IPv6 one (0 to 128).
    /// Default: 32 and 128, the exact address. Prefixes out of range make
    /// [`build`](crate::RedisSessionBuilder::build) fail.
    pub fn network(mut self, v4_prefix: u8, v6_prefix: u8) -> ClientIp {
        self.v4_prefix = v4_prefix;
        self.v6_prefix = v6_prefix;
        self
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.invalid {
            return Err("a trusted proxy is neither an IP address nor a network (10.0.0.0/8)");
        }
        if self.v4_prefix > 32 || self.v6_prefix > 128 {
            return Err("network prefixes must be at most 32 (IPv4) and 128 (IPv6) bits");
        }
        Ok(())
    }

    /// The client's address as this policy sees it, masked to its network; `None` when the
    /// request has no peer address (a unix socket).
    pub(crate) fn resolve(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = canonical(req.peer_addr()?.ip());
        let client = if self.trusted.iter().any(|net| net.contains(peer)) {
            self.forwarded_client(req, peer)
        } else {
            peer
        };
        Some(self.mask(client))
    }

    /// The client's network for a device list: its address as this policy finds it
    /// (trusted proxies believed), cut to `/24` (IPv4) or `/64` (IPv6), as
    /// `203.0.113.0/24`; `None` without a peer address.
    pub(crate) fn device_network(&self, req: &HttpRequest) -> Option<String> {
        let device = ClientIp {
            v4_prefix: 24,
            v6_prefix: 64,
            ..self.clone()
        };
        Some(match device.resolve(req)? {
            IpAddr::V4(v4) => format!("{v4}/24"),
            IpAddr::V6(v6) => format!("{v6}/64"),
        })
    }

    /// Walks the forwarding chain from the nearest hop: each trusted hop's report of the one
    /// before it is believed, and nothing beyond the first hop that is not trusted.
    fn forwarded_client(&self, req: &HttpRequest, peer: IpAddr) -> IpAddr {
        let headers = req.headers();
        let forwarded: Vec<&str> = headers
            .get_all(header::FORWARDED)
            .filter_map(|v| v.to_str().ok())
            .collect();
        let hops: Vec<Option<IpAddr>> = if forwarded.is_empty() {
            headers
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|hop| parse_hop(hop.trim()))
                .collect()
        } else {
            forwarded
                .iter()
                .flat_map(|v| v.split(','))
                .map(forwarded_for)
                .collect()
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            if !self.trusted.iter().any(|net| net.contains(client)) {
                break;
            }
            match hop {
                Some(addr) => client = canonical(addr),
                // Obfuscated ("unknown", "_hidden") or malformed: the last hop that could be
                // told apart is the client as far as anyone can know.
                None => break,
            }
        }
        client
    }

    fn mask(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4) & prefix_mask_32(self.v4_prefix);
                IpAddr::V4(Ipv4Addr::from(bits))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & prefix_mask_128(self.v6_prefix);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        }
    }
}

fn prefix_mask_32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn prefix_mask_128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// An IPv4 address in IPv6 clothing (`::ffff:192.0.2.1`) is the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

/// An address or network (`10.0.0.0/8`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = canonical(addr.parse().ok()?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Net { addr, prefix })
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = prefix_mask_32(self.prefix);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = prefix_mask_128(self.prefix);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    if let Ok(addr) = hop.parse() {
        return Some(addr);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (addr, _port) = rest.split_once(']')?;
        return addr.parse().ok();
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(value.trim()))
            .flatten()
    })
}

/// Why a request did not get the session its cookie names
/// ([`on_binding_mismatch`](crate::RedisSessionBuilder::on_binding_mismatch)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindingMismatch {
    /// The User-Agent differs from the one the session was bound to.
    pub user_agent: bool,
    /// The client IP address (or network) differs.
    pub ip: bool,
}

/// The callback of [`on_binding_mismatch`](crate::RedisSessionBuilder::on_binding_mismatch).
pub(crate) type MismatchCallback = Arc<dyn Fn(&HttpRequest, &BindingMismatch) + Send + Sync>;

/// One middleware's binding policy.
#[derive(Clone)]
pub(crate) struct Binding {
    /// An HMAC state keyed with each key's binding sub-key, the current key first, prepared
    /// once so that a digest costs a clone and the data's blocks.
    keys: Vec<Hmac<Sha256>>,
    user_agent: bool,
    ip: Option<ClientIp>,
    on_mismatch: Option<MismatchCallback>,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// The digests of one client under one key: what `m:b` holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parts {
    ua: Option<[u8; 16]>,
    ip: Option<[u8; 16]>,
}

/// What a request's client is, as the binding sees it. Its digests are computed when a
/// session is loaded or created, not for requests that never touch the session.
#[derive(Debug, Default)]
pub(crate) struct Client {
    user_agent: Vec<u8>,
    ip: Option<IpAddr>,
    /// Under the current key.
    current: OnceCell<Parts>,
    /// `m:b` under the current key.
    value: OnceCell<Vec<u8>>,
}

/// What the binding check made of a stored session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Bound to this client as the configuration says: nothing to write.
    Bound,
    /// This client's, but not bound (yet) as the configuration says: write `m:b`.
    Rebind,
}

const UA: &[u8] = b"ua";
const IP: &[u8] = b"ip";

impl Binding {
    pub(crate) fn new(
        key: &Key,
        user_agent: bool,
        ip: Option<ClientIp>,
        on_mismatch: Option<MismatchCallback>,
    ) -> Option<Binding> {
        (user_agent || ip.is_some()).then(|| Binding {
            keys: key
                .all()
                .map(|keys| {
                    <Hmac<Sha256> as Mac>::new_from_slice(keys.bind())
                        .expect("HMAC takes keys of any length")
                })
                .collect(),
            user_agent,
            ip,
            on_mismatch,
        })
    }

    /// What the binding needs of this request.
    /// The client address policy of [`bind_to_ip`](crate::RedisSessionBuilder::bind_to_ip).
    pub(crate) fn client_ip(&self) -> Option<&ClientIp> {
        self.ip.as_ref()
    }

    pub(crate) fn client(&self, req: &HttpRequest) -> Client {
        Client {
            user_agent: if self.user_agent {
                req.headers()
                    .get(header::USER_AGENT)
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
            ip: self.ip.as_ref().and_then(|policy| policy.resolve(req)),
            ..Client::default()
        }
    }

    /// The `m:b` value for `client` under the current key: `ua=<hex>;ip=<hex>`, each part
    /// present when bound.
    pub(crate) fn value<'c>(&self, client: &'c Client) -> &'c [u8] {
        client.value.get_or_init(|| {
            let parts = self.current(client);
            let mut out = Vec::with_capacity(72);
            for (label, digest) in [(UA, parts.ua), (IP, parts.ip)] {
                let Some(digest) = digest else { continue };
                if !out.is_empty() {
                    out.push(b';');
                }
                out.extend_from_slice(label);
                out.push(b'=');
                for b in digest {
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                }
            }
            out
        })
    }

    fn current<'c>(&self, client: &'c Client) -> &'c Parts {
        client
            .current
            .get_or_init(|| self.parts(&self.keys[0], client))
    }

    fn parts(&self, key: &Hmac<Sha256>, client: &Client) -> Parts {
        Parts {
            ua: self.user_agent.then(|| digest(key, UA, &client.user_agent)),
            ip: self.ip.as_ref().map(|_| match client.ip {
                Some(IpAddr::V4(v4)) => digest(key, IP, &v4.octets()),
                Some(IpAddr::V6(v6)) => digest(key, IP, &v6.octets()),
                None => digest(key, IP, b"none"),
            }),
        }
    }

    /// Checks a stored session's `m:b` against this request's client. A part the session
    /// lacks (bound before that part was configured, or never bound) is adopted; a part that
    /// differs under the current key is compared under the previous ones; one that differs
    /// under every key is a mismatch.
    pub(crate) fn check(
        &self,
        client: &Client,
        fields: &Fields,
    ) -> Result<Checked, BindingMismatch> {
        let Some(stored) = fields.get(BOUND) else {
            return Ok(Checked::Rebind);
        };
        let stored = parse_stored(stored);
        let ua = self.judge(client, &stored, |p| p.ua);
        let ip = self.judge(client, &stored, |p| p.ip);
        match (ua, ip) {
            (Some(ua), Some(ip)) => Ok(if ua || ip {
                Checked::Rebind
            } else {
                Checked::Bound
            }),
            _ => Err(BindingMismatch {
                user_agent: ua.is_none(),
                ip: ip.is_none(),
            }),
        }
    }

    /// How one part (`pick`) of a stored binding compares with this client's: `Some(true)`
    /// if it must be written again (absent on one side, or under a previous key), `None` if
    /// it differs under every key.
    fn judge(
        &self,
        client: &Client,
        stored: &Parts,
        pick: fn(&Parts) -> Option<[u8; 16]>,
    ) -> Option<bool> {
        match (pick(self.current(client)), pick(stored)) {
            (None, None) => Some(false),
            // Bound to a part this configuration does not bind (written without it), or not
            // bound to it yet (adopted).
            (None, Some(_)) | (Some(_), None) => Some(true),
            (Some(expected), Some(seen)) if bool::from(expected.ct_eq(&seen)) => Some(false),
            // Rare: only a mismatch under the current key costs the previous keys' digests.
            (Some(_), Some(seen)) => self.keys[1..]
                .iter()
                .any(|key| {
                    pick(&self.parts(key, client)).is_some_and(|d| bool::from(d.ct_eq(&seen)))
                })
                .then_some(true),
        }
    }

    /// Tells of a mismatch: a warning (no id, no address, no User-Agent) and the
    /// application's callback, whose panic is caught and logged.
    pub(crate) fn report(&self, req: &HttpRequest, mismatch: &BindingMismatch) {
        tracing::warn!(
            user_agent = mismatch.user_agent,
            ip = mismatch.ip,
            "a session cookie came from another client than its session is bound to; \
             starting a fresh session"
        );
        if let Some(callback) = &self.on_mismatch {
            run_callback("on_binding_mismatch", || callback(req, mismatch));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn digest(key: &Hmac<Sha256>, label: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = key.clone();
    mac.update(label);
    mac.update(&[0]);
    mac.update(data);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The parts of a stored `m:b`; unreadable parts are left out (and so adopted anew).
fn parse_stored(raw: &[u8]) -> Parts {
    let mut parts = Parts::default();
    for part in raw.split(|&b| b == b';') {
        let Some(eq) = part.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (label, hex) = (&part[..eq], &part[eq + 1..]);
        if hex.len() != 32 {
            continue;
        }
        let mut digest = [0u8; 16];
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let ok = digest.iter_mut().enumerate().all(|(i, out)| {
            match (nibble(hex[2 * i]), nibble(hex[2 * i + 1])) {
                (Some(hi), Some(lo)) => {
                    *out = hi << 4 | lo;
                    true
                }
                _ => false,
            }
        });
        if !ok {
            continue;
        }
        match label {
            b"ua" => parts.ua = Some(digest),
            b"ip" => parts.ip = Some(digest),
            _ => {}
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use actix_web::test::TestRequest;

    use super::*;

    fn request(peer: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse::<SocketAddr>().unwrap());
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        req.to_http_request()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let peer_only = ClientIp::peer();
        let behind = ClientIp::peer().trust_proxies(["10.0.0.0/8", "::1"]);
        let xff = [("x-forwarded-for", "203.0.113.9, 10.1.1.1")];
        // Not a trusted peer: its headers are the client's own words.
        assert_eq!(
            peer_only.resolve(&request("10.0.0.1:1", &xff)),
            ip("10.0.0.1")
        );
        assert_eq!(
            behind.resolve(&request("192.0.2.1:1", &xff)),
            ip("192.0.2.1")
        );
        // Trusted: walk inwards-out past trusted hops, stop at the first other one.
        assert_eq!(
            behind.resolve(&request("10.0.0.1:1", &xff)),
            ip("203.0.113.9")
        );
        let spoofed = [("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.1.1.1")];
        assert_eq!(
            behind.resolve(&request("10.0.0.1:1", &spoofed)),
            ip("203.0.113.9")
        );
        // Several header lines count as one list, in order.
        let lines = [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.2.2.2"),
        ];
        assert_eq!(
            behind.resolve(&request("[::1]:1", &lines)),
            ip("203.0.113.9")
        );
        // Forwarded wins over X-Forwarded-For, with quoting, ports and IPv6.
        let fwd = [
            (
                "forwarded",
                "for=\"[2001:db8::17]:4711\";proto=https, for=10.3.3.3:80",
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ];
        assert_eq!(
            behind.resolve(&request("10.0.0.1:1", &fwd)),
            ip("2001:db8::17")
        );
        // An obfuscated hop: the last one that could be told apart.
        let hidden = [("forwarded", "for=unknown, for=10.3.3.3")];
        assert_eq!(
            behind.resolve(&request("10.0.0.1:1", &hidden)),
            ip("10.3.3.3")
        );
        // No header at all: the proxy itself.
        assert_eq!(behind.resolve(&request("10.0.0.1:1", &[])), ip("10.0.0.1"));
        // IPv4-mapped IPv6 peers are IPv4.
        assert_eq!(
            behind.resolve(&request("[::ffff:10.0.0.1]:1", &xff)),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn networks_mask_addresses_and_parse_strictly() {
        let net = ClientIp::peer().network(24, 64);
        assert_eq!(net.resolve(&request("192.0.2.77:1", &[])), ip("192.0.2.0"));
        assert_eq!(
            net.resolve(&request("[2001:db8:1:2:3:4:5:6]:1", &[])),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            ClientIp::peer()
                .network(0, 0)
                .resolve(&request("192.0.2.77:1", &[])),
            ip("0.0.0.0")
        );
        assert!(ClientIp::peer().network(33, 64).check().is_err());
        assert!(ClientIp::peer().network(32, 129).check().is_err());
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "localhost",
            "::1/200",
            "1.2.3.4/+8",
        ] {
            assert!(
                ClientIp::peer().trust_proxies([bad]).check().is_err(),
                "{bad}"
            );
        }
        let net = Net::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1").unwrap()));
        assert!(!net.contains(ip("11.0.0.1").unwrap()));
        assert!(!net.contains(ip("::a00:1").unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("8.8.8.8").unwrap()));
    }

    fn fields(binding: &Binding, client: &Client) -> Fields {
        [(BOUND.to_owned(), binding.value(client).to_vec())]
            .into_iter()
            .collect()
    }

    #[test]
    fn the_digest_tells_clients_apart_adopts_new_parts_and_follows_rotation() {
        let key = Key::from_bytes(&[5; 64]).unwrap();
        let both = Binding::new(&key, true, Some(ClientIp::peer()), None).unwrap();
        let client = |ua: &str, peer: &str| both.client(&request(peer, &[("user-agent", ua)]));
        let home = client("Firefox", "192.0.2.1:5");
        let stored = fields(&both, &home);
        assert!(!String::from_utf8_lossy(&stored[BOUND]).contains("Firefox"));
        assert_eq!(both.check(&home, &stored), Ok(Checked::Bound));
        assert_eq!(
            both.check(&client("Firefox", "192.0.2.1:6"), &stored),
            Ok(Checked::Bound)
        );
        assert_eq!(
            both.check(&client("curl", "192.0.2.1:5"), &stored),
            Err(BindingMismatch {
                user_agent: true,
                ip: false
            })
        );
        assert_eq!(
            both.check(&client("curl", "192.0.2.2:5"), &stored),
            Err(BindingMismatch {
                user_agent: true,
                ip: true
            })
        );
        // Never bound, or bound to the User-Agent only before IP binding was turned on.
        assert_eq!(both.check(&home, &Fields::new()), Ok(Checked::Rebind));
        let ua_only = Binding::new(&key, true, None, None).unwrap();
        // (A client's digests are its binding's: cached for the request.)
        let home_then = ua_only.client(&request("192.0.2.1:5", &[("user-agent", "Firefox")]));
        let older = fields(&ua_only, &home_then);
        assert_eq!(both.check(&home, &older), Ok(Checked::Rebind));
        assert!(both.check(&client("curl", "192.0.2.1:5"), &older).is_err());
        // Garbage is no binding: adopted (the record itself is sealed or signed elsewhere).
        let junk: Fields = [(BOUND.to_owned(), b"ua=zz".to_vec())]
            .into_iter()
            .collect();
        assert_eq!(both.check(&home, &junk), Ok(Checked::Rebind));
        // A digest under a previous key matches, and is rewritten.
        let rotated = Key::from_bytes(&[6; 64])
            .unwrap()
            .previous_keys([key.clone()]);
        let rotated = Binding::new(&rotated, true, Some(ClientIp::peer()), None).unwrap();
        let home_of = |b: &Binding| b.client(&request("192.0.2.1:5", &[("user-agent", "Firefox")]));
        assert_eq!(
            rotated.check(&home_of(&rotated), &stored),
            Ok(Checked::Rebind)
        );
        // Another key altogether: another digest.
        let other = Binding::new(
            &Key::from_bytes(&[8; 64]).unwrap(),
            true,
            Some(ClientIp::peer()),
            None,
        )
        .unwrap();
        assert!(other.check(&home_of(&other), &stored).is_err());
        assert!(Binding::new(&key, false, None, None).is_none());
    }
}
