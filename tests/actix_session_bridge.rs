//! The bridge from actix-session against the real thing: actix-session 0.11 with its Redis
//! store writes sessions into a real redis-server through its own middleware, then our
//! middleware with `migrate_from_actix_session` takes them over: values and TTLs intact,
//! old key replaced by a short-lived forward to the new session (which the requests sent
//! along with the moving one follow), old cookie removed, for private and signed cookies;
//! tampered and expired old cookies, and tampered forwards, are fresh sessions.

mod common;

use actix_redis_session::{ActixContentSecurity, FromActixSession, RedisSession};
use actix_session::{
    config::{BrowserSession, CookieContentSecurity},
    storage::RedisSessionStore,
    Session as OldSession, SessionMiddleware,
};
use actix_web::{cookie::Key as CookieKey, web, App, HttpResponse};
use redis::Commands as _;
use serde::{Deserialize, Serialize};

use self::common::{key, Client, RedisServer};

/// actix-session's master key (64 bytes), as `cookie::Key::master()` gives it.
fn old_master() -> Vec<u8> {
    (0u8..64)
        .map(|b| b.wrapping_mul(7).wrapping_add(3))
        .collect()
}

/// A value the old application stored.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Cart {
    items: Vec<u32>,
}

/// The application as it was: actix-session with its Redis store, a 2-hour state TTL.
async fn old_app(server: &RedisServer, security: CookieContentSecurity) -> actix_test::TestServer {
    let store = RedisSessionStore::new(server.url())
        .await
        .expect("actix-session's Redis store connects");
    let key = CookieKey::from(&old_master());
    actix_test::start(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_name("id".to_owned())
                    .cookie_content_security(security)
                    .session_lifecycle(
                        BrowserSession::default()
                            .state_ttl(actix_web::cookie::time::Duration::hours(2)),
                    )
                    .build(),
            )
            .route(
                "/old/login/{user}",
                web::get().to(|session: OldSession, user: web::Path<String>| async move {
                    session.insert("user_id", user.into_inner()).unwrap();
                    session.insert("cart", Cart { items: vec![1, 2] }).unwrap();
                    session.insert("visits", 3u32).unwrap();
                    HttpResponse::Ok().body("ok")
                }),
            )
            .route(
                "/old/get",
                web::get().to(|session: OldSession| async move {
                    let user: Option<String> = session.get("user_id").unwrap_or_default();
                    HttpResponse::Ok().body(user.unwrap_or_else(|| "none".to_owned()))
                }),
            )
    })
}

/// The application now: our middleware, taking actix-session's sessions over.
fn new_app(server: &RedisServer, security: ActixContentSecurity) -> actix_test::TestServer {
    let sessions = RedisSession::builder(server.url(), key(1))
        .idle_timeout(std::time::Duration::from_secs(24 * 3600))
        .migrate_from_actix_session(
            FromActixSession::new(&old_master())
                .cookie_name("id")
                .content_security(security),
        )
        .build()
        .unwrap();
    common::serve_concurrent(sessions)
}

/// The keys actix-session wrote (64 alphanumeric characters, no prefix) with what they hold
/// now.
fn old_values(server: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let mut conn = server.conn();
    server
        .keys()
        .into_iter()
        .filter(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|k| {
            let value: Vec<u8> = conn.get(&k).unwrap();
            (k, value)
        })
        .collect()
}

/// The keys holding actix-session states (a JSON map), not moved yet.
fn old_keys(server: &RedisServer) -> Vec<String> {
    old_values(server)
        .into_iter()
        .filter(|(_, v)| v.starts_with(b"{"))
        .map(|(k, _)| k)
        .collect()
}

/// The keys where a move left its forward in place of the state, with their values.
fn forwards(server: &RedisServer) -> Vec<(String, Vec<u8>)> {
    old_values(server)
        .into_iter()
        .filter(|(_, v)| !v.starts_with(b"{"))
        .collect()
}

