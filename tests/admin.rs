//! Session administration (`RedisSession::admin`) on every store that can list: Redis over
//! both transports (with encryption at rest too), memory and files. Sessions are made by
//! real HTTP requests; the admin counts, lists, reads and ends them, and their clients see it
//! on their next request.

mod common;

use std::collections::BTreeSet;

use actix_redis_session::{Handle, RedisSession, SessionAdmin, StoreErrorKind};
use common::{key, serve, Backend, Client, RedisServer};
use futures_util::TryStreamExt as _;

mod suite {
    use super::*;

    /// A signed-in client with `a` = `value`, and its session's handle.
    async fn client_with(srv: &actix_test::TestServer, value: &str) -> (Client, String) {
        let mut client = Client::new(srv);
        assert_eq!(client.get(&format!("/set/a/{value}")).await.status, 200);
        let handle = client.get("/handle").await.body;
        assert_eq!(handle.len(), 64, "{handle}");
        (client, handle)
    }

    async fn handles(admin: &SessionAdmin) -> BTreeSet<String> {
        let infos: Vec<_> = admin.iter().try_collect().await.expect("a listing");
        infos.iter().map(|i| i.handle().to_string()).collect()
    }

    pub async fn admin_counts_lists_reads_and_ends_sessions(backend: Backend) {
        let sessions = backend.sessions(key(1));
        let admin = sessions.admin();
        let srv = serve(sessions);
        assert_eq!(admin.count().await.unwrap(), 0);

        let (mut alice, alice_handle) = client_with(&srv, "alice").await;
        let (mut bob, bob_handle) = client_with(&srv, "bob").await;
        let (_carol, carol_handle) = client_with(&srv, "carol").await;
        assert_eq!(admin.count().await.unwrap(), 3);
        let listed = handles(&admin).await;
        let expected: BTreeSet<String> = [&alice_handle, &bob_handle, &carol_handle]
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(admin.all().await.unwrap().len(), 3);

        // One session read in full, decoded like Session::get, its metadata with it.
        let handle: Handle = find(&admin, &alice_handle).await;
        let view = admin.get(&handle).await.unwrap().expect("alice's session");
        assert_eq!(view.get::<String>("a").unwrap().as_deref(), Some("alice"));
        assert_eq!(view.keys(), ["a"]);
        let info = view.info();
        assert_eq!(info.handle().as_str(), alice_handle);
        let age = info.created().unwrap().elapsed().unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(60), "{age:?}");
        let left = info
            .expires()
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(left > std::time::Duration::from_secs(3500), "{left:?}");

        // Ended by the admin: the client's next request has a fresh session.
        assert!(admin.destroy(&handle).await.unwrap());
        assert!(!admin.destroy(&handle).await.unwrap(), "gone already");
        assert!(admin.get(&handle).await.unwrap().is_none());
        assert_eq!(alice.get("/get/a").await.body, "none");
        assert_eq!(bob.get("/get/a").await.body, "\"bob\"");
        assert_eq!(admin.count().await.unwrap(), 2);

        // Every session ended; the store keeps what is not a session of this middleware.
        assert_eq!(admin.destroy_all().await.unwrap(), 2);
        assert_eq!(admin.count().await.unwrap(), 0);
        assert_eq!(bob.get("/get/a").await.body, "none");
        assert!(handles(&admin).await.is_empty());
    }

    /// The handle among the listed sessions whose hex is `hex`.
    async fn find(admin: &SessionAdmin, hex: &str) -> Handle {
        let infos: Vec<_> = admin.iter().try_collect().await.unwrap();
        infos
            .into_iter()
            .map(|i| i.handle().clone())
            .find(|h| h.as_str() == hex)
            .expect("listed")
    }

    pub async fn admin_lists_in_small_steps(backend: Backend) {
        let sessions = backend.sessions(key(1));
        let admin = sessions.admin().scan_count(3);
        let srv = serve(sessions);
        let mut made = BTreeSet::new();
        for i in 0..20 {
            made.insert(client_with(&srv, &i.to_string()).await.1);
        }
        assert_eq!(handles(&admin).await, made);
        assert_eq!(admin.count().await.unwrap(), 20);
        assert_eq!(admin.destroy_all().await.unwrap(), 20);
        assert_eq!(admin.count().await.unwrap(), 0);
    }
}

mod memory {
    #[actix_web::test]
    async fn admin_counts_lists_reads_and_ends_sessions() {
        super::suite::admin_counts_lists_reads_and_ends_sessions(super::common::Backend::memory())
            .await;
    }

