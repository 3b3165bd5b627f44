//! Session administration (`RedisSession::admin`) on every store that can list: Redis over
//! both transports (with encryption at rest too), memory and files. Sessions are made by
//! real HTTP requests; the admin counts, lists, reads and ends them, and their clients see it
//! on their next request.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use actix_redis_session::{Handle, RedisSession, Session, SessionAdmin, StoreErrorKind};
use actix_web::{web, App};
use common::{key, proxy::Proxy, serve, Backend, Client, RedisServer};
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

    async fn signin(session: Session, user: web::Path<String>) -> actix_web::Result<String> {
        session.renew();
        session.set_user(user.into_inner())?;
        Ok("in".into())
    }

    async fn whoami(session: Session) -> String {
        session.user().unwrap_or_default()
    }

    async fn others_out(session: Session) -> String {
        session.sign_out_other_sessions();
        "others out".into()
    }

    async fn renew(session: Session) -> String {
        session.renew();
        "renewed".into()
    }

    async fn logout(session: Session) -> String {
        session.purge();
        "out".into()
    }

    async fn handle(session: Session) -> String {
        session.handle().to_string()
    }

    pub fn serve_users(sessions: RedisSession) -> actix_test::TestServer {
        actix_test::start(move || {
            App::new()
                .wrap(sessions.clone())
                .route("/signin/{user}", web::get().to(signin))
                .route("/whoami", web::get().to(whoami))
                .route("/others-out", web::get().to(others_out))
                .route("/renew", web::get().to(renew))
                .route("/logout", web::get().to(logout))
                .route("/handle", web::get().to(handle))
        })
    }

    /// The handles and User-Agents of `user`'s sessions, as the admin lists them.
    async fn devices(admin: &SessionAdmin, user: &str) -> BTreeSet<(String, String)> {
        let sessions = admin.sessions_of(user).await.expect("the user's sessions");
        for info in &sessions {
            assert_eq!(info.user(), Some(user));
            assert_eq!(info.network(), Some("127.0.0.0/24"));
            assert!(info.created().is_some());
        }
        sessions
            .iter()
            .map(|i| {
                let agent = i.user_agent().unwrap_or_default().to_owned();
                (i.handle().to_string(), agent)
            })
            .collect()
    }

    pub async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
        backend: Backend,
    ) {
        let sessions = backend.sessions(key(1));
        let admin = sessions.admin();
        let srv = serve_users(sessions);
        let mut laptop = Client::new(&srv).with_header("user-agent", "Laptop");
        let mut phone = Client::new(&srv).with_header("user-agent", "Phone");
        let mut tablet = Client::new(&srv).with_header("user-agent", "Tablet");
        for (client, user) in [
            (&mut laptop, "alice"),
            (&mut phone, "alice"),
            (&mut tablet, "bob"),
        ] {
            assert_eq!(client.get(&format!("/signin/{user}")).await.status, 200);
            assert_eq!(client.get("/whoami").await.body, user);
        }
        let laptop_handle = laptop.get("/handle").await.body;
        let phone_handle = phone.get("/handle").await.body;
        assert_eq!(
            devices(&admin, "alice").await,
            [
                (laptop_handle.clone(), "Laptop".to_owned()),
                (phone_handle.clone(), "Phone".to_owned())
            ]
            .into()
        );
        assert_eq!(devices(&admin, "bob").await.len(), 1);
        assert!(admin.sessions_of("nobody").await.unwrap().is_empty());

        // A renew moves the laptop's entry to its new handle.
        assert_eq!(laptop.get("/renew").await.status, 200);
        let renewed = laptop.get("/handle").await.body;
        assert_ne!(renewed, laptop_handle);
        let alice = devices(&admin, "alice").await;
        assert!(
            alice.contains(&(renewed.clone(), "Laptop".to_owned())),
            "{alice:?}"
        );
        assert_eq!(alice.len(), 2, "{alice:?}");

        // "Sign out my other devices" from the phone: the laptop is signed out on its next
        // request, the phone and bob's tablet are not.
        assert_eq!(phone.get("/others-out").await.status, 200);
        assert_eq!(laptop.get("/whoami").await.body, "");
        assert_eq!(phone.get("/whoami").await.body, "alice");
        assert_eq!(tablet.get("/whoami").await.body, "bob");
        assert_eq!(
            devices(&admin, "alice").await,
            [(phone_handle.clone(), "Phone".to_owned())].into()
        );

        // "Sign out everywhere", by the admin.
        assert_eq!(laptop.get("/signin/alice").await.status, 200);
        assert_eq!(admin.sign_out_user("alice").await.unwrap(), 2);
        assert_eq!(laptop.get("/whoami").await.body, "");
        assert_eq!(phone.get("/whoami").await.body, "");
        assert_eq!(tablet.get("/whoami").await.body, "bob");
        assert!(admin.sessions_of("alice").await.unwrap().is_empty());
        assert_eq!(admin.sign_out_user("alice").await.unwrap(), 0);

        // A logout leaves the index; a session ended otherwise is pruned when it is read.
        assert_eq!(tablet.get("/logout").await.status, 200);
        assert!(admin.sessions_of("bob").await.unwrap().is_empty());
        assert_eq!(tablet.get("/signin/bob").await.status, 200);
        let handle = Handle::parse(&tablet.get("/handle").await.body).unwrap();
        assert!(admin.destroy(&handle).await.unwrap());
        assert!(admin.sessions_of("bob").await.unwrap().is_empty());
    }

    pub async fn expired_sessions_leave_their_users_index(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .idle_timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        let admin = sessions.admin();
        let srv = serve_users(sessions);
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/signin/carol").await.status, 200);
        assert_eq!(admin.sessions_of("carol").await.unwrap().len(), 1);
        if let Some(server) = backend.redis_server() {
            let keys = server.keys();
            assert!(
                keys.iter().any(|k| k.starts_with("session:user:")),
                "{keys:?}"
            );
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(1300)).await;
        assert!(admin.sessions_of("carol").await.unwrap().is_empty());
        // Pruned: on Redis a hash without fields is no key at all.
        if let Some(server) = backend.redis_server() {
            let keys = server.keys();
            assert!(
                !keys.iter().any(|k| k.starts_with("session:user:")),
                "{keys:?}"
            );
        }
        assert_eq!(client.get("/whoami").await.body, "");
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

// Every master of a cluster is listed in turn; the per-user index is a key of its own, on
// another slot than the sessions in it.
on_cluster!(
    the_user_index_follows_login_renew_logout_and_signs_out_everywhere,
    expired_sessions_leave_their_users_index,
    admin_counts_lists_reads_and_ends_sessions,
    admin_lists_in_small_steps,
);

// The same on Sentinel's master, both transports.
on_sentinel!(
    the_user_index_follows_login_renew_logout_and_signs_out_everywhere,
    expired_sessions_leave_their_users_index,
    admin_counts_lists_reads_and_ends_sessions,
    admin_lists_in_small_steps,
);

mod memory {
    #[actix_web::test]
    async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere() {
        super::suite::the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
            super::common::Backend::memory(),
        )
        .await;
    }

    #[actix_web::test]
    async fn expired_sessions_leave_their_users_index() {
        super::suite::expired_sessions_leave_their_users_index(super::common::Backend::memory())
            .await;
    }

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
    async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere() {
        super::suite::the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
            super::common::Backend::redis(),
        )
        .await;
    }

    #[actix_web::test]
    async fn expired_sessions_leave_their_users_index() {
        super::suite::expired_sessions_leave_their_users_index(super::common::Backend::redis())
            .await;
    }

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
    async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere() {
        super::suite::the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
            super::common::Backend::multiplexed(),
        )
        .await;
    }

    #[actix_web::test]
    async fn expired_sessions_leave_their_users_index() {
        super::suite::expired_sessions_leave_their_users_index(
            super::common::Backend::multiplexed(),
        )
        .await;
    }

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
    async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere() {
        super::suite::the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
            super::common::Backend::file(),
        )
        .await;
    }

    #[actix_web::test]
    async fn expired_sessions_leave_their_users_index() {
        super::suite::expired_sessions_leave_their_users_index(super::common::Backend::file())
            .await;
    }

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
    async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere() {
        super::suite::the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
            super::common::Backend::hardened(),
        )
        .await;
    }

    #[actix_web::test]
    async fn expired_sessions_leave_their_users_index() {
        super::suite::expired_sessions_leave_their_users_index(super::common::Backend::hardened())
            .await;
    }

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

