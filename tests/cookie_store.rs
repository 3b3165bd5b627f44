//! The cookie store beyond the shared acceptance suite: what a sealed cookie reveals and
//! withstands, its size limit, timeouts enforced from inside it, key rotation.

mod common;

use std::time::Duration;

use actix_redis_session::{store::CookieStore, Key, RedisSession, RedisSessionBuilder};
use actix_web::cookie::SameSite;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use common::{key, serve, Client};

fn cookie_store(key: Key) -> RedisSessionBuilder {
    RedisSession::builder_with(CookieStore::new(), key)
}

#[actix_web::test]
async fn values_persist_in_a_sealed_cookie_with_safe_defaults() {
    let srv = serve(cookie_store(key(1)).build().unwrap());
    let mut client = Client::new(&srv);
    let res = client.get("/set/user/alice-in-wonderland").await;
    let cookie = res.set_cookie("sid").expect("a session cookie").clone();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.max_age(), None, "a browser-session cookie");
    // Sealed: neither the text nor its base64 appears, and the bytes do not hold it either.
    let value = cookie.value();
    assert!(!value.contains("alice"));
    let raw = URL_SAFE_NO_PAD.decode(value).unwrap();
    assert!(!raw.windows(5).any(|w| w == b"alice"));
    assert_eq!(
        client.get("/get/user").await.body,
        "\"alice-in-wonderland\""
    );
    assert_eq!(client.get("/count").await.body, "1");
    assert_eq!(client.get("/count").await.body, "2");
    // Unchanged and within the refresh interval: no cookie sent.
    assert!(client.get("/read").await.set_cookies.is_empty());
}

#[actix_web::test]
async fn tampered_truncated_reordered_foreign_and_junk_cookies_get_a_fresh_session() {
    let srv = serve(cookie_store(key(1)).build().unwrap());
    let other = serve(cookie_store(key(2)).build().unwrap());
    let mut client = Client::new(&srv);
    client.get("/set/user/alice").await;
    let good = client.jar["sid"].clone();
    let raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    let mut variants = Vec::new();
    for i in [0, 5, 12, 20, raw.len() / 2, raw.len() - 1] {
        let mut flipped = raw.clone();
        flipped[i] ^= 0x20;
        variants.push(URL_SAFE_NO_PAD.encode(flipped));
    }
    for cut in [1, 12, 28, raw.len() / 2, raw.len() - 1] {
        variants.push(URL_SAFE_NO_PAD.encode(&raw[..cut]));
    }
    let mut reordered = raw.clone();
    reordered[12..].reverse();
    variants.push(URL_SAFE_NO_PAD.encode(reordered));
    let mut swapped = raw.clone();
    swapped.rotate_left(12);
    variants.push(URL_SAFE_NO_PAD.encode(swapped));
    variants.push("not base64!".into());
    variants.push("A".repeat(5000));
    variants.push(String::new());
    // Sealed by another middleware's key.
    let mut foreign = Client::new(&other);
    foreign.get("/set/user/mallory").await;
    variants.push(foreign.jar["sid"].clone());
    for value in &variants {
        let res = client
            .send("/get/user", Some(&format!("sid={value}")))
            .await;
        assert_eq!((res.status, res.body.as_str()), (200, "none"), "{value}");
    }
    // Bytes that are not UTF-8 at all.
    let res = client
        .send_bytes("/get/user", Some(b"sid=\xff\xfe\x80; x=1"))
        .await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    // The genuine one still works.
    assert_eq!(
        client
            .send("/get/user", Some(&format!("sid={good}")))
            .await
            .body,
        "\"alice\""
    );
}

#[actix_web::test]
async fn a_session_that_would_not_fit_is_a_typed_error_at_the_insert() {
    let srv = serve(cookie_store(key(1)).build().unwrap());
    let mut client = Client::new(&srv);
    assert_eq!(client.get("/try/set/small/1").await.body, "ok");
    let mut fitted = 0;
    for bytes in (100..5000).step_by(100) {
        let res = client.get(&format!("/try/big/{bytes}")).await;
        assert_eq!(res.status, 200);
        if res.body != "ok" {
            assert_eq!(res.body, "error: SessionTooLarge", "{bytes}");
            break;
        }
        fitted = bytes;
        let cookie = res.set_cookie("sid").expect("the session, sealed again");
        assert!(
            cookie.to_string().len() <= 4096,
            "{bytes}: a Set-Cookie of {} bytes",
            cookie.to_string().len()
        );
    }
    assert!((2500..4000).contains(&fitted), "{fitted} bytes fitted");
    // The session is intact: the largest value that fit, and the small one.
    assert_eq!(client.get("/get/small").await.body, "\"1\"");
    // A flash message that would not fit is refused at the send, too.
    let long = "y".repeat(2000);
    let res = client.get(&format!("/flash/send/info/{long}")).await;
    assert_eq!(res.status, 500, "a typed error, answered opaquely");
    assert_eq!(client.get("/get/small").await.body, "\"1\"");
}