    #[actix_web::test]
    async fn admin_lists_in_small_steps() {
        super::suite::admin_lists_in_small_steps(super::common::Backend::memory()).await;
    }
}

mod redis {
    #[actix_web::test]
    async fn admin_counts_lists_reads_and_ends_sessions() {
        super::suite::admin_counts_lists_reads_and_ends_sessions(super::common::Backend::redis())
            .await;
    }

    #[actix_web::test]
    async fn admin_lists_in_small_steps() {
        super::suite::admin_lists_in_small_steps(super::common::Backend::redis()).await;
    }
}

mod multiplexed {
    #[actix_web::test]
    async fn admin_counts_lists_reads_and_ends_sessions() {
        super::suite::admin_counts_lists_reads_and_ends_sessions(
            super::common::Backend::multiplexed(),
        )
        .await;
    }

    #[actix_web::test]
    async fn admin_lists_in_small_steps() {
        super::suite::admin_lists_in_small_steps(super::common::Backend::multiplexed()).await;
    }
}

mod file {
    #[actix_web::test]
    async fn admin_counts_lists_reads_and_ends_sessions() {
        super::suite::admin_counts_lists_reads_and_ends_sessions(super::common::Backend::file())
            .await;
    }

    #[actix_web::test]
    async fn admin_lists_in_small_steps() {
        super::suite::admin_lists_in_small_steps(super::common::Backend::file()).await;
    }
}

mod hardened {
    #[actix_web::test]
    async fn admin_counts_lists_reads_and_ends_sessions() {
        super::suite::admin_counts_lists_reads_and_ends_sessions(
            super::common::Backend::hardened(),
        )
        .await;
    }
}

#[actix_web::test]
async fn stores_that_cannot_list_say_so_and_a_store_of_your_own_can_still_end_a_session() {
    for backend in [Backend::cookie(), Backend::user_store()] {
        let admin = backend.sessions(key(1)).admin();
        for kind in [
            admin.count().await.map(|_| ()),
            admin.destroy_all().await.map(|_| ()),
            admin.all().await.map(|_| ()),
        ]
        .map(|r| r.unwrap_err().kind())
        {
            assert_eq!(kind, StoreErrorKind::Unsupported);
        }
    }
    let backend = Backend::user_store();
    let sessions = backend.sessions(key(1));
    let admin = sessions.admin();
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await;
    let hex = client.get("/handle").await.body;
    let handle = Handle::parse(&hex).expect("a handle");
    assert!(admin.destroy(&handle).await.unwrap());
    assert_eq!(client.get("/get/a").await.body, "none");
}

/// 50,000 sessions written straight into Redis in the store's layout.
fn fill(server: &RedisServer, prefix: &str, n: usize) {
    let mut conn = server.conn();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = ::redis::pipe();
        for i in chunk {
            let key = format!("{prefix}{i:064x}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("m:c")
                .arg("1700000000000.0123456789abcdef")
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(3_600_000).ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
}

#[actix_web::test]
async fn fifty_thousand_sessions_are_listed_in_steps_and_destroy_all_touches_nothing_else() {
    let server = RedisServer::start();
    fill(&server, "session:", 50_000);
    // Not sessions of this middleware: another prefix, and keys under ours that name none.
    let mut conn = server.conn();
    ::redis::cmd("SET")
        .arg("other:key")
        .arg("v")
        .query::<()>(&mut conn)
        .unwrap();
    ::redis::cmd("SET")
        .arg("session:user:alice")
        .arg("v")
        .query::<()>(&mut conn)
        .unwrap();
    let sessions = RedisSession::new(server.url(), key(1)).unwrap();
    let admin = sessions.admin().scan_count(500);
    server.reset_stats();

    let mut listed = 0usize;
    let mut stream = std::pin::pin!(admin.iter());
    while let Some(info) = stream.try_next().await.unwrap() {
        assert!(info.created().is_some());
        listed += 1;
    }
    assert_eq!(listed, 50_000);
    let calls = server.command_calls();
    assert!(!calls.contains_key("keys"), "{calls:?}");
    // In steps of about 500 keys: a hundred SCANs or so, never one for all.
    let scans = calls.get("scan").copied().unwrap_or(0);
    assert!(scans >= 90, "{calls:?}");

    assert_eq!(admin.count().await.unwrap(), 50_000);
    assert_eq!(admin.destroy_all().await.unwrap(), 50_000);
    assert_eq!(admin.count().await.unwrap(), 0);
    assert!(!server.command_calls().contains_key("flushdb"));
    let left: BTreeSet<String> = server.keys().into_iter().collect();
    assert_eq!(
        left,
        ["other:key", "session:user:alice"].map(String::from).into(),
    );
}
