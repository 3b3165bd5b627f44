//! Flash messages over the session, on every store, through real HTTP.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{all_at_once, key, serve, serve_concurrent, Backend, Client};
use futures_util::future::join_all;

per_backend!(
    a_message_is_shown_once_on_a_later_request,
    messages_keep_their_order_and_debug_is_dropped_by_default,
    the_minimum_level_is_configurable,
    now_messages_are_shown_in_the_current_response_only,
    unread_messages_wait_for_a_request_that_reads_them,
    messages_sent_while_showing_others_are_kept_for_the_next_request,
    messages_can_be_sent_from_the_blocking_thread_pool,
    limits_are_errors_not_panics,
    a_request_without_messages_writes_nothing_and_sets_no_cookie,
    reading_messages_never_drops_a_concurrent_requests_field,
    login_and_logout_flow_shows_each_message_once_and_ends_with_no_cookie,
    concurrent_senders_all_keep_their_message,
    reads_racing_sends_never_drop_a_new_message_nor_show_one_twice,
);

// The cookie store too, but for the concurrent cases: each response carries the whole
// session, so concurrent requests of one client cannot merge their changes (the last response
// the browser keeps wins). Not applicable:
// - concurrent_senders_all_keep_their_message.
// - reading_messages_never_drops_a_concurrent_requests_field.
// - reads_racing_sends_never_drop_a_new_message_nor_show_one_twice.
on_cookie_store!(
    a_message_is_shown_once_on_a_later_request,
    messages_keep_their_order_and_debug_is_dropped_by_default,
    the_minimum_level_is_configurable,
    now_messages_are_shown_in_the_current_response_only,
    unread_messages_wait_for_a_request_that_reads_them,
    messages_sent_while_showing_others_are_kept_for_the_next_request,
    messages_can_be_sent_from_the_blocking_thread_pool,
    limits_are_errors_not_panics,
    a_request_without_messages_writes_nothing_and_sets_no_cookie,
    login_and_logout_flow_shows_each_message_once_and_ends_with_no_cookie,
);

mod suite {
    use super::*;