fn our_keys(server: &RedisServer) -> Vec<String> {
    server
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("session:"))
        .collect()
}

async fn signed_in_under_actix_session(old: &actix_test::TestServer, user: &str) -> Client {
    let mut client = Client::new(old);
    let res = client.get(&format!("/old/login/{user}")).await;
    assert_eq!(res.status, 200);
    assert!(
        client.jar.contains_key("id"),
        "actix-session set its cookie"
    );
    client
}

async fn takes_sessions_over(old_security: CookieContentSecurity, ours: ActixContentSecurity) {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, old_security).await;
    let new = new_app(&server, ours);
    let alice = signed_in_under_actix_session(&old, "alice").await;
    let bob = signed_in_under_actix_session(&old, "bob").await;
    let old_of_alice = old_keys(&server);
    assert_eq!(old_of_alice.len(), 2);
    let mut conn = server.conn();

    // Alice's first request to the new application: her values, a cookie of ours, the old
    // one removed, the old state replaced by a forward living a minute, the time left kept.
    let mut alice = Client::with_jar(&new, alice.jar);
    server.reset_stats();
    let res = alice.get("/get/user_id").await;
    assert_eq!((res.status, res.body.as_str()), (200, "\"alice\""));
    assert!(res.set_cookie("sid").is_some(), "our cookie: {res:?}");
    let removal = res.set_cookie("id").expect("the old cookie is removed");
    assert_eq!(
        removal.max_age(),
        Some(actix_web::cookie::time::Duration::ZERO)
    );
    assert_eq!(removal.path(), Some("/"));
    assert!(!alice.jar.contains_key("id"));
    let calls = server.command_calls();
    assert_eq!(
        calls.get("get"),
        Some(&2),
        "one read of the old session, one in the forward's script: {calls:?}"
    );
    assert_eq!(calls.get("eval"), Some(&1), "{calls:?}");
    assert_eq!(old_keys(&server).len(), 1, "alice's old state is gone");
    let [(forward, _)] = forwards(&server).try_into().expect("alice's forward");
    let ttl: i64 = conn.pttl(&forward).unwrap();
    assert!(
        (1..=60_000).contains(&ttl),
        "a forward lives a minute: {ttl}"
    );
    let ours = our_keys(&server);
    assert_eq!(ours.len(), 1);
    let ttl: i64 = conn.pttl(&ours[0]).unwrap();
    assert!(
        (7_000_000..=7_200_000).contains(&ttl),
        "the old TTL (2 h) is kept, not our 24 h: {ttl}"
    );
    // Values of every type, as actix-session stored them.
    assert_eq!(alice.get("/get/cart").await.body, r#"{"items":[1,2]}"#);
    assert_eq!(alice.get("/get/visits").await.body, "3");
    // From now on it is a session of ours: no further migration, it is written as ours.
    server.reset_stats();
    assert_eq!(alice.get("/set/theme/dark").await.body, "ok");
    assert_eq!(alice.get("/get/user_id").await.body, "\"alice\"");
    assert_eq!(server.command_calls().get("get"), None);
    assert_eq!(our_keys(&server), ours);

    // Bob's cookie, tampered with: a fresh session, his old record left alone.
    let mut tampered = bob.jar.clone();
    let value = tampered.get_mut("id").unwrap();
    let flipped = if value.ends_with('A') { 'B' } else { 'A' };
    value.pop();
    value.push(flipped);
    let mut mallory = Client::with_jar(&new, tampered);
    let res = mallory.get("/get/user_id").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(res.set_cookie("sid").is_none(), "nothing stored, no cookie");
    // Left alone (a misconfigured bridge must not delete every old user's cookie), until a
    // session of ours replaces it.
    assert!(res.set_cookie("id").is_none(), "{res:?}");
    assert_eq!(old_keys(&server).len(), 1, "bob's old record stays");
    let res = mallory.get("/set/a/1").await;
    assert!(res.set_cookie("sid").is_some());
    assert!(res.set_cookie("id").is_some(), "replaced by ours: removed");
    // Garbage and empty values too.
    for junk in ["", "x", "%%%", "AAAA", &"A".repeat(5000)] {
        let res = Client::new(&new)
            .send("/get/user_id", Some(&format!("id={junk}")))
            .await;
        assert_eq!((res.status, res.body.as_str()), (200, "none"), "{junk:?}");
    }

    // Bob's real cookie once his old session has expired (Redis expires it): a fresh session.
    for old in old_keys(&server) {
        let _: () = conn.pexpire(&old, 1).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(old_keys(&server).is_empty());
    let mut bob = Client::with_jar(&new, bob.jar);
    let res = bob.get("/get/user_id").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(
        res.set_cookie("id").is_none(),
        "no session of ours replaces it yet"
    );
    assert_eq!(our_keys(&server).len(), 2, "alice's and mallory's");
}

#[actix_web::test]
async fn private_actix_session_cookies_are_taken_over() {
    takes_sessions_over(
        CookieContentSecurity::Private,
        ActixContentSecurity::Private,
    )
    .await;
}

#[actix_web::test]
async fn signed_actix_session_cookies_are_taken_over() {
    takes_sessions_over(CookieContentSecurity::Signed, ActixContentSecurity::Signed).await;
}

#[actix_web::test]
async fn a_cookie_of_the_other_kind_is_a_fresh_session() {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Signed).await;
    let new = new_app(&server, ActixContentSecurity::Private);
    let client = signed_in_under_actix_session(&old, "carol").await;
    let mut client = Client::with_jar(&new, client.jar);
    let res = client.get("/get/user_id").await;
    assert_eq!(res.body, "none");
    assert!(res.set_cookie("id").is_none(), "its cookie stays: {res:?}");
    assert_eq!(old_keys(&server).len(), 1, "left alone");
}