#[actix_web::test]
async fn the_idle_timeout_is_enforced_from_inside_the_cookie() {
    let srv = serve(
        cookie_store(key(1))
            .idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/set/user/alice").await;
    let old = client.jar["sid"].clone();
    // In use: the sealed time moves (at least twice per lifetime), so it stays alive.
    for _ in 0..3 {
        actix_rt::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(client.get("/get/user").await.body, "\"alice\"");
    }
    // A copy kept past its idle timeout is refused even though the client still sends it
    // (a browser-session cookie has no Max-Age to expire it).
    let res = client.send("/get/user", Some(&format!("sid={old}"))).await;
    assert_eq!(res.body, "none");
    assert_eq!(
        res.set_cookie("sid").map(|c| c.value()),
        Some(""),
        "removed"
    );
}

#[actix_web::test]
async fn the_absolute_timeout_ends_even_an_active_sealed_session() {
    let srv = serve(
        cookie_store(key(1))
            .absolute_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/count").await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.get("/count").await.body, "2");
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(client.get("/read").await.body, "0");
}

#[actix_web::test]
async fn an_expired_copy_does_not_hide_the_live_cookie() {
    let srv = serve(
        cookie_store(key(1))
            .idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let mut old = Client::new(&srv);
    old.get("/count").await;
    let expired = old.jar["sid"].clone();
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let mut live = Client::new(&srv);
    live.get("/count").await;
    live.get("/count").await;
    let header = format!("sid={expired}; sid={}", live.jar["sid"]);
    assert_eq!(live.send("/read", Some(&header)).await.body, "2");
}

#[actix_web::test]
async fn many_copies_of_the_cookie_cost_a_bounded_number_of_decryptions() {
    let srv = serve(cookie_store(key(1)).build().unwrap());
    let mut client = Client::new(&srv);
    client.get("/count").await;
    let good = client.jar["sid"].clone();
    // Well-formed forgeries (each costs a decryption): 500 copies of one, tried once.
    let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    raw[20] ^= 1;
    let forged = URL_SAFE_NO_PAD.encode(raw);
    let copies = vec![format!("sid={forged}"); 500].join("; ");
    let res = client
        .send("/read", Some(&format!("{copies}; sid={good}")))
        .await;
    assert_eq!(res.body, "1");
    // Junk that is not even base64 costs nothing and does not push the live one out.
    let junk = (0..50)
        .map(|i| format!("sid=!{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    let res = client
        .send("/read", Some(&format!("{junk}; sid={good}")))
        .await;
    assert_eq!(res.body, "1");
}

#[actix_web::test]
async fn a_rotated_key_still_opens_old_cookies_and_seals_them_again() {
    let old_key = key(1);
    let before = serve(cookie_store(old_key.clone()).build().unwrap());
    let mut client = Client::new(&before);
    client.get("/set/user/alice").await;
    let jar = client.jar.clone();
    let after = serve(
        cookie_store(key(2).previous_keys([old_key]))
            .build()
            .unwrap(),
    );
    let mut client = Client::with_jar(&after, jar.clone());
    let res = client.get("/get/user").await;
    assert_eq!(res.body, "\"alice\"");
    let resealed = res
        .set_cookie("sid")
        .expect("sealed again under the new key");
    assert_ne!(resealed.value(), jar["sid"]);
    // The new cookie opens under the new key alone.
    let new_only = serve(cookie_store(key(2)).build().unwrap());
    let mut client = Client::with_jar(&new_only, client.jar.clone());
    assert_eq!(client.get("/get/user").await.body, "\"alice\"");
}

#[actix_web::test]
async fn purge_removes_the_cookie_and_renew_draws_a_new_handle() {
    let srv = serve(cookie_store(key(1)).build().unwrap());
    let mut client = Client::new(&srv);
    client.get("/set/user/alice").await;
    let handle = client.get("/handle").await.body;
    client.get("/renew").await;
    let renewed = client.get("/handle").await.body;
    assert_ne!(renewed, handle);
    assert_eq!(client.get("/get/user").await.body, "\"alice\"");
    let res = client.get("/purge").await;
    assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
    assert!(client.jar.is_empty());
    assert_eq!(client.get("/get/user").await.body, "none");
    // Values after a purge start a new session.
    client.get("/purge-then-set/b/2").await;
    assert_eq!(client.get("/entries").await.body, r#"{"b":"2"}"#);
    assert_ne!(client.get("/handle").await.body, renewed);
}

#[actix_web::test]
async fn redis_only_options_are_refused_for_the_cookie_store() {
    assert!(cookie_store(key(1))
        .command_timeout(Duration::from_secs(1))
        .build()
        .is_err());
}
