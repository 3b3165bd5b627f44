//! What the logs say and what they must never say: a span per load and save with its outcome
//! and latency, and no cookie, no session id and no stored value in any line, at the most
//! verbose level, through a whole session lifecycle and its failures.

mod common;

use common::{key, logs::capture, serve, Backend, Client};

/// Every log line of this binary: everything of ours (trace), everything else from debug,
/// and a line per closed span.
fn logs() -> std::sync::Arc<std::sync::Mutex<String>> {
    capture("actix_redis_session=trace,debug", true)
}

async fn lifecycle(backend: Backend) -> Vec<String> {
    let srv = serve(backend.sessions(key(1)));
    let mut client = Client::new(&srv);
    let mut secrets = vec!["MARKERvalue".to_owned(), "MARKERflash".to_owned()];
    client.get("/set/secret/MARKERvalue").await;
    client.get("/cart/add/777").await;
    client.get("/flash/send/info/MARKERflash").await;
    assert!(client.get("/flash/show").await.body.contains("MARKERflash"));
    let mut remember = |client: &Client| {
        if let Some(value) = client.jar.get("sid") {
            secrets.push(value.clone());
            // The id alone, as base64 and as the bytes' hex (which a careless log might print).
            let id = value.split('.').next().unwrap().to_owned();
            secrets.push(id);
        }
    };
    remember(&client);
    client.get("/renew").await;
    remember(&client);
    client.get("/remember/3600").await;
    remember(&client);
    assert_eq!(client.get("/get/secret").await.body, "\"MARKERvalue\"");
    // A tampered cookie and a junk one.
    let tampered = format!("sid={}x", client.jar["sid"]);
    client.send("/get/secret", Some(&tampered)).await;
    client.send("/get/secret", Some("sid=AAAA.BBBB")).await;
    client.get("/purge").await;
    secrets
}

#[actix_web::test]
async fn no_cookie_id_or_value_reaches_the_log_on_any_store() {
    let logs = logs();
    let mut secrets = Vec::new();
    for backend in [
        Backend::redis(),
        Backend::multiplexed(),
        Backend::hardened(),
        Backend::memory(),
        Backend::file(),
        Backend::cookie(),
    ] {
        secrets.extend(lifecycle(backend).await);
    }
    // Redis down: the failures are logged too, and still say nothing secret.
    let mut backend = Backend::redis();
    let srv = serve(backend.sessions(key(1)));
    let mut client = Client::new(&srv);
    client.get("/set/secret/MARKERvalue").await;
    secrets.push(client.jar["sid"].clone());
    if let Backend::Redis(server, _) = &mut backend {
        server.stop();
    }
    assert_eq!(client.get("/get/secret").await.status, 503);
    let logged = logs.lock().unwrap().clone();
    assert!(
        logged.contains("session load failed"),
        "the outage is logged"
    );
    // Not an empty log: the spans of the lifecycles above are in it.
    assert!(logged.contains("session_load") && logged.contains("session_save"));
    for secret in &secrets {
        assert!(
            !logged.contains(secret.as_str()),
            "{secret:?} is in the log"
        );
    }
}

#[actix_web::test]
async fn each_load_and_save_is_a_span_with_its_outcome_and_latency() {
    let logs = logs();
    let backend = Backend::redis();
    let srv = serve(backend.sessions(key(1)));
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await;
    client.get("/set/a/2").await;
    client.get("/renew").await;
    client.get("/get/a").await;
    client.get("/purge").await;
    client.send("/get/a", Some("sid=AAAA.BBBB")).await;
    let logged = logs.lock().unwrap().clone();
    let closes = |span: &str, field: &str| {
        logged
            .lines()
            .filter(|l| l.contains(span) && l.contains("close") && l.contains(field))
            .count()
    };
    assert!(closes("session_save", "kind=\"create\"") >= 1, "{logged}");
    assert!(closes("session_save", "kind=\"update\"") >= 1);
    assert!(closes("session_save", "kind=\"renew\"") >= 1);
    assert!(closes("session_save", "kind=\"delete\"") >= 1);
    assert!(closes("session_save", "outcome=\"ok\"") >= 4);
    assert!(closes("session_load", "outcome=\"hit\"") >= 4);
    assert!(closes("session_load", "latency_us=") >= 4);
}

