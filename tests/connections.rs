//! Connecting as production does, against real redis-server processes on loopback: TLS with
//! a private CA and with client certificates, an ACL user allowed only what the store needs,
//! RESP3, and the number of connections each transport opens. Both transports each time.

mod common;

use std::time::Duration;

use actix_redis_session::{store::RedisTls, RedisSession, RedisSessionBuilder, Transport};
use common::{
    all_at_once, key, logs::capture_logs, serve, serve_concurrent, tls, Client, RedisServer,
    WORKERS,
};

const TRANSPORTS: [Transport; 2] = [Transport::Pool, Transport::Multiplexed];

fn builder(url: &str, transport: Transport) -> RedisSessionBuilder {
    RedisSession::builder(url, key(1))
        .transport(transport)
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
}

/// Stores, reads, renews, sends a flash message and logs out through `url`.
async fn lifecycle(sessions: RedisSession) {
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    let res = client.get("/set/user/ann").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(client.get("/get/user").await.body, "\"ann\"");
    assert_eq!(client.get("/cart/add/3").await.body, "1");
    client.get("/renew").await;
    assert_eq!(client.get("/get/user").await.body, "\"ann\"");
    client.get("/flash/send/info/hello").await;
    assert!(client.get("/flash/show").await.body.contains("hello"));
    client.get("/remove/user").await;
    client.get("/purge").await;
    assert_eq!(client.get("/get/user").await.body, "none");
}

#[actix_web::test]
async fn tls_with_a_private_ca_works_and_an_unknown_ca_is_refused() {
    let logs = capture_logs();
    let certs = tls::make();
    let (_server, port) = RedisServer::start_on_port_with(|port| certs.server_args(port, "no"));
    let ca = certs.read("ca.crt");
    for transport in TRANSPORTS {
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("rediss://{host}:{port}");
            let tls = RedisTls::new().root_certificates_pem(ca.clone());
            lifecycle(builder(&url, transport).redis_tls(tls).build().unwrap()).await;
        }
        // The public roots do not know our CA: no session, a 503, never a plain connection.
        let url = format!("rediss://127.0.0.1:{port}");
        let srv = serve(builder(&url, transport).build().unwrap());
        assert_eq!(
            Client::new(&srv).get("/set/a/b").await.status,
            503,
            "{transport:?}"
        );
        // Nor does a CA file that is not the server's.
        let other = tls::make();
        let tls = RedisTls::new().root_certificates_pem(other.read("ca.crt"));
        let srv = serve(builder(&url, transport).redis_tls(tls).build().unwrap());
        assert_eq!(
            Client::new(&srv).get("/set/a/b").await.status,
            503,
            "{transport:?}"
        );
        // `#insecure` connects without checking, when asked for, but no production preset
        // lets it through.
        let insecure = format!("{url}/#insecure");
        lifecycle(builder(&insecure, transport).build().unwrap()).await;
        assert!(
            logs.lock()
                .unwrap()
                .contains("TLS certificates are not verified"),
            "build() warns about #insecure"
        );
        for preset in [
            RedisSessionBuilder::production,
            RedisSessionBuilder::high_security,
        ] {
            let e = preset(builder(&insecure, transport)).build().unwrap_err();
            assert!(e.to_string().contains("url"), "{e}");
        }
        builder(&insecure, transport).development().build().unwrap();
    }
}

#[actix_web::test]
async fn mutual_tls_needs_the_client_certificate() {
    let certs = tls::make();
    let (_server, port) = RedisServer::start_on_port_with(|port| certs.server_args(port, "yes"));
    let url = format!("rediss://localhost:{port}");
    for transport in TRANSPORTS {
        let ca_only = RedisTls::new().root_certificates_pem(certs.read("ca.crt"));
        let srv = serve(builder(&url, transport).redis_tls(ca_only).build().unwrap());
        assert_eq!(
            Client::new(&srv).get("/set/a/b").await.status,
            503,
            "{transport:?}"
        );

        let mutual = RedisTls::new()
            .root_certificates_file(certs.path("ca.crt"))
            .unwrap()
            .client_certificate_files(certs.path("client.crt"), certs.path("client.key"))
            .unwrap();
        assert_eq!(
            format!("{mutual:?}"),
            "RedisTls { root_certificates: true, client_certificate: true }"
        );
        lifecycle(builder(&url, transport).redis_tls(mutual).build().unwrap()).await;
    }
    // Certificates that are no PEM, certificates for a plain URL, a shared pool: refused.
    let junk = RedisTls::new().root_certificates_pem(b"not a certificate".to_vec());
    assert!(builder(&url, Transport::Pool)
        .redis_tls(junk)
        .build()
        .is_err());
    let plain = RedisTls::new().root_certificates_pem(certs.read("ca.crt"));
    let e = builder("redis://127.0.0.1:1", Transport::Pool)
        .redis_tls(plain.clone())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("redis_tls"), "{e}");
    let pool =
        r2d2::Pool::builder().build_unchecked(redis::Client::open("redis://127.0.0.1:1").unwrap());
    assert!(RedisSession::builder_from_pool(pool, key(1))
        .redis_tls(plain)
        .build()
        .is_err());
}

