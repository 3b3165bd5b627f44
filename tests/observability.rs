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