#[actix_web::test]
async fn the_store_failure_callback_hears_of_every_failed_load_and_save() {
    use std::sync::{Arc, Mutex};

    use actix_redis_session::{OnStoreError, StoreErrorKind};

    let heard: Arc<Mutex<Vec<(String, StoreErrorKind)>>> = Arc::default();
    let record = {
        let heard = Arc::clone(&heard);
        move |req: &actix_web::HttpRequest, e: &actix_redis_session::StoreError| {
            heard
                .lock()
                .unwrap()
                .push((req.path().to_owned(), e.kind()));
        }
    };
    let mut backend = Backend::redis();
    let builder = |policy, lazy| {
        backend
            .builder(key(1))
            .on_store_error(policy)
            .lazy_load(lazy)
            .on_store_failure(record.clone())
            .build()
            .unwrap()
    };
    let (closed, open, eager) = (
        serve(builder(OnStoreError::FailClosed, true)),
        serve(builder(OnStoreError::FailOpen, true)),
        serve(builder(OnStoreError::FailClosed, false)),
    );
    let mut client = Client::new(&closed);
    client.get("/set/a/1").await;
    assert!(heard.lock().unwrap().is_empty(), "nothing failed yet");

    // A save that fails: loaded, then Redis goes away while the handler runs.
    let slow = client.get("/slow-renew/400");
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Backend::Redis(server, _) = &mut backend {
            server.stop();
        }
    };
    let (res, ()) = tokio::join!(slow, stop);
    assert_eq!(res.status, 503);
    // Failed loads under each policy, and before routing.
    let jar = client.jar.clone();
    assert_eq!(client.get("/get/a").await.status, 503);
    let mut other = Client::with_jar(&open, jar.clone());
    assert_eq!(
        other.get("/get/a").await.status,
        200,
        "fail-open serves a degraded session"
    );
    let mut before = Client::with_jar(&eager, jar);
    assert_eq!(before.get("/get/a").await.status, 503);
    let heard = heard.lock().unwrap().clone();
    let paths: Vec<&str> = heard.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/slow-renew/400", "/get/a", "/get/a", "/get/a"],
        "{heard:?}"
    );
    assert!(heard.iter().all(|(_, kind)| matches!(
        kind,
        StoreErrorKind::Unavailable | StoreErrorKind::Timeout | StoreErrorKind::Backend
    )));
}

#[actix_web::test]
async fn a_panicking_failure_callback_does_not_take_the_request_down() {
    let mut backend = Backend::redis();
    let srv = serve(
        backend
            .builder(key(1))
            .on_store_failure(|_, _| panic!("callback bug"))
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await;
    if let Backend::Redis(server, _) = &mut backend {
        server.stop();
    }
    for _ in 0..3 {
        assert_eq!(client.get("/get/a").await.status, 503);
    }
    assert_eq!(
        client.get("/plain").await.status,
        200,
        "the worker lives on"
    );
}

#[actix_web::test]
async fn the_load_error_callback_hears_of_unreadable_values_and_unusable_records() {
    use std::sync::{Arc, Mutex};

    use actix_redis_session::SessionLoadErrorKind;
    use redis::Commands as _;

    type Heard = Vec<(String, SessionLoadErrorKind, Option<String>)>;
    let heard: Arc<Mutex<Heard>> = Arc::default();
    let record = {
        let heard = Arc::clone(&heard);
        move |req: &actix_web::HttpRequest, e: &actix_redis_session::SessionLoadError| {
            let field = e.field().map(str::to_owned);
            heard
                .lock()
                .unwrap()
                .push((req.path().to_owned(), e.kind(), field));
        }
    };
    let backend = Backend::redis();
    let server = backend.redis_server().unwrap();
    let srv = serve(
        backend
            .builder(key(1))
            .max_session_size(4096)
            .on_session_load_error(record)
            .build()
            .unwrap(),
    );
    let mut client = Client::new(&srv);
    client.get("/set/keep/1").await;
    let redis_key = server.keys()[0].clone();
    let mut conn = server.conn();
    let _: () = conn
        .hset(&redis_key, "d:bad", b"\x01{{{".as_slice())
        .unwrap();
    assert_eq!(client.get("/get/keep").await.body, "\"1\"");
    assert_eq!(
        client.get("/get/keep").await.body,
        "\"1\"",
        "told once: the field is gone"
    );
    // Too large, then not a session at all.
    let huge = format!("\x01\"{}\"", "x".repeat(5000));
    let _: () = conn.hset(&redis_key, "d:huge", huge).unwrap();
    assert_eq!(client.get("/get/keep").await.body, "none");
    client.get("/set/keep/2").await;
    let redis_key = server.keys()[0].clone();
    let _: () = conn.hdel(&redis_key, "m:c").unwrap();
    assert_eq!(client.get("/get/keep").await.body, "none");
    let heard = heard.lock().unwrap().clone();
    assert_eq!(
        heard,
        [
            (
                "/get/keep".to_owned(),
                SessionLoadErrorKind::UnreadableValue,
                Some("d:bad".to_owned())
            ),
            ("/get/keep".to_owned(), SessionLoadErrorKind::TooLarge, None),
            (
                "/get/keep".to_owned(),
                SessionLoadErrorKind::NotASession,
                None
            ),
        ]
    );
}