/// The ACL rule of the README: the commands the store sends, on its keys only.
const SESSION_USER: &str = "user sessions on >s3cret-Pa55 ~session:* resetchannels -@all \
     +hgetall +hset +hdel +pexpire +del +evalsha +script|load +exists +hget +hkeys +hello +ping";

#[actix_web::test]
async fn an_acl_user_with_only_the_store_commands_runs_every_flow_and_no_password_is_logged() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("users.acl");
    std::fs::write(
        &acl,
        format!("user default on nopass ~* &* +@all\n{SESSION_USER}\n"),
    )
    .unwrap();
    let (server, port) = RedisServer::start_on_port_with(|port| {
        vec![
            "--port".into(),
            port.to_string(),
            "--aclfile".into(),
            acl.to_string_lossy().into_owned(),
        ]
    });
    for transport in TRANSPORTS {
        for protocol in ["", "?protocol=resp3"] {
            let url = format!("redis://sessions:s3cret-Pa55@127.0.0.1:{port}/{protocol}");
            lifecycle(builder(&url, transport).build().unwrap()).await;
        }
    }
    // Only keys under the prefix: another prefix is refused by Redis.
    let url = format!("redis://sessions:s3cret-Pa55@127.0.0.1:{port}");
    let srv = serve(
        builder(&url, Transport::Pool)
            .key_prefix("other:")
            .build()
            .unwrap(),
    );
    assert_eq!(Client::new(&srv).get("/set/a/b").await.status, 503);
    let denied: Vec<String> = redis::cmd("ACL")
        .arg("LOG")
        .query::<Vec<redis::Value>>(&mut server.conn())
        .unwrap()
        .iter()
        .map(|entry| format!("{entry:?}"))
        .collect();
    assert!(
        denied
            .iter()
            .all(|e| e.contains("other:") || e.contains("key")),
        "only the other prefix was denied: {denied:?}"
    );

    // A wrong password: a clear error in the log at first use, a 503 for the client, and the
    // password nowhere.
    for transport in TRANSPORTS {
        let url = format!("redis://sessions:WRONG-pw-123@127.0.0.1:{port}");
        let sessions = builder(&url, transport).build().unwrap();
        assert!(!format!("{sessions:?}").contains("WRONG-pw-123"));
        let srv = serve(sessions);
        let res = Client::new(&srv).get("/set/a/b").await;
        assert_eq!(res.status, 503);
        assert!(!res.body.contains("WRONG"));
    }
    let logged = logs.lock().unwrap().clone();
    assert!(
        logged.contains("WRONGPASS") || logged.contains("uthentication"),
        "the log says why: {logged}"
    );
    for secret in ["s3cret-Pa55", "WRONG-pw-123"] {
        assert!(!logged.contains(secret), "a password in the log");
    }
    // Nor in the errors of URLs that do not parse.
    for bad in [
        "redis://sessions:s3cret-Pa55@127.0.0.1:notaport",
        "redis://sessions:s3cret-Pa55@/0",
        "ftp://sessions:s3cret-Pa55@127.0.0.1",
    ] {
        let e = RedisSession::new(bad, key(1)).unwrap_err();
        let shown = format!("{e} {e:?} {:?}", std::error::Error::source(&e));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

#[actix_web::test]
async fn resp3_works_on_both_transports() {
    let (_server, port) =
        RedisServer::start_on_port_with(|port| vec!["--port".into(), port.to_string()]);
    for transport in TRANSPORTS {
        let url = format!("redis://127.0.0.1:{port}/?protocol=resp3");
        lifecycle(builder(&url, transport).build().unwrap()).await;
    }
}

/// Connections of clients other than the test's own `CLIENT LIST` connection.
fn session_connections(server: &RedisServer) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.conn())
        .unwrap();
    list.lines().count() - 1
}

#[actix_web::test]
async fn each_transport_opens_the_connections_it_documents() {
    // Pool: `capacity` connections per middleware, shared by all workers.
    let server = RedisServer::start();
    let sessions = RedisSession::builder(server.url(), key(1))
        .capacity(3)
        .build()
        .unwrap();
    let srv = serve_concurrent(sessions);
    let client = Client::new(&srv);
    let paths: Vec<String> = (0..200).map(|i| format!("/set/k/{i}")).collect();
    for _ in 0..3 {
        let responses = all_at_once(&client, &paths, "").await;
        assert!(responses.iter().all(|r| r.status == 200));
    }
    let open = session_connections(&server);
    assert!(
        (1..=3).contains(&open),
        "{open} connections with capacity 3"
    );

    // Multiplexed: one per worker that served a session, whatever the load.
    let server = RedisServer::start();
    let sessions = RedisSession::builder(server.url(), key(1))
        .transport(Transport::Multiplexed)
        .build()
        .unwrap();
    let srv = serve_concurrent(sessions);
    let client = Client::new(&srv);
    for _ in 0..3 {
        let responses = all_at_once(&client, &paths, "").await;
        assert!(responses.iter().all(|r| r.status == 200));
    }
    let open = session_connections(&server);
    assert!(
        (1..=WORKERS).contains(&open),
        "{open} connections with {WORKERS} workers"
    );
}