    pub async fn a_message_is_shown_once_on_a_later_request(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/flash/send/success/hello").await;
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"success","content":"hello"}]"#
        );
        assert_eq!(client.get("/flash/show").await.body, "[]");
    }

    pub async fn messages_keep_their_order_and_debug_is_dropped_by_default(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        for (level, text) in [
            ("info", "a"),
            ("debug", "b"),
            ("error", "c"),
            ("warning", "d"),
        ] {
            client.get(&format!("/flash/send/{level}/{text}")).await;
        }
        assert_eq!(
            client.get("/flash/show").await.body,
            concat!(
                r#"[{"level":"info","content":"a"},{"level":"error","content":"c"},"#,
                r#"{"level":"warning","content":"d"}]"#
            )
        );
    }

    pub async fn the_minimum_level_is_configurable(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .flash_min_level(actix_redis_session::Level::Debug)
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        client.get("/flash/send/debug/trace").await;
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"debug","content":"trace"}]"#
        );

        let sessions = backend
            .builder(key(1))
            .flash_min_level(actix_redis_session::Level::Warning)
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        client.get("/flash/send/success/ok").await;
        client.get("/flash/send/error/bad").await;
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"error","content":"bad"}]"#
        );
    }

    pub async fn now_messages_are_shown_in_the_current_response_only(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/flash/send/info/earlier").await;
        assert_eq!(
            client.get("/flash/now/careful").await.body,
            r#"[{"level":"info","content":"earlier"},{"level":"warning","content":"careful"}]"#
        );
        assert_eq!(client.get("/flash/show").await.body, "[]");
        // A `now` message alone never creates a session.
        let mut newcomer = Client::new(&srv);
        let res = newcomer.get("/flash/now/hi").await;
        assert!(res.set_cookies.is_empty());
    }

    pub async fn unread_messages_wait_for_a_request_that_reads_them(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/flash/send/info/waiting").await;
        for _ in 0..3 {
            client.get("/count").await;
            client.get("/plain").await;
        }
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"info","content":"waiting"}]"#
        );
    }

    pub async fn messages_sent_while_showing_others_are_kept_for_the_next_request(
        backend: Backend,
    ) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/flash/send/info/one").await;
        assert_eq!(
            client.get("/flash/show-and-send/two").await.body,
            r#"[{"level":"info","content":"one"}]"#
        );
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"info","content":"two"}]"#
        );
    }

    pub async fn messages_can_be_sent_from_the_blocking_thread_pool(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        assert_eq!(
            client.get("/flash/blocking/from-a-thread").await.body,
            "sent"
        );
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"success","content":"from-a-thread"}]"#
        );
    }

    pub async fn limits_are_errors_not_panics(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .flash_max_messages(2)
            .flash_max_message_size(10)
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/flash/send/info/0123456789").await.status, 200);
        let res = client.get("/flash/send/info/0123456789X").await;
        assert_eq!(
            (res.status, res.body.as_str()),
            (500, "Internal Server Error")
        );
        assert_eq!(client.get("/flash/send/info/b").await.status, 200);
        assert_eq!(
            client.get("/flash/send/info/c").await.status,
            500,
            "a third waits"
        );
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"info","content":"0123456789"},{"level":"info","content":"b"}]"#
        );
        assert_eq!(
            client.get("/flash/send/info/c").await.status,
            200,
            "room again"
        );
    }

    pub async fn a_request_without_messages_writes_nothing_and_sets_no_cookie(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        let res = client.get("/flash/show").await;
        assert!(res.set_cookies.is_empty());
        assert_eq!(
            backend.stored_sessions(),
            0,
            "no session for reading nothing"
        );
        client.get("/count").await;
        if let Some(server) = backend.redis_server() {
            server.reset_stats();
        }
        let res = client.get("/flash/show").await;
        assert_eq!(res.body, "[]");
        assert!(res.set_cookies.is_empty());
        if let Some(server) = backend.redis_server() {
            let calls = server.command_calls();
            let names: Vec<&str> = calls.keys().map(String::as_str).collect();
            if matches!(backend, Backend::Cached(..)) {
                // From the cache, or (its entry not back yet) a load with the TTL read;
                // with touch_after, never a write.
                assert!(
                    names.iter().all(|n| ["hgetall", "pttl"].contains(n)),
                    "only the load: {calls:?}"
                );
            } else {
                assert_eq!(names, ["hgetall", "pexpire"], "only the load: {calls:?}");
            }
        }
    }

    pub async fn reading_messages_never_drops_a_concurrent_requests_field(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        client.get("/flash/send/info/once").await;
        let header = client.cookie_header().unwrap();
        let writers = (0..20).map(|i| {
            let (client, header) = (&client, &header);
            async move { client.send(&format!("/set/f{i}/v{i}"), Some(header)).await }
        });
        let reader = client.send("/flash/show", Some(&header));
        let (writes, read) = futures_util::future::join(join_all(writers), reader).await;
        assert!(writes.iter().all(|r| r.status == 200));
        assert_eq!(read.body, r#"[{"level":"info","content":"once"}]"#);
        let entries: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&client.get("/entries").await.body).unwrap();
        assert_eq!(entries.len(), 21, "{entries:?}");
        assert_eq!(client.get("/flash/show").await.body, "[]");
    }

    pub async fn login_and_logout_flow_shows_each_message_once_and_ends_with_no_cookie(
        backend: Backend,
    ) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let anonymous = client.jar["sid"].clone();
        client.get("/login/alice").await;
        assert_ne!(client.jar["sid"], anonymous, "login renews the id");
        assert_eq!(
            client.get("/flash/show").await.body,
            r#"[{"level":"success","content":"Signed in"}]"#
        );
        assert_eq!(client.get("/flash/show").await.body, "[]");
        assert_eq!(client.get("/get/user").await.body, "\"alice\"");

        let logged_in = client.jar["sid"].clone();
        client.get("/logout").await;
        assert_ne!(
            client.jar["sid"], logged_in,
            "the flash rides in a new session"
        );
        assert_eq!(client.get("/get/user").await.body, "none");
        let res = client.get("/flash/show").await;
        assert_eq!(res.body, r#"[{"level":"info","content":"Signed out"}]"#);
        assert_eq!(
            res.set_cookie("sid").map(|c| c.value()),
            Some(""),
            "nothing left: the session is deleted and the cookie removed"
        );
        assert!(client.jar.is_empty());
        assert_eq!(backend.stored_sessions(), 0);
    }

    /// The contents of a `/flash/show` body.
    pub fn shown(body: &str) -> Vec<String> {
        let messages: Vec<serde_json::Value> = serde_json::from_str(body).expect(body);
        messages
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn concurrent_senders_all_keep_their_message(backend: Backend) {
        let srv = serve_concurrent(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let header = client.cookie_header().unwrap();
        let paths: Vec<String> = (0..8).map(|i| format!("/flash/send/info/m{i}")).collect();
        for res in all_at_once(&client, &paths, &header).await {
            assert_eq!(res.status, 200);
        }
        let shown: BTreeSet<String> = shown(&client.get("/flash/show").await.body)
            .into_iter()
            .collect();
        let sent: BTreeSet<String> = (0..8).map(|i| format!("m{i}")).collect();
        assert_eq!(shown, sent);
        assert_eq!(client.get("/flash/show").await.body, "[]");
    }

    pub async fn reads_racing_sends_never_drop_a_new_message_nor_show_one_twice(backend: Backend) {
        let srv = serve_concurrent(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let header = client.cookie_header().unwrap();
        let mut seen = Vec::new();
        let mut sent = BTreeSet::new();
        for round in 0..10 {
            // A reader between three senders, all at once. (Two readers at once may both
            // show the same messages, as in Rails and Django: each shows what it loaded.)
            let mut paths = Vec::new();
            for k in 0..3 {
                paths.push(format!("/flash/send/info/r{round}s{k}"));
                sent.insert(format!("r{round}s{k}"));
                if k == 1 {
                    paths.push("/flash/show".to_owned());
                }
            }
            for (path, res) in paths
                .iter()
                .zip(all_at_once(&client, &paths, &header).await)
            {
                assert_eq!(res.status, 200, "{path}");
                if path == "/flash/show" {
                    seen.extend(shown(&res.body));
                }
            }
        }
        seen.extend(shown(&client.get("/flash/show").await.body));
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "shown twice: {seen:?}");
        assert_eq!(unique, sent, "every message is shown exactly once");
    }
}

/// Before 0.2 all waiting messages were one JSON list in the field `f`; a session stored then
/// still shows them, once, before the newer ones.
#[actix_web::test]
async fn messages_stored_by_the_previous_release_are_still_shown_once() {
    let backend = Backend::redis();
    let server = backend.redis_server().unwrap();
    let srv = serve(backend.sessions(key(1)));
    let mut client = Client::new(&srv);
    client.get("/count").await;
    let keys = server.keys();
    let legacy = b"\x01[{\"level\":\"info\",\"content\":\"old\"}]".to_vec();
    ::redis::cmd("HSET")
        .arg(&keys[0])
        .arg("f")
        .arg(legacy)
        .query::<()>(&mut server.conn())
        .unwrap();
    client.get("/flash/send/success/new").await;
    assert_eq!(
        suite::shown(&client.get("/flash/show").await.body),
        ["old", "new"]
    );
    assert_eq!(client.get("/flash/show").await.body, "[]");
    let fields: Vec<String> = ::redis::cmd("HKEYS")
        .arg(&keys[0])
        .query(&mut server.conn())
        .unwrap();
    assert!(fields.iter().all(|f| !f.starts_with('f')), "{fields:?}");
}