/// A page whose requests all carry the old cookie at once, on four workers: the session
/// moves exactly once; the responses that carry our cookie (the move's, and those of the
/// requests that followed its forward) all carry the same, and it holds the values.
#[actix_web::test]
async fn concurrent_first_requests_move_the_session_once() {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Private).await;
    let new = new_app(&server, ActixContentSecurity::Private);
    let dave = signed_in_under_actix_session(&old, "dave").await;
    let client = Client::with_jar(&new, dave.jar.clone());
    let header = client.cookie_header().unwrap();
    let paths: Vec<String> = (0..16).map(|_| "/get/user_id".to_owned()).collect();
    let responses = common::all_at_once(&client, &paths, &header).await;
    assert!(responses.iter().all(|r| r.status == 200), "{responses:?}");
    let ours: std::collections::BTreeSet<_> = responses
        .iter()
        .filter_map(|r| r.set_cookie("sid"))
        .map(|c| c.value().to_owned())
        .collect();
    assert_eq!(ours.len(), 1, "one move: {responses:?}");
    assert!(old_keys(&server).is_empty());
    assert_eq!(forwards(&server).len(), 1);
    assert_eq!(
        our_keys(&server).len(),
        1,
        "the copies of the other moves are gone"
    );
    let mut jar = std::collections::BTreeMap::new();
    jar.insert("sid".to_owned(), ours.into_iter().next().unwrap());
    let mut dave = Client::with_jar(&new, jar);
    assert_eq!(dave.get("/get/user_id").await.body, "\"dave\"");
    assert_eq!(dave.get("/get/visits").await.body, "3");
}