mod user_store {
    #[actix_web::test]
    async fn the_user_index_follows_login_renew_logout_and_signs_out_everywhere() {
        super::suite::the_user_index_follows_login_renew_logout_and_signs_out_everywhere(
            super::common::Backend::user_store(),
        )
        .await;
    }

    #[actix_web::test]
    async fn expired_sessions_leave_their_users_index() {
        super::suite::expired_sessions_leave_their_users_index(
            super::common::Backend::user_store(),
        )
        .await;
    }
}

#[actix_web::test]
async fn a_login_from_a_new_device_of_a_known_user_costs_no_extra_round_trip_on_the_multiplexed_transport(
) {
    // The multiplexed transport: one connection, so round trips on the wire are batches.
    // (The pool's two runners may send the two writes side by side on two connections.)
    for transport in [actix_redis_session::Transport::Multiplexed] {
        let server = RedisServer::start_tcp();
        let proxy = Proxy::start(server.tcp_addr());
        let sessions = RedisSession::builder(proxy.url(), key(1))
            .transport(transport)
            .build()
            .unwrap();
        let srv = suite::serve_users(sessions);
        // Connections opened, and alice's index made by her first login.
        Client::new(&srv).get("/signin/alice").await;
        Client::new(&srv).get("/signin/alice").await;
        proxy.reset_round_trips();
        let mut device = Client::new(&srv);
        assert_eq!(device.get("/signin/alice").await.status, 200);
        // The index entry is sent with the new record, not after it: usually in the same
        // batch (one round trip, as a session without a user costs); on a loaded machine
        // the sender may take the first before the second is queued: two, never three.
        let trips = proxy.round_trips();
        assert!((1..=2).contains(&trips), "{transport:?}: {trips}");
        assert_eq!(device.get("/whoami").await.body, "alice");
    }
}

#[actix_web::test]
async fn without_record_devices_nothing_about_the_device_is_stored() {
    let backend = Backend::redis();
    let sessions = backend
        .builder(key(1))
        .record_devices(false)
        .build()
        .unwrap();
    let admin = sessions.admin();
    let srv = suite::serve_users(sessions);
    let mut client = Client::new(&srv).with_header("user-agent", "Laptop");
    assert_eq!(client.get("/signin/alice").await.status, 200);
    let devices = admin.sessions_of("alice").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        (devices[0].user_agent(), devices[0].network()),
        (None, None)
    );
    let server = backend.redis_server().unwrap();
    let mut conn = server.conn();
    for key in server.keys() {
        let fields: Vec<String> = ::redis::cmd("HKEYS").arg(&key).query(&mut conn).unwrap();
        assert!(
            !fields.iter().any(|f| f == "m:a" || f == "m:i"),
            "{key}: {fields:?}"
        );
    }
}
