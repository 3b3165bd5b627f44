//! Security hardening against real Redis and real HTTP: encryption at rest, compression,
//! client binding and the presets. (The whole acceptance suite also runs with all of them on:
//! `hardened::*` in tests/acceptance.rs.)

mod common;

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_redis_session::{store::FileStore, ClientIp, RedisSession, RedisSessionBuilder};
use common::{key, serve, Client, RedisServer};
use redis::Commands;

/// Every field of every key in Redis: `(key, field, value)`.
fn dump(server: &RedisServer) -> Vec<(String, String, Vec<u8>)> {
    let mut conn = server.conn();
    let mut out = Vec::new();
    for k in server.keys() {
        let fields: Vec<(String, Vec<u8>)> = conn.hgetall(&k).unwrap();
        out.extend(fields.into_iter().map(|(f, v)| (k.clone(), f, v)));
    }
    out
}

/// The stored form of field `field` of the only session in Redis.
fn stored(server: &RedisServer, field: &str) -> Vec<u8> {
    let keys = server.keys();
    assert_eq!(keys.len(), 1, "one session: {keys:?}");
    server.conn().hget(&keys[0], field).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn redis(server: &RedisServer) -> RedisSessionBuilder {
    RedisSession::builder(server.url(), key(1))
}

#[actix_web::test]
async fn with_encryption_no_value_or_id_reaches_redis_or_the_file_store() {
    let markers = ["MARKERalpha", "MARKERbeta"];
    let server = RedisServer::start();
    let srv = serve(redis(&server).encrypt_at_rest(true).build().unwrap());
    let mut client = Client::new(&srv);
    client.get(&format!("/set/a/{}", markers[0])).await;
    client.get(&format!("/set/b/{}", markers[1])).await;
    client.get("/cart/add/7").await;
    client.get("/flash/send/info/MARKERflash").await;
    assert_eq!(
        client.get("/get/a").await.body,
        format!("\"{}\"", markers[0])
    );
    let cookie = client.jar["sid"].clone();
    let id = cookie.split('.').next().unwrap();
    let fields = dump(&server);
    assert!(fields.len() >= 5, "{fields:?}");
    for (k, field, value) in &fields {
        assert!(
            !k.contains(id) && !contains(value, id),
            "the id in {k}/{field}"
        );
        assert!(
            !contains(value, "MARKER"),
            "a value in the clear: {k}/{field}"
        );
        if field.starts_with("d:") || field.starts_with("t:") || field.starts_with("f:") {
            assert_eq!(value[0] & 0x20, 0x20, "{field} not sealed");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    let srv = serve(
        RedisSession::builder_with(store, key(1))
            .encrypt_at_rest(true)
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/set/a/MARKERfile").await;
    assert_eq!(client.get("/get/a").await.body, "\"MARKERfile\"");
    let id = client.jar["sid"].split('.').next().unwrap().to_owned();
    let mut files = 0;
    let mut dirs = vec![dir.path().to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let name = path.to_string_lossy();
            assert!(
                !contains(&bytes, "MARKER") && !contains(&bytes, &id),
                "{name}"
            );
            assert!(!name.contains(&id));
            files += usize::from(name.ends_with(".session"));
        }
    }
    assert_eq!(files, 1);
}

#[actix_web::test]
async fn a_sealed_value_moved_to_another_field_or_session_is_dropped_not_a_500() {
    let server = RedisServer::start();
    let srv = serve(redis(&server).encrypt_at_rest(true).build().unwrap());
    let mut alice = Client::new(&srv);
    alice.get("/set/role/admin").await;
    let mut mallory = Client::new(&srv);
    mallory.get("/set/role/guest").await;
    mallory.get("/set/name/mallory").await;
    let alice_key = format!("session:{}", alice.get("/handle").await.body);
    let mallory_key = format!("session:{}", mallory.get("/handle").await.body);
    let mut conn = server.conn();
    let sealed: Vec<u8> = conn.hget(&alice_key, "d:role").unwrap();

    // Alice's sealed "admin" pasted into Mallory's session, same field.
    let _: () = conn.hset(&mallory_key, "d:role", &sealed).unwrap();
    let res = mallory.get("/get/role").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    // The rest of the session is intact, and the pasted value is gone from Redis.
    assert_eq!(mallory.get("/get/name").await.body, "\"mallory\"");
    let left: Option<Vec<u8>> = conn.hget(&mallory_key, "d:role").unwrap();
    assert_eq!(left, None);

    // Moved to another field of Alice's own session.
    let _: () = conn.hset(&alice_key, "d:other", &sealed).unwrap();
    let res = alice.get("/get/other").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert_eq!(alice.get("/get/role").await.body, "\"admin\"");

    // Flipped bits, truncation, junk: dropped the same way.
    for bad in [
        {
            let mut v = sealed.clone();
            let last = v.len() - 1;
            v[last] ^= 1;
            v
        },
        sealed[..sealed.len() - 3].to_vec(),
        vec![0x21],
        vec![0x31, 0, 1, 2],
    ] {
        let _: () = conn.hset(&alice_key, "d:bad", &bad).unwrap();
        let res = alice.get("/get/bad").await;
        assert_eq!((res.status, res.body.as_str()), (200, "none"));
        assert_eq!(alice.get("/get/role").await.body, "\"admin\"");
    }
}

#[actix_web::test]
async fn turning_encryption_on_and_off_migrates_without_a_logout() {
    let server = RedisServer::start();
    let plain = serve(redis(&server).build().unwrap());
    let mut client = Client::new(&plain);
    client.get("/set/a/one").await;
    client.get("/cart/add/1").await;
    assert_eq!(stored(&server, "d:a")[0], 0x01);

    // On: the plain values are read, and sealed by the request that loaded them.
    let sealed = serve(redis(&server).encrypt_at_rest(true).build().unwrap());
    let mut client = Client::with_jar(&sealed, client.jar.clone());
    assert_eq!(client.get("/get/a").await.body, "\"one\"");
    assert_eq!(stored(&server, "d:a")[0], 0x21);
    assert_eq!(client.get("/cart").await.body, "[1]");
    // A plain value written meanwhile (by a node still on the old setting) reads too.
    let _: () = server
        .conn()
        .hset(server.keys()[0].clone(), "d:b", b"\x01\"two\"".as_slice())
        .unwrap();
    assert_eq!(client.get("/get/b").await.body, "\"two\"");
    assert_eq!(stored(&server, "d:b")[0], 0x21);

    // Off again: the sealed values are read, and written back plain.
    let plain = serve(redis(&server).build().unwrap());
    let mut client = Client::with_jar(&plain, client.jar.clone());
    assert_eq!(client.get("/get/a").await.body, "\"one\"");
    assert_eq!(stored(&server, "d:a"), b"\x01\"one\"");
    assert_eq!(stored(&server, "d:b"), b"\x01\"two\"");
}

#[actix_web::test]
async fn a_rotated_key_reads_old_values_and_seals_them_again_under_the_new_one() {
    let server = RedisServer::start();
    let old = serve(redis(&server).encrypt_at_rest(true).build().unwrap());
    let mut client = Client::new(&old);
    client.get("/set/a/kept").await;
    let before = stored(&server, "d:a");

    let rotated = RedisSession::builder(server.url(), key(2).previous_keys([key(1)]))
        .encrypt_at_rest(true)
        .build()
        .unwrap();
    let srv = serve(rotated);
    let mut client = Client::with_jar(&srv, client.jar.clone());
    assert_eq!(client.get("/get/a").await.body, "\"kept\"");
    assert_ne!(stored(&server, "d:a"), before, "sealed again");

    // Proof that it is under the new key: the new key alone reads it.
    let new_only = serve(
        RedisSession::builder(server.url(), key(2))
            .encrypt_at_rest(true)
            .build()
            .unwrap(),
    );
    let mut client = Client::with_jar(&new_only, client.jar.clone());
    assert_eq!(client.get("/get/a").await.body, "\"kept\"");
}

/// Values this build cannot read, in a record that encryption at rest moves: one in a codec
/// it does not know is sealed like the rest (not deleted), one under a header flag of a
/// later release stays exactly as it is; both live through writes and a renew.
#[actix_web::test]
async fn values_it_cannot_read_live_through_encryption_and_renew() {
    let server = RedisServer::start();
    let plain = serve(redis(&server).build().unwrap());
    let mut client = Client::new(&plain);
    client.get("/set/a/one").await;
    let record = server.keys()[0].clone();
    let later: &[u8] = b"\x41\"a later release's\"";
    let unknown_codec: &[u8] = b"\x0bpayload";
    let _: () = server
        .conn()
        .hset_multiple(&record, &[("d:later", later), ("d:codec", unknown_codec)])
        .unwrap();

    let sealed = serve(redis(&server).encrypt_at_rest(true).build().unwrap());
    let mut client = Client::with_jar(&sealed, client.jar.clone());
    assert_eq!(client.get("/get/a").await.body, "\"one\"");
    assert_eq!(client.get("/get/later").await.body, "none");
    assert_eq!(stored(&server, "d:a")[0], 0x21, "sealed");
    assert_eq!(stored(&server, "d:later"), later, "as it was");
    assert_eq!(
        stored(&server, "d:codec")[0],
        0x2b,
        "sealed, its codec kept"
    );
    assert_eq!(client.get("/set/b/two").await.body, "ok");
    client.get("/renew").await;
    assert_eq!(stored(&server, "d:later"), later, "moved with the renew");
    assert_eq!(stored(&server, "d:codec")[0], 0x2b, "moved with the renew");
    assert_eq!(client.get("/get/b").await.body, "\"two\"");

    // Back to plain: the sealed one comes back exactly as it was written.
    let plain = serve(redis(&server).build().unwrap());
    let mut client = Client::with_jar(&plain, client.jar.clone());
    assert_eq!(client.get("/get/a").await.body, "\"one\"");
    assert_eq!(stored(&server, "d:codec"), unknown_codec);
    assert_eq!(stored(&server, "d:later"), later);
}

#[actix_web::test]
async fn renew_seals_every_value_again_for_the_new_record() {
    let server = RedisServer::start();
    let srv = serve(redis(&server).encrypt_at_rest(true).build().unwrap());
    let mut client = Client::new(&srv);
    client.get("/set/a/kept").await;
    let before = stored(&server, "d:a");
    client.get("/renew").await;
    let after = stored(&server, "d:a");
    // Not the old ciphertext under a new name: that would not open there.
    assert_ne!(after, before);
    assert_eq!(client.get("/get/a").await.body, "\"kept\"");
}

#[actix_web::test]
async fn large_values_are_compressed_and_read_alike_either_way() {
    let server = RedisServer::start();
    let srv = serve(redis(&server).compress_above(256).build().unwrap());
    let mut client = Client::new(&srv);
    client.get("/big/20000").await;
    client.get("/set/small/x").await;
    let big = stored(&server, "d:big");
    assert_eq!(big[0], 0x11);
    assert!(big.len() < 1000, "{} bytes", big.len());
    assert_eq!(stored(&server, "d:small")[0], 0x01, "below the threshold");
    let res = client.get("/get/big").await;
    assert_eq!(res.body.len(), 20002);

    // Compression off: compressed values are still read.
    let srv = serve(redis(&server).build().unwrap());
    let mut client = Client::with_jar(&srv, client.jar.clone());
    assert_eq!(client.get("/get/big").await.body.len(), 20002);

    // With encryption: compressed, then sealed.
    let srv = serve(
        redis(&server)
            .compress_above(256)
            .encrypt_at_rest(true)
            .build()
            .unwrap(),
    );
    let mut client = Client::with_jar(&srv, client.jar.clone());
    client.get("/big/30000").await;
    let big = stored(&server, "d:big");
    assert_eq!(big[0], 0x31);
    assert!(big.len() < 1000);
    assert_eq!(client.get("/get/big").await.body.len(), 30002);
}

#[actix_web::test]
async fn a_compressed_value_that_would_expand_beyond_the_limit_is_dropped() {
    use std::io::Write as _;
    let server = RedisServer::start();
    let srv = serve(
        redis(&server)
            .compress_above(256)
            .max_value_size(64 * 1024)
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/set/a/kept").await;
    // 100 MB of JSON digits in about 100 KB of gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..100 {
        gz.write_all(&vec![b'1'; 1 << 20]).unwrap();
    }
    let mut bomb = vec![0x11];
    bomb.extend(gz.finish().unwrap());
    let _: () = server
        .conn()
        .hset(server.keys()[0].clone(), "d:bomb", bomb)
        .unwrap();
    let res = client.get("/get/bomb").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert_eq!(client.get("/get/a").await.body, "\"kept\"");
}

fn counting(builder: RedisSessionBuilder, count: &Arc<AtomicUsize>) -> RedisSessionBuilder {
    let count = Arc::clone(count);
    builder.on_binding_mismatch(move |req, mismatch| {
        assert!(!req.path().is_empty());
        assert!(mismatch.user_agent || mismatch.ip);
        count.fetch_add(1, Ordering::SeqCst);
    })
}

#[actix_web::test]
async fn a_cookie_replayed_from_another_user_agent_gets_a_fresh_session() {
    let server = RedisServer::start();
    let mismatches = Arc::new(AtomicUsize::new(0));
    let sessions = counting(redis(&server).bind_to_user_agent(true), &mismatches)
        .build()
        .unwrap();
    let srv = serve(sessions);
    let mut owner = Client::new(&srv).with_header("user-agent", "Firefox/140");
    owner.get("/set/user/ann").await;
    assert!(!contains(&stored(&server, "m:b"), "Firefox"));

    let mut thief = Client::with_jar(&srv, owner.jar.clone()).with_header("user-agent", "curl/8");
    let res = thief.get("/get/user").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert_eq!(mismatches.load(Ordering::SeqCst), 1);
    // What the thief writes goes to a session of their own; the owner's is untouched.
    thief.get("/set/user/mallory").await;
    assert_ne!(thief.jar["sid"], owner.jar["sid"]);
    assert_eq!(owner.get("/get/user").await.body, "\"ann\"");
    assert_eq!(server.keys().len(), 2);
    assert_eq!(
        mismatches.load(Ordering::SeqCst),
        1,
        "the thief's own session is theirs"
    );

    // A callback that panics does not take the request down.
    let panicking = redis(&server)
        .bind_to_user_agent(true)
        .on_binding_mismatch(|_, _| panic!("callback bug"))
        .build()
        .unwrap();
    let srv = serve(panicking);
    let thief = Client::with_jar(&srv, owner.jar.clone()).with_header("user-agent", "curl/8");
    let res = thief
        .send("/get/user", thief.cookie_header().as_deref())
        .await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
}

#[actix_web::test]
async fn a_cookie_replayed_from_another_address_gets_a_fresh_session() {
    let server = RedisServer::start();
    let mismatches = Arc::new(AtomicUsize::new(0));
    let sessions = counting(redis(&server).bind_to_ip(ClientIp::peer()), &mismatches)
        .build()
        .unwrap();
    let srv = serve(sessions);
    let home: IpAddr = "127.0.0.1".parse().unwrap();
    let away: IpAddr = "127.0.0.2".parse().unwrap();
    let mut owner = Client::from_address(&srv, home);
    owner.get("/set/user/ann").await;
    let mut thief = Client::from_address(&srv, away);
    thief.jar = owner.jar.clone();
    assert_eq!(thief.get("/get/user").await.body, "none");
    assert_eq!(mismatches.load(Ordering::SeqCst), 1);
    assert_eq!(owner.get("/get/user").await.body, "\"ann\"");

    // Bound to the /8 instead: both addresses are one network.
    let srv = serve(
        redis(&server)
            .bind_to_ip(ClientIp::peer().network(8, 64))
            .build()
            .unwrap(),
    );
    let mut owner = Client::from_address(&srv, home);
    owner.get("/set/user/bob").await;
    let mut laptop = Client::from_address(&srv, away);
    laptop.jar = owner.jar.clone();
    assert_eq!(laptop.get("/get/user").await.body, "\"bob\"");
}

#[actix_web::test]
async fn forwarding_headers_count_only_from_a_trusted_proxy() {
    let server = RedisServer::start();
    // Nothing trusted: X-Forwarded-For is the client's own claim and changes nothing.
    let srv = serve(redis(&server).bind_to_ip(ClientIp::peer()).build().unwrap());
    let mut owner = Client::new(&srv).with_header("x-forwarded-for", "203.0.113.5");
    owner.get("/set/user/ann").await;
    let mut other = Client::new(&srv).with_header("x-forwarded-for", "198.51.100.7");
    other.jar = owner.jar.clone();
    assert_eq!(other.get("/get/user").await.body, "\"ann\"");

    // The test client's address as a trusted proxy: now the header is the client.
    let srv = serve(
        redis(&server)
            .bind_to_ip(ClientIp::peer().trust_proxies(["127.0.0.0/8"]))
            .build()
            .unwrap(),
    );
    let mut owner = Client::new(&srv).with_header("x-forwarded-for", "203.0.113.5");
    owner.get("/set/user/bob").await;
    let mut same = Client::new(&srv).with_header("x-forwarded-for", "203.0.113.5, 127.0.0.9");
    same.jar = owner.jar.clone();
    assert_eq!(same.get("/get/user").await.body, "\"bob\"");
    let mut other = Client::new(&srv).with_header("x-forwarded-for", "198.51.100.7");
    other.jar = owner.jar.clone();
    assert_eq!(other.get("/get/user").await.body, "none");
    let mut forwarded = Client::new(&srv).with_header("forwarded", "for=198.51.100.7");
    forwarded.jar = owner.jar.clone();
    assert_eq!(forwarded.get("/get/user").await.body, "none");
    assert!(RedisSession::builder(server.url(), key(1))
        .bind_to_ip(ClientIp::peer().trust_proxies(["proxy.local"]))
        .build()
        .is_err());
}

#[actix_web::test]
async fn sessions_from_before_binding_are_bound_on_their_next_request() {
    let server = RedisServer::start();
    let srv = serve(redis(&server).build().unwrap());
    let mut owner = Client::new(&srv).with_header("user-agent", "Firefox/140");
    owner.get("/set/user/ann").await;
    let no_binding: Option<Vec<u8>> = server.conn().hget(server.keys()[0].clone(), "m:b").unwrap();
    assert_eq!(no_binding, None);

    let srv = serve(redis(&server).bind_to_user_agent(true).build().unwrap());
    let mut owner =
        Client::with_jar(&srv, owner.jar.clone()).with_header("user-agent", "Firefox/140");
    assert_eq!(owner.get("/get/user").await.body, "\"ann\"");
    assert!(stored(&server, "m:b").starts_with(b"ua="));
    let mut thief = Client::with_jar(&srv, owner.jar.clone()).with_header("user-agent", "curl/8");
    assert_eq!(thief.get("/get/user").await.body, "none");
}

#[actix_web::test]
async fn the_cookie_store_binds_too() {
    let srv = serve(
        RedisSession::builder_with(actix_redis_session::store::CookieStore::new(), key(1))
            .bind_to_user_agent(true)
            .build()
            .unwrap(),
    );
    let mut owner = Client::new(&srv).with_header("user-agent", "Firefox/140");
    owner.get("/set/user/ann").await;
    let mut thief = Client::with_jar(&srv, owner.jar.clone()).with_header("user-agent", "curl/8");
    assert_eq!(thief.get("/get/user").await.body, "none");
    assert_eq!(owner.get("/get/user").await.body, "\"ann\"");
}

fn ttl_ms(server: &RedisServer) -> i64 {
    redis::cmd("PTTL")
        .arg(server.keys()[0].clone())
        .query(&mut server.conn())
        .unwrap()
}

#[actix_web::test]
async fn each_preset_sets_its_values_and_a_later_setter_wins() {
    // High security: Strict, short idle timeout, sealed values, User-Agent binding, no
    // "remember me".
    let server = RedisServer::start();
    let srv = serve(redis(&server).high_security().build().unwrap());
    let mut client = Client::new(&srv).with_header("user-agent", "Firefox/140");
    let res = client.get("/set/a/v").await;
    let cookie = res.set_cookie("sid").unwrap();
    assert_eq!(
        cookie.same_site(),
        Some(actix_web::cookie::SameSite::Strict)
    );
    assert_eq!(
        (cookie.secure(), cookie.http_only()),
        (Some(true), Some(true))
    );
    assert_eq!(cookie.max_age(), None);
    let ttl = ttl_ms(&server);
    assert!((14 * 60_000..=15 * 60_000).contains(&ttl), "{ttl}");
    assert_eq!(stored(&server, "d:a")[0], 0x21);
    let res = client.get("/remember/86400").await;
    assert!(res.set_cookie("sid").is_none_or(|c| c.max_age().is_none()));
    assert!(ttl_ms(&server) <= 15 * 60_000, "remember me is off");
    let mut thief = Client::with_jar(&srv, client.jar.clone()).with_header("user-agent", "curl/8");
    assert_eq!(thief.get("/get/a").await.body, "none");

    // Production: Lax, 1 hour, plain values, no binding.
    let server = RedisServer::start();
    let srv = serve(redis(&server).production().build().unwrap());
    let mut client = Client::new(&srv);
    let res = client.get("/set/a/v").await;
    let cookie = res.set_cookie("sid").unwrap();
    assert_eq!(cookie.same_site(), Some(actix_web::cookie::SameSite::Lax));
    assert_eq!(cookie.secure(), Some(true));
    let ttl = ttl_ms(&server);
    assert!((59 * 60_000..=60 * 60_000).contains(&ttl), "{ttl}");
    assert_eq!(stored(&server, "d:a")[0], 0x01);
    // touch_after 60 s: the touch time is recorded.
    assert!(!stored(&server, "m:t").is_empty());

    // Development: no Secure.
    let server = RedisServer::start();
    let srv = serve(redis(&server).development().build().unwrap());
    let res = Client::new(&srv).get("/set/a/v").await;
    assert_eq!(res.set_cookie("sid").unwrap().secure(), None);
    let ttl = ttl_ms(&server);
    assert!(ttl > 23 * 3_600_000, "{ttl}");

    // A setter after the preset wins.
    let server = RedisServer::start();
    let srv = serve(
        redis(&server)
            .high_security()
            .cookie_same_site(actix_web::cookie::SameSite::Lax)
            .idle_timeout(Duration::from_secs(120))
            .encrypt_at_rest(false)
            .bind_to_user_agent(false)
            .allow_remember_me(true)
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv).with_header("user-agent", "Firefox/140");
    let res = client.get("/set/a/v").await;
    let cookie = res.set_cookie("sid").unwrap();
    assert_eq!(cookie.same_site(), Some(actix_web::cookie::SameSite::Lax));
    assert!(ttl_ms(&server) <= 120_000);
    assert_eq!(stored(&server, "d:a")[0], 0x01);
    let mut other = Client::with_jar(&srv, client.jar.clone()).with_header("user-agent", "curl/8");
    assert_eq!(other.get("/get/a").await.body, "\"v\"");
    let res = client.get("/remember/86400").await;
    assert!(res.set_cookie("sid").unwrap().max_age().is_some());
}

#[actix_web::test]
async fn once_migrated_a_planted_plain_value_is_refused() {
    let server = RedisServer::start();
    let srv = serve(
        redis(&server)
            .encrypt_at_rest(true)
            .reject_plain_values(true)
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/set/role/guest").await;
    let record = server.keys()[0].clone();
    // Someone with write access to Redis plants a value in the clear.
    let _: () = server
        .conn()
        .hset(&record, "d:role", b"\x01\"admin\"".as_slice())
        .unwrap();
    let res = client.get("/get/role").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(RedisSession::builder(server.url(), key(1))
        .reject_plain_values(true)
        .build()
        .is_err());
}