/// A request the browser sent with the moving one, but which reaches the server after the
/// move (so with only the old cookie): it follows the forward to the moved session, gets our
/// cookie for it too, and what it writes lands there. A forward does not open under another
/// key or once tampered with, and leads nowhere once the session it names has ended.
#[actix_web::test]
async fn a_request_sent_along_with_the_move_follows_it() {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Private).await;
    let new = new_app(&server, ActixContentSecurity::Private);
    let erin = signed_in_under_actix_session(&old, "erin").await;
    let old_cookie = erin.cookie_header().unwrap();
    let mut moving = Client::with_jar(&new, erin.jar.clone());
    let res = moving.get("/get/user_id").await;
    assert_eq!(res.body, "\"erin\"");
    let sid = res
        .set_cookie("sid")
        .expect("our cookie")
        .value()
        .to_owned();
    let [(erin_key, erin_forward)] = forwards(&server).try_into().expect("a forward");
    // An instance still on actix-session (a rolling deploy, a rollback) takes the forward
    // for a state it cannot read: a fresh session there, not an error, and the forward
    // stays.
    let res = Client::new(&old).send("/old/get", Some(&old_cookie)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"), "{res:?}");
    assert_eq!(
        forwards(&server),
        [(erin_key.clone(), erin_forward.clone())]
    );

    // Late with the old cookie: the moved session, our cookie for it, the old one removed.
    let late = Client::new(&new);
    let res = late.send("/get/user_id", Some(&old_cookie)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "\"erin\""));
    assert_eq!(
        res.set_cookie("sid").map(|c| c.value().to_owned()),
        Some(sid.clone())
    );
    assert!(
        res.set_cookie("id").is_some(),
        "the old cookie goes: {res:?}"
    );
    let res = late.send("/set/tab/second", Some(&old_cookie)).await;
    assert_eq!(res.body, "ok");
    assert_eq!(
        moving.get("/get/tab").await.body,
        "\"second\"",
        "one session"
    );
    assert_eq!(our_keys(&server).len(), 1, "no second session");

    // Another user's old key with erin's forward copied over it: it does not open there.
    let frank = signed_in_under_actix_session(&old, "frank").await;
    let frank_cookie = frank.cookie_header().unwrap();
    let mut conn = server.conn();
    let [frank_key] = old_keys(&server).try_into().expect("frank's state");
    let _: () = conn.set(&frank_key, &erin_forward).unwrap();
    let res = Client::new(&new)
        .send("/get/user_id", Some(&frank_cookie))
        .await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(res.set_cookie("sid").is_none(), "{res:?}");
    // Tampered with (each part in turn: prefix, nonce, sealed id, tag): a fresh session.
    for at in [
        0,
        erin_forward.len() - 60,
        erin_forward.len() - 20,
        erin_forward.len() - 1,
    ] {
        let mut tampered = erin_forward.clone();
        tampered[at] ^= 1;
        let _: () = conn.set(&erin_key, &tampered).unwrap();
        let res = Client::new(&new)
            .send("/get/user_id", Some(&old_cookie))
            .await;
        assert_eq!((res.status, res.body.as_str()), (200, "none"), "byte {at}");
    }
    let _: () = conn.set(&erin_key, &erin_forward).unwrap();
    assert_eq!(
        Client::new(&new)
            .send("/get/user_id", Some(&old_cookie))
            .await
            .body,
        "\"erin\""
    );
    // Once the moved session ends (a logout), the forward leads to a fresh session.
    assert_eq!(moving.get("/purge").await.status, 200);
    let res = Client::new(&new)
        .send("/get/user_id", Some(&old_cookie))
        .await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(res.set_cookie("sid").is_none(), "{res:?}");
}

/// Two requests that both read the old state before either moved it: the first to swap its
/// forward in keeps its copy and sets its cookie; the other finds that forward, deletes its
/// own copy and sets none; later requests with the old cookie follow the first.
#[actix_web::test]
async fn of_two_moves_the_first_forward_wins() {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Private).await;
    let new = new_app(&server, ActixContentSecurity::Private);
    let gus = signed_in_under_actix_session(&old, "gus").await;
    let client = Client::with_jar(&new, gus.jar.clone());
    let header = client.cookie_header().unwrap();
    server.reset_stats();
    let (slow, fast) =
        futures_util::future::join(client.send("/slow-set/400/slow/1", Some(&header)), async {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
            client.send("/set/fast/1", Some(&header)).await
        })
        .await;
    assert_eq!((slow.status, fast.status), (200, 200));
    assert_eq!(server.command_calls().get("eval"), Some(&2), "both moved");
    let sid = fast.set_cookie("sid").expect("the first move's cookie");
    assert!(slow.set_cookie("sid").is_none(), "{slow:?}");
    assert_eq!(our_keys(&server).len(), 1, "the second copy is gone");
    let mut jar = std::collections::BTreeMap::new();
    jar.insert("sid".to_owned(), sid.value().to_owned());
    let mut gus = Client::with_jar(&new, jar);
    assert_eq!(gus.get("/get/fast").await.body, "\"1\"");
    assert_eq!(gus.get("/get/user_id").await.body, "\"gus\"");
    let res = client.send("/get/fast", Some(&header)).await;
    assert_eq!(res.body, "\"1\"", "the old cookie follows the first move");
}

/// The bridge needs Redis, and actix-session's 64-byte key.
#[test]
fn the_builder_refuses_what_the_bridge_cannot_work_with() {
    let e = RedisSession::builder_with_memory(Default::default(), key(1))
        .migrate_from_actix_session(FromActixSession::new(&old_master()))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("migrate_from_actix_session"), "{e}");
    let e = RedisSession::builder("redis://127.0.0.1:1", key(1))
        .migrate_from_actix_session(FromActixSession::new(&old_master()[..32]))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("64"), "{e}");
}

/// actix-session with a `cache_keygen` prefix and the cookie name we use too, taken over by a
/// middleware on the multiplexed transport that seals its values: the options all meet.
#[actix_web::test]
async fn a_key_prefix_a_shared_cookie_name_and_sealed_values() {
    let server = RedisServer::start_tcp();
    let store = RedisSessionStore::builder(server.url())
        .cache_keygen(|key| format!("old:{key}"))
        .build()
        .await
        .unwrap();
    let old_key = CookieKey::from(&old_master());
    let old = actix_test::start(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), old_key.clone())
                    .cookie_name("sid".to_owned())
                    .build(),
            )
            .route(
                "/old/login/{user}",
                web::get().to(|session: OldSession, user: web::Path<String>| async move {
                    session.insert("user_id", user.into_inner()).unwrap();
                    HttpResponse::Ok().body("ok")
                }),
            )
    });
    let sessions = RedisSession::builder(server.url(), key(1))
        .transport(actix_redis_session::Transport::Multiplexed)
        .encrypt_at_rest(true)
        .migrate_from_actix_session(
            FromActixSession::new(&old_master())
                .cookie_name("sid")
                .key_prefix("old:"),
        )
        .build()
        .unwrap();
    let new = common::serve(sessions);
    let mut client = Client::new(&old);
    client.get("/old/login/erin").await;
    assert!(server.keys().iter().any(|k| k.starts_with("old:")));
    let mut client = Client::with_jar(&new, client.jar);
    let res = client.get("/get/user_id").await;
    assert_eq!(res.body, "\"erin\"");
    // One Set-Cookie for the shared name: ours, which replaces theirs.
    assert_eq!(res.set_cookies.len(), 1, "{res:?}");
    // The old state is replaced by its forward.
    let old_keys: Vec<String> = server
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("old:"))
        .collect();
    let [old_key] = old_keys.try_into().expect("one key under old:");
    let left: Vec<u8> = server.conn().get(&old_key).unwrap();
    assert!(!left.starts_with(b"{"), "no state left");
    let ours = our_keys(&server);
    let stored: Vec<u8> = server.conn().hget(&ours[0], "d:user_id").unwrap();
    assert_eq!(stored[0] & 0x20, 0x20, "sealed at rest");
    assert_eq!(client.get("/get/user_id").await.body, "\"erin\"");
}

/// What a handler does on the request that moves the session: a login (renew, set_user)
/// moves it under the user; a logout ends the old session and both cookies.
#[actix_web::test]
async fn login_and_logout_on_the_moving_request() {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Private).await;
    let sessions = RedisSession::builder(server.url(), key(1))
        .migrate_from_actix_session(FromActixSession::new(&old_master()))
        .build()
        .unwrap();
    let admin = sessions.admin();
    let new = actix_test::start(move || {
        App::new()
            .wrap(sessions.clone())
            .configure(common::routes)
            .route(
                "/sign-in/{user}",
                web::get().to(
                    |session: actix_redis_session::Session, user: web::Path<String>| async move {
                        session.renew();
                        session.set_user(user.into_inner())?;
                        Ok::<_, actix_web::Error>("in")
                    },
                ),
            )
    });

    let frank = signed_in_under_actix_session(&old, "frank").await;
    let mut frank = Client::with_jar(&new, frank.jar);
    let res = frank.get("/sign-in/frank").await;
    assert_eq!(res.status, 200);
    assert!(res.set_cookie("sid").is_some() && res.set_cookie("id").is_some());
    assert!(old_keys(&server).is_empty());
    // A login: no forward, the old cookie must not lead to the signed-in session.
    assert!(forwards(&server).is_empty());
    assert_eq!(frank.get("/get/user_id").await.body, "\"frank\"");
    let of_frank = admin.sessions_of("frank").await.unwrap();
    assert_eq!(of_frank.len(), 1, "in frank's index");

    let grace = signed_in_under_actix_session(&old, "grace").await;
    let mut grace = Client::with_jar(&new, grace.jar);
    let before = our_keys(&server).len();
    let res = grace.get("/purge").await;
    assert_eq!(res.status, 200);
    assert!(
        res.set_cookie("id").is_some(),
        "the old cookie goes with the logout"
    );
    assert!(old_keys(&server).is_empty(), "the old session is ended");
    assert_eq!(our_keys(&server).len(), before, "nothing stored for it");
}

/// Redis failing on the moving request: FailClosed answers 503, FailOpen a degraded session;
/// either way the old cookie and the old session stay for the next request.
#[actix_web::test]
async fn a_failed_move_keeps_the_old_session() {
    let mut server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Private).await;
    let henry = signed_in_under_actix_session(&old, "henry").await;
    let jar = henry.jar.clone();
    server.stop();
    for policy in [
        actix_redis_session::OnStoreError::FailClosed,
        actix_redis_session::OnStoreError::FailOpen,
    ] {
        let sessions = RedisSession::builder(server.url(), key(1))
            .connect_timeout(std::time::Duration::from_millis(200))
            .store_budget(std::time::Duration::from_millis(500))
            .on_store_error(policy)
            .migrate_from_actix_session(FromActixSession::new(&old_master()))
            .build()
            .unwrap();
        let new = common::serve(sessions);
        let res = Client::with_jar(&new, jar.clone())
            .get("/get/user_id")
            .await;
        let expected = match policy {
            actix_redis_session::OnStoreError::FailClosed => 503,
            _ => 200,
        };
        assert_eq!(res.status, expected, "{policy:?}: {res:?}");
        assert!(res.set_cookie("id").is_none(), "{policy:?}: {res:?}");
        assert!(res.set_cookie("sid").is_none(), "{policy:?}: {res:?}");
    }
}

/// A session larger than the new middleware's limits is not moved (its next load would
/// discard it): it stays, with its cookie.
#[actix_web::test]
async fn a_session_over_the_limits_stays_where_it_is() {
    let server = RedisServer::start_tcp();
    let old = old_app(&server, CookieContentSecurity::Private).await;
    let sessions = RedisSession::builder(server.url(), key(1))
        .max_value_size(8)
        .migrate_from_actix_session(FromActixSession::new(&old_master()))
        .build()
        .unwrap();
    let new = common::serve(sessions);
    let ivy = signed_in_under_actix_session(&old, "ivy").await;
    let mut ivy = Client::with_jar(&new, ivy.jar);
    let res = ivy.get("/get/user_id").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(res.set_cookie("id").is_none());
    assert_eq!(old_keys(&server).len(), 1, "not moved, not deleted");
    assert!(our_keys(&server).is_empty());
}
