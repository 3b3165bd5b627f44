//! The acceptance suite: written once, run against every store over real HTTP.

#[macro_use]
mod common;

use std::time::Duration;

use actix_web::{cookie::SameSite, App};
use common::{all_at_once, key, serve, serve_concurrent, Backend, Client, WORKERS};

per_backend_and_cluster!(
    a_visitor_without_data_gets_no_cookie_and_nothing_is_stored,
    values_persist_and_the_cookie_has_safe_defaults,
    a_request_that_changes_nothing_sets_no_cookie,
    bad_cookies_get_a_fresh_session_never_an_error,
    a_validly_signed_but_unknown_id_is_never_adopted,
    renew_moves_the_data_to_a_new_id_and_kills_the_old_cookie,
    purge_deletes_the_session_and_removes_the_cookie,
    values_inserted_after_purge_start_a_new_session,
    concurrent_updates_to_different_fields_all_persist,
    typed_session_is_read_changed_and_written_back,
    map_operations_behave_like_a_map,
    a_session_left_without_values_is_deleted_and_its_cookie_removed,
    clear_then_insert_keeps_the_session_and_its_id,
    the_idle_timeout_slides_and_expires_unused_sessions,
    with_touch_after_the_idle_timeout_moves_at_most_once_per_interval,
    with_touch_after_a_short_remember_me_lifetime_still_slides,
    the_absolute_timeout_ends_even_an_active_session,
    remember_me_makes_the_cookie_persistent_and_sets_the_lifetime,
    a_persistent_cookie_moves_its_max_age_on_every_response,
    cookie_attributes_are_configurable_and_the_removal_cookie_matches,
    a_rotated_key_still_accepts_old_cookies_and_re_signs_them,
    limits_give_an_opaque_500_and_keep_the_session,
    a_handler_without_the_middleware_gets_an_error_that_says_how_to_fix_it,
    the_handle_is_stable_and_changes_on_renew,
    a_typed_value_changed_before_a_purge_is_never_stored,
    a_typed_value_changed_before_a_clear_does_not_come_back,
    a_typed_value_changed_before_a_renew_goes_to_the_new_id_only,
    values_json_cannot_give_back_are_refused_with_a_typed_error,
    concurrent_requests_of_many_users_each_get_their_own_session,
    a_renew_that_races_a_logout_never_brings_the_session_back,
    two_renews_at_once_leave_one_working_session,
    a_dead_sessions_cookie_does_not_hide_the_live_one,
    many_copies_of_the_cookie_cost_a_bounded_number_of_checks,
    a_cookie_is_bound_to_its_name_even_under_a_shared_key,
    update_or_stores_the_default_as_is_when_missing,
    clear_reports_changed_even_on_an_empty_session,
    a_guard_routes_signed_in_users,
    middleware_reach_the_session_from_the_response,
    remember_me_can_be_forgotten,
    a_shorter_remember_me_policy_reaches_cookies_issued_before,
    the_total_size_limit_counts_every_name_and_value,
    a_stored_session_over_the_size_limit_is_discarded_on_load,
);

// The cookie store keeps no server state: the cases below hold for it too. Not applicable,
// and why:
// - a_dead_sessions_cookie_does_not_hide_the_live_one: a purged cookie is not dead: nothing on a server to delete (tests/cookie_store.rs: an expired copy does not hide the live one).
// - a_request_that_changes_nothing_sets_no_cookie: every change travels in the cookie, so a change always sets it (unchanged requests do not: tests/cookie_store.rs).
// - a_session_left_without_values_is_deleted_and_its_cookie_removed: counts the server record.
// - a_renew_that_races_a_logout_never_brings_the_session_back: no server record to race on; the old cookie stays valid until it expires.
// - a_stored_session_over_the_size_limit_is_discarded_on_load: writes a record behind the application's back.
// - a_typed_value_changed_before_a_purge_is_never_stored: counts the server record.
// - a_validly_signed_but_unknown_id_is_never_adopted: no ids to look up.
// - a_typed_value_changed_before_a_renew_goes_to_the_new_id_only: the old cookie stays valid: no revocation.
// - bad_cookies_get_a_fresh_session_never_an_error: forges the signed-id format; sealed cookies: tests/cookie_store.rs.
// - clear_then_insert_keeps_the_session_and_its_id: a change always sends a new cookie.
// - concurrent_updates_to_different_fields_all_persist: each response carries the whole session: the last one a client keeps wins.
// - many_copies_of_the_cookie_cost_a_bounded_number_of_checks: forges the signed-id format; sealed cookies: tests/cookie_store.rs.
// - purge_deletes_the_session_and_removes_the_cookie: a copy of the cookie taken before the purge stays valid: no revocation.
// - renew_moves_the_data_to_a_new_id_and_kills_the_old_cookie: the old cookie stays valid: no revocation.
// - two_renews_at_once_leave_one_working_session: the old cookie stays valid: no revocation.
// - values_inserted_after_purge_start_a_new_session: counts the server record (tests/cookie_store.rs covers the rest).
// - values_persist_and_the_cookie_has_safe_defaults: counts the server record (tests/cookie_store.rs checks the defaults).
on_cookie_store!(
    a_visitor_without_data_gets_no_cookie_and_nothing_is_stored,
    typed_session_is_read_changed_and_written_back,
    map_operations_behave_like_a_map,
    the_idle_timeout_slides_and_expires_unused_sessions,
    with_touch_after_the_idle_timeout_moves_at_most_once_per_interval,
    with_touch_after_a_short_remember_me_lifetime_still_slides,
    the_absolute_timeout_ends_even_an_active_session,
    remember_me_makes_the_cookie_persistent_and_sets_the_lifetime,
    a_persistent_cookie_moves_its_max_age_on_every_response,
    cookie_attributes_are_configurable_and_the_removal_cookie_matches,
    a_rotated_key_still_accepts_old_cookies_and_re_signs_them,
    limits_give_an_opaque_500_and_keep_the_session,
    a_handler_without_the_middleware_gets_an_error_that_says_how_to_fix_it,
    the_handle_is_stable_and_changes_on_renew,
    a_typed_value_changed_before_a_clear_does_not_come_back,
    values_json_cannot_give_back_are_refused_with_a_typed_error,
    concurrent_requests_of_many_users_each_get_their_own_session,
    a_cookie_is_bound_to_its_name_even_under_a_shared_key,
    update_or_stores_the_default_as_is_when_missing,
    clear_reports_changed_even_on_an_empty_session,
    a_guard_routes_signed_in_users,
    middleware_reach_the_session_from_the_response,
    remember_me_can_be_forgotten,
    a_shorter_remember_me_policy_reaches_cookies_issued_before,
    the_total_size_limit_counts_every_name_and_value,
);

mod suite {
    use super::*;

    pub async fn a_visitor_without_data_gets_no_cookie_and_nothing_is_stored(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        for path in ["/read", "/plain", "/handle", "/get/x"] {
            let res = client.get(path).await;
            assert_eq!(res.status, 200, "{path}");
            assert!(res.set_cookies.is_empty(), "{path}: {:?}", res.set_cookies);
        }
        assert_eq!(backend.stored_sessions(), 0);
    }

    pub async fn values_persist_and_the_cookie_has_safe_defaults(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        let res = client.get("/count").await;
        assert_eq!((res.status, res.body.as_str()), (200, "1"));
        let cookie = res.set_cookie("sid").expect("a session cookie");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.domain(), None);
        assert_eq!(
            cookie.max_age(),
            None,
            "a browser-session cookie by default"
        );
        assert_eq!(client.get("/count").await.body, "2");
        assert_eq!(client.get("/count").await.body, "3");
        assert_eq!(client.get("/read").await.body, "3");
        assert_eq!(backend.stored_sessions(), 1);
    }

    pub async fn a_request_that_changes_nothing_sets_no_cookie(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        assert!(client.get("/count").await.set_cookie("sid").is_some());
        for path in [
            "/count",
            "/read",
            "/cart",
            "/cart/touch",
            "/set/a/b",
            "/set/a/b",
        ] {
            let res = client.get(path).await;
            assert_eq!(res.status, 200);
            assert!(
                res.set_cookies.is_empty(),
                "{path} set {:?}",
                res.set_cookies
            );
        }
    }

    pub async fn bad_cookies_get_a_fresh_session_never_an_error(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        client.get("/count").await;
        let good = client.jar["sid"].clone();
        let foreign = {
            let other = serve(backend.sessions(key(2)));
            let mut c = Client::new(&other);
            c.get("/count").await;
            c.jar["sid"].clone()
        };
        let (payload, tag) = good.split_once('.').unwrap();
        let flipped = {
            let mut b = payload.as_bytes().to_vec();
            b[3] = if b[3] == b'A' { b'B' } else { b'A' };
            format!("{}.{tag}", String::from_utf8(b).unwrap())
        };
        let bad_values = [
            flipped,
            good[..good.len() - 1].to_owned(),
            good[..10].to_owned(),
            format!("{good}{}", "A".repeat(4000)),
            "%%%.***".to_owned(),
            "no-dot-at-all".to_owned(),
            String::new(),
            foreign,
            format!("{tag}.{payload}"),
        ];
        for bad in &bad_values {
            let header = format!("sid={bad}");
            let res = client.send("/read", Some(&header)).await;
            assert_eq!(
                (res.status, res.body.as_str()),
                (200, "0"),
                "cookie {bad:?}"
            );
            let removal = res.set_cookie("sid").expect("the bad cookie is removed");
            assert_eq!(removal.value(), "", "cookie {bad:?}");
            let res = client.send("/count", Some(&header)).await;
            assert_eq!(
                (res.status, res.body.as_str()),
                (200, "1"),
                "cookie {bad:?}"
            );
            assert_ne!(res.set_cookie("sid").unwrap().value(), good);
        }
        let garbage: [&[u8]; 4] = [
            b"sid=\xff\xfe\xfd",
            b"\xc3\x28=\xa0\xa1; sid=x",
            b";;;===;",
            b"sid",
        ];
        for raw in garbage {
            let res = client.send_bytes("/read", Some(raw)).await;
            assert_eq!((res.status, res.body.as_str()), (200, "0"), "{raw:?}");
        }
        // A duplicate cookie of the same name does not hide the valid one.
        let res = client
            .send("/read", Some(&format!("sid=garbage; sid={good}")))
            .await;
        assert_eq!(res.body, "2");
        // The real session was never touched.
        assert_eq!(client.get("/read").await.body, "2");
    }

    pub async fn a_validly_signed_but_unknown_id_is_never_adopted(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let old = client.jar["sid"].clone();
        client.get("/purge").await;
        let header = format!("sid={old}");
        let res = client.send("/read", Some(&header)).await;
        assert_eq!(res.body, "0");
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
        let res = client.send("/count", Some(&header)).await;
        assert_eq!(res.body, "1");
        let new = res.set_cookie("sid").expect("a new cookie").value();
        assert_ne!(new, old, "the old id must not be reused");
        assert_eq!(backend.stored_sessions(), 1);
    }

    pub async fn renew_moves_the_data_to_a_new_id_and_kills_the_old_cookie(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let old = client.jar["sid"].clone();
        let res = client.get("/renew").await;
        let new = res
            .set_cookie("sid")
            .expect("renew sets a cookie")
            .value()
            .to_owned();
        assert_ne!(new, old);
        assert_eq!(client.get("/get/user").await.body, "\"alice\"");
        let stale = client.send("/get/user", Some(&format!("sid={old}"))).await;
        assert_eq!(stale.body, "none");
        assert_eq!(backend.stored_sessions(), 1);
    }

    pub async fn purge_deletes_the_session_and_removes_the_cookie(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let old = client.jar["sid"].clone();
        let res = client.get("/purge").await;
        let removal = res.set_cookie("sid").expect("a removal cookie");
        assert_eq!(removal.value(), "");
        assert_eq!(
            removal.max_age(),
            Some(actix_web::cookie::time::Duration::ZERO)
        );
        assert_eq!(removal.path(), Some("/"));
        assert_eq!(removal.http_only(), Some(true));
        assert!(client.jar.is_empty());
        assert_eq!(backend.stored_sessions(), 0);
        let stale = client.send("/get/user", Some(&format!("sid={old}"))).await;
        assert_eq!(stale.body, "none");
    }

    pub async fn values_inserted_after_purge_start_a_new_session(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let old = client.jar["sid"].clone();
        let res = client.get("/purge-then-set/flash/bye").await;
        assert_ne!(res.set_cookie("sid").unwrap().value(), old);
        assert_eq!(client.get("/get/user").await.body, "none");
        assert_eq!(client.get("/get/flash").await.body, "\"bye\"");
        assert_eq!(backend.stored_sessions(), 1);
    }

    pub async fn concurrent_updates_to_different_fields_all_persist(backend: Backend) {
        // Several worker threads, 50 requests in flight: the loads and saves interleave.
        let srv = serve_concurrent(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let header = client.cookie_header().unwrap();
        let paths: Vec<String> = (0..50).map(|i| format!("/set/f{i}/v{i}")).collect();
        for res in all_at_once(&client, &paths, &header).await {
            assert_eq!(res.status, 200);
        }
        let entries: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&client.get("/entries").await.body).unwrap();
        assert_eq!(entries.len(), 51, "{entries:?}");
        for i in 0..50 {
            assert_eq!(entries[&format!("f{i}")], format!("v{i}"));
        }
        assert_eq!(entries["count"], 1);
    }

    pub async fn typed_session_is_read_changed_and_written_back(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/cart").await.body, "[]");
        assert_eq!(client.get("/cart/add/7").await.body, "1");
        assert_eq!(client.get("/cart/add/9").await.body, "2");
        assert_eq!(client.get("/cart").await.body, "[7, 9]");
        // Typed data does not leak into the plain key/value view.
        assert_eq!(client.get("/entries").await.body, "{}");
        assert_eq!(client.get("/get/cart").await.body, "none");
    }

    pub async fn map_operations_behave_like_a_map(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        client.get("/count").await;
        assert_eq!(client.get("/contains/count").await.body, "true");
        assert_eq!(client.get("/contains/nope").await.body, "false");
        assert_eq!(client.get("/increment/count").await.body, "true");
        assert_eq!(client.get("/increment/nope").await.body, "false");
        assert_eq!(client.get("/read").await.body, "3");
        client.get("/set/name/bob").await;
        let res = client.get("/remove-as/name").await;
        assert_eq!(res.status, 500, "a string is not a u64");
        assert_eq!(res.body, "Internal Server Error");
        assert_eq!(
            client.get("/get/name").await.body,
            "\"bob\"",
            "kept on error"
        );
        assert_eq!(client.get("/remove-as/count").await.body, "Some(3)");
        assert_eq!(client.get("/remove-as/count").await.body, "None");
        assert_eq!(client.get("/remove/name").await.body, "true");
        assert_eq!(client.get("/remove/name").await.body, "false");
        assert_eq!(client.get("/entries").await.body, "{}");
    }

    pub async fn a_session_left_without_values_is_deleted_and_its_cookie_removed(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/a/1").await;
        client.get("/cart/add/1").await;
        let res = client.get("/clear").await;
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
        assert_eq!(backend.stored_sessions(), 0);
        assert_eq!(client.get("/entries").await.body, "{}");
        assert_eq!(client.get("/cart").await.body, "[]");

        client.get("/set/b/2").await;
        assert_eq!(backend.stored_sessions(), 1);
        let res = client.get("/remove/b").await;
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
        assert_eq!(backend.stored_sessions(), 0);
    }

    pub async fn clear_then_insert_keeps_the_session_and_its_id(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/a/1").await;
        let handle = client.get("/handle").await.body;
        let res = client.get("/purge-then-set/b/2").await;
        assert!(res.set_cookie("sid").is_some(), "purge moves to a new id");
        let handle_after_purge = client.get("/handle").await.body;
        assert_ne!(handle_after_purge, handle);
        let res = client.get("/clear-then-set/c/3").await;
        assert!(res.set_cookies.is_empty(), "clear keeps the id");
        assert_eq!(client.get("/handle").await.body, handle_after_purge);
        assert_eq!(client.get("/entries").await.body, r#"{"c":"3"}"#);
    }

    pub async fn the_idle_timeout_slides_and_expires_unused_sessions(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        client.get("/count").await;
        for _ in 0..3 {
            actix_rt::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(
                client.get("/read").await.body,
                "1",
                "activity keeps it alive"
            );
        }
        actix_rt::time::sleep(Duration::from_millis(1300)).await;
        let res = client.get("/read").await;
        assert_eq!(res.body, "0", "idle for longer than the timeout");
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
    }

    pub async fn with_touch_after_the_idle_timeout_moves_at_most_once_per_interval(
        backend: Backend,
    ) {
        let sessions = backend
            .builder(key(1))
            .idle_timeout(Duration::from_secs(2))
            .touch_after(Duration::from_secs(1))
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        let sleep = |ms| actix_rt::time::sleep(Duration::from_millis(ms));
        client.get("/count").await; // t = 0: expires at 2.0
        sleep(400).await;
        assert_eq!(client.get("/read").await.body, "1"); // 0.4: too early to move it
        sleep(800).await;
        assert_eq!(client.get("/read").await.body, "1"); // 1.2: moved, expires at 3.2
        sleep(1400).await;
        // 2.6: alive thanks to the move at 1.2; moved again, expires at 4.6.
        assert_eq!(client.get("/read").await.body, "1", "the due move happened");
        sleep(400).await;
        assert_eq!(client.get("/read").await.body, "1"); // 3.0: too early again
        sleep(1800).await;
        // 4.8: had the read at 3.0 moved it, it would live until 5.0.
        let res = client.get("/read").await;
        assert_eq!(res.body, "0", "a read before the interval does not move it");
    }

    pub async fn with_touch_after_a_short_remember_me_lifetime_still_slides(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .idle_timeout(Duration::from_secs(60))
            .touch_after(Duration::from_secs(30))
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        client.get("/count").await;
        client.get("/remember/2").await; // the record now lives 2 s from here
        for _ in 0..3 {
            // Moved at least every second (half the lifetime), not every 30 s.
            actix_rt::time::sleep(Duration::from_millis(800)).await;
            assert_eq!(
                client.get("/read").await.body,
                "1",
                "used within its lifetime"
            );
        }
    }

    pub async fn the_absolute_timeout_ends_even_an_active_session(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .absolute_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        client.get("/count").await;
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(client.get("/count").await.body, "2");
        actix_rt::time::sleep(Duration::from_millis(700)).await;
        let res = client.get("/read").await;
        assert_eq!(res.body, "0");
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
        assert_eq!(
            backend.stored_sessions(),
            0,
            "the expired record is deleted"
        );
    }

    pub async fn remember_me_makes_the_cookie_persistent_and_sets_the_lifetime(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let res = client.get("/remember/86400").await;
        let cookie = res.set_cookie("sid").expect("remember sets a cookie");
        assert_eq!(client.get("/remembered").await.body, "Some(86400s)");
        assert_eq!(cookie.max_age().map(|d| d.whole_seconds()), Some(86_400));
        let res = client.get("/read").await;
        assert_eq!(res.body, "1");
        let again = res
            .set_cookie("sid")
            .expect("a persistent cookie moves forward");
        assert_eq!(again.max_age().map(|d| d.whole_seconds()), Some(86_400));

        // The lifetime is the session's, not only the cookie's: a short one runs out.
        client.get("/remember/1").await;
        actix_rt::time::sleep(Duration::from_millis(1400)).await;
        assert_eq!(client.get("/read").await.body, "0");
    }

    pub async fn a_persistent_cookie_moves_its_max_age_on_every_response(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .persistent_cookie(true)
            .idle_timeout(Duration::from_secs(600))
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        for path in ["/count", "/read", "/read"] {
            let res = client.get(path).await;
            let cookie = res.set_cookie("sid").expect("Max-Age is refreshed");
            assert_eq!(cookie.max_age().map(|d| d.whole_seconds()), Some(600));
        }
        assert_eq!(client.get("/read").await.body, "1");
    }

    pub async fn cookie_attributes_are_configurable_and_the_removal_cookie_matches(
        backend: Backend,
    ) {
        let sessions = backend
            .builder(key(1))
            .cookie_name("app_session")
            .cookie_path("/app")
            .cookie_domain("sub.example.test")
            .cookie_secure(false)
            .cookie_http_only(false)
            .cookie_same_site(SameSite::Strict)
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        let res = client.get("/count").await;
        assert!(res.set_cookie("sid").is_none());
        let cookie = res.set_cookie("app_session").expect("renamed cookie");
        assert_eq!(cookie.domain(), Some("sub.example.test"));
        assert_eq!(cookie.path(), Some("/app"));
        assert_eq!(cookie.secure(), None);
        assert_eq!(cookie.http_only(), None);
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(client.get("/count").await.body, "2");
        let removal = client.get("/purge").await;
        let removal = removal.set_cookie("app_session").unwrap();
        assert_eq!(removal.value(), "");
        assert_eq!(removal.max_age().map(|d| d.whole_seconds()), Some(0));
        assert_eq!(removal.domain(), Some("sub.example.test"));
        assert_eq!(removal.path(), Some("/app"));
        assert_eq!(removal.same_site(), Some(SameSite::Strict));
    }

    pub async fn a_rotated_key_still_accepts_old_cookies_and_re_signs_them(backend: Backend) {
        let before = serve(backend.sessions(key(1)));
        let mut client = Client::new(&before);
        client.get("/count").await;
        let old_cookie = client.jar["sid"].clone();
        drop(before);

        let rotated = serve(backend.sessions(key(2).previous_keys([key(1)])));
        let mut client = Client::with_jar(&rotated, client.jar);
        let res = client.get("/read").await;
        assert_eq!(res.body, "1", "the old signature is still accepted");
        let resigned = res.set_cookie("sid").expect("re-signed with the new key");
        assert_ne!(resigned.value(), old_cookie);
        assert!(client.get("/read").await.set_cookies.is_empty());

        let only_new = serve(backend.sessions(key(2)));
        let mut client = Client::with_jar(&only_new, client.jar);
        assert_eq!(client.get("/read").await.body, "1");
        let stale = client
            .send("/read", Some(&format!("sid={old_cookie}")))
            .await;
        assert_eq!(
            stale.body, "0",
            "once the old key is dropped its cookies are dead"
        );
    }

    pub async fn limits_give_an_opaque_500_and_keep_the_session(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .max_value_size(100)
            .max_fields(3)
            .max_key_len(8)
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/try/big/50").await.body, "ok");
        // Key names: 8 bytes are fine, 9 are not (the value does not matter).
        assert_eq!(client.get("/try/set/eightbyt/1").await.body, "ok");
        assert_eq!(
            client.get("/try/set/ninebytes/1").await.body,
            "error: KeyTooLong"
        );
        assert_eq!(client.get("/contains/ninebytes").await.body, "false");
        assert_eq!(client.get("/remove/eightbyt").await.body, "true");
        // 1000 bytes of JSON string plus its quotes and the header byte.
        assert_eq!(
            client.get("/try/big/1000").await.body,
            "error: ValueTooLarge"
        );
        assert_eq!(
            client.get("/try/big/97").await.body,
            "ok",
            "100 bytes stored"
        );
        assert_eq!(client.get("/try/big/98").await.body, "error: ValueTooLarge");
        // Through `?` the client sees an opaque 500.
        let res = client.get("/big/1000").await;
        assert_eq!(
            (res.status, res.body.as_str()),
            (500, "Internal Server Error")
        );
        assert_eq!(client.get("/try/set/a/1").await.body, "ok");
        assert_eq!(client.get("/try/set/b/2").await.body, "ok");
        assert_eq!(
            client.get("/try/set/c/3").await.body,
            "error: TooManyFields",
            "a fourth field is over the limit"
        );
        assert_eq!(client.get("/set/c/3").await.status, 500);
        assert_eq!(
            client.get("/try/set/a/9").await.body,
            "ok",
            "replacing is fine"
        );
        let entries: serde_json::Value =
            serde_json::from_str(&client.get("/entries").await.body).unwrap();
        assert_eq!(entries["big"].as_str().map(str::len), Some(97));
        assert_eq!(entries["a"], "9");
        assert!(entries.get("c").is_none());
    }

    pub async fn a_handler_without_the_middleware_gets_an_error_that_says_how_to_fix_it(
        _backend: Backend,
    ) {
        let srv = actix_test::start(|| App::new().configure(common::routes));
        let mut client = Client::new(&srv);
        let res = client.get("/count").await;
        assert_eq!(res.status, 500);
        assert!(res.body.contains("wrap the App"), "{}", res.body);
        assert_eq!(client.get("/cart").await.status, 500);
    }

    pub async fn the_handle_is_stable_and_changes_on_renew(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let handle = client.get("/handle").await.body;
        assert_eq!(handle.len(), 64);
        assert!(handle.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(client.get("/handle").await.body, handle);
        let renewed = client.get("/renew").await.body;
        assert_ne!(renewed, handle);
        assert_eq!(client.get("/handle").await.body, renewed);
        assert!(!client.jar["sid"].contains(&handle));
    }

    pub async fn a_typed_value_changed_before_a_purge_is_never_stored(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/cart/add/1").await;
        let res = client.get("/cart/add-then-purge/2").await;
        assert_eq!(res.body, "purged");
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
        assert!(client.jar.is_empty());
        assert_eq!(
            backend.stored_sessions(),
            0,
            "nothing from before the purge"
        );
        assert_eq!(client.get("/cart").await.body, "[]");
        // A value built after the purge belongs to the new session.
        client.get("/cart/add/5").await;
        assert_eq!(client.get("/purge-then-cart/6").await.body, "new cart");
        assert_eq!(client.get("/cart").await.body, "[6]");
        assert_eq!(backend.stored_sessions(), 1);
    }

    pub async fn a_typed_value_changed_before_a_clear_does_not_come_back(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/cart/add/1").await;
        assert_eq!(client.get("/cart/add-then-clear/2").await.body, "cleared");
        assert_eq!(client.get("/cart").await.body, "[]");
        assert_eq!(client.get("/get/kept").await.body, "\"after the clear\"");
    }

    pub async fn a_typed_value_changed_before_a_renew_goes_to_the_new_id_only(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/cart/add/1").await;
        let old = client.jar["sid"].clone();
        assert_eq!(client.get("/cart/add-then-renew/2").await.body, "renewed");
        assert_ne!(client.jar["sid"], old);
        assert_eq!(client.get("/cart").await.body, "[1, 2]");
        let stale = client.send("/cart", Some(&format!("sid={old}"))).await;
        assert_eq!(stale.body, "[]", "the old id is dead");
        assert_eq!(backend.stored_sessions(), 1);
    }

    pub async fn values_json_cannot_give_back_are_refused_with_a_typed_error(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        assert_eq!(
            client.get("/try/nan").await.body,
            "error: Serialize / error: Serialize"
        );
        assert_eq!(client.get("/get/nan").await.body, "none");
        assert_eq!(client.get("/reading").await.body, "0");
        assert_eq!(client.get("/read").await.body, "1", "the session is intact");
    }

    pub async fn concurrent_requests_of_many_users_each_get_their_own_session(backend: Backend) {
        let srv = serve_concurrent(backend.sessions(key(1)));
        let users: Vec<String> = (0..2 * WORKERS).map(|i| format!("user{i}")).collect();
        let mut jars = Vec::new();
        for user in &users {
            let mut client = Client::new(&srv);
            client.get(&format!("/set/user/{user}")).await;
            jars.push(client.jar);
        }
        let clients: Vec<Client> = jars
            .into_iter()
            .map(|jar| Client::with_jar(&srv, jar))
            .collect();
        for _ in 0..3 {
            let requests = clients.iter().flat_map(|client| {
                let header = client.cookie_header().unwrap();
                (0..4).map(move |_| {
                    let header = header.clone();
                    async move { client.send("/get/user", Some(&header)).await }
                })
            });
            let answers = futures_util::future::join_all(requests).await;
            for (i, answer) in answers.iter().enumerate() {
                assert_eq!(answer.body, format!("\"{}\"", users[i / 4]));
            }
        }
    }

    pub async fn a_renew_that_races_a_logout_never_brings_the_session_back(backend: Backend) {
        let srv = serve_concurrent(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let header = client.cookie_header().unwrap();
        // The renew loads the session, then waits 300 ms; the logout lands at 100 ms.
        let renew = client.send("/slow-renew/300", Some(&header));
        let logout = async {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            client.send("/purge", Some(&header)).await
        };
        let (renewed, logged_out) = futures_util::future::join(renew, logout).await;
        assert_eq!(logged_out.status, 200);
        assert_eq!(renewed.status, 200);
        // No new cookie for the renew: the browser keeps what the logout sent (a removal).
        assert!(
            renewed
                .set_cookie("sid")
                .is_none_or(|c| c.value().is_empty()),
            "{renewed:?}"
        );
        assert_eq!(
            backend.stored_sessions(),
            0,
            "no copy of the session is left"
        );
        let again = client.send("/get/user", Some(&header)).await;
        assert_eq!(again.body, "none");
    }

    pub async fn remember_me_can_be_forgotten(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        client.get("/remember/86400").await;
        let res = client.get("/forget").await;
        let cookie = res.set_cookie("sid").expect("the cookie, sent again");
        assert_eq!(cookie.max_age(), None, "a browser-session cookie again");
        assert_eq!(client.get("/remembered").await.body, "None");
        assert!(
            client.get("/forget").await.set_cookies.is_empty(),
            "nothing to forget"
        );
        assert_eq!(client.get("/count").await.body, "2");
        if let Some(server) = backend.redis_server() {
            let keys = server.keys();
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(&keys[0])
                .query(&mut server.conn())
                .unwrap();
            assert!(ttl <= 3_600_000, "back to the idle timeout: {ttl}");
        }
    }

    pub async fn a_shorter_remember_me_policy_reaches_cookies_issued_before(backend: Backend) {
        let before = serve(backend.sessions(key(1)));
        let mut client = Client::new(&before);
        client.get("/count").await;
        client.get("/remember/2592000").await; // 30 days
        drop(before);

        let day = Duration::from_secs(86_400);
        let after = serve(backend.builder(key(1)).remember_max(day).build().unwrap());
        let mut client = Client::with_jar(&after, client.jar);
        let res = client.get("/read").await;
        assert_eq!(res.body, "1");
        let cookie = res
            .set_cookie("sid")
            .expect("re-issued with the shorter lifetime");
        assert_eq!(cookie.max_age().map(|d| d.whole_seconds()), Some(86_400));
        assert_eq!(
            client.get("/remembered").await.body,
            format!("{:?}", Some(day))
        );
        // New lifetimes are cut to the policy too.
        client.get("/remember/2592000").await;
        assert_eq!(
            client.get("/remembered").await.body,
            format!("{:?}", Some(day))
        );
    }

    pub async fn the_total_size_limit_counts_every_name_and_value(backend: Backend) {
        let sessions = backend
            .builder(key(1))
            .max_session_size(1000)
            .build()
            .unwrap();
        let srv = serve(sessions);
        let mut client = Client::new(&srv);
        // "d:big" + header byte + quotes + 500 bytes: 508.
        assert_eq!(client.get("/try/big/500").await.body, "ok");
        // "d:a" + 1 + 2 + 486 = 492: exactly 1000 together.
        let a = "y".repeat(486);
        assert_eq!(client.get(&format!("/try/set/a/{a}")).await.body, "ok");
        assert_eq!(
            client.get("/try/set/b/1").await.body,
            "error: SessionTooLarge"
        );
        // Replacing counts the difference only; flash messages count too.
        assert_eq!(client.get("/try/big/400").await.body, "ok");
        assert_eq!(client.get("/try/set/b/1").await.body, "ok");
        let flash = client
            .get(&format!("/flash/send/info/{}", "z".repeat(200)))
            .await;
        assert_eq!(
            flash.status, 500,
            "a flash message over the total is refused"
        );
        let entries: serde_json::Value =
            serde_json::from_str(&client.get("/entries").await.body).unwrap();
        assert_eq!(entries["big"].as_str().map(str::len), Some(400));
        assert_eq!(entries["b"], "1");
        // A flash message sent in a request counts once, however many values follow it:
        // about 250 bytes of flash and 3 x 157 bytes of values fit in 1000.
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/try/flash-then-set/200/3/150").await.body, "ok");
        // And the total is still enforced with it.
        let mut client = Client::new(&srv);
        assert_eq!(
            client.get("/try/flash-then-set/200/5/150").await.body,
            "error: SessionTooLarge"
        );
    }

    pub async fn a_stored_session_over_the_size_limit_is_discarded_on_load(backend: Backend) {
        let generous = serve(backend.builder(key(1)).build().unwrap());
        let mut client = Client::new(&generous);
        client.get("/big/5000").await;
        assert_eq!(backend.stored_sessions(), 1);
        drop(generous);

        let strict = serve(
            backend
                .builder(key(1))
                .max_session_size(1000)
                .build()
                .unwrap(),
        );
        let mut client = Client::with_jar(&strict, client.jar);
        let res = client.get("/get/big").await;
        assert_eq!(
            (res.status, res.body.as_str()),
            (200, "none"),
            "a fresh session"
        );
        assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
        assert_eq!(
            backend.stored_sessions(),
            0,
            "the oversized record is deleted"
        );
    }

    /// A double-clicked login: one renew wins, the other answers without a cookie, so the
    /// browser keeps the winner's.
    pub async fn two_renews_at_once_leave_one_working_session(backend: Backend) {
        let srv = serve_concurrent(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let header = client.cookie_header().unwrap();
        let (a, b) = futures_util::future::join(
            client.send("/slow-renew/200", Some(&header)),
            client.send("/slow-renew/200", Some(&header)),
        )
        .await;
        let cookies: Vec<String> = [a, b]
            .iter()
            .filter_map(|res| res.set_cookie("sid").map(|c| c.value().to_owned()))
            .collect();
        assert_eq!(cookies.len(), 1, "one winner, and no removal: {cookies:?}");
        let winner = format!("sid={}", cookies[0]);
        assert_eq!(
            client.send("/get/user", Some(&winner)).await.body,
            "\"alice\""
        );
        assert_eq!(client.send("/get/user", Some(&header)).await.body, "none");
        assert_eq!(backend.stored_sessions(), 1);
    }

    /// A signed cookie of a session that is gone, set with a narrower path (by another app on
    /// the site, or an old deploy), comes first in the header; the live one still wins.
    pub async fn a_dead_sessions_cookie_does_not_hide_the_live_one(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut dead = Client::new(&srv);
        dead.get("/count").await;
        let dead_value = dead.jar["sid"].clone();
        dead.get("/purge").await;
        let mut live = Client::new(&srv);
        live.get("/count").await;
        live.get("/count").await;
        let header = format!("sid={dead_value}; sid={}", live.jar["sid"]);
        let res = live.send("/read", Some(&header)).await;
        assert_eq!(res.body, "2");
        assert!(
            res.set_cookies.is_empty(),
            "no removal for the live one: {res:?}"
        );
    }

    pub async fn many_copies_of_the_cookie_cost_a_bounded_number_of_checks(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        client.get("/count").await;
        let good = client.jar["sid"].clone();
        let forged = {
            let (payload, _) = good.split_once('.').unwrap();
            format!("{payload}.{}", "A".repeat(43))
        };
        // 1,400 copies of one forged value: checked once, then skipped.
        let copies = vec![format!("sid={forged}"); 1400].join("; ");
        let res = client
            .send("/read", Some(&format!("{copies}; sid={good}")))
            .await;
        assert_eq!((res.status, res.body.as_str()), (200, "1"));
        // Twelve different well-formed forged values: after eight MAC checks, the rest (the
        // good one too) are not looked at, and the request gets a fresh session.
        let (payload, _) = good.split_once('.').unwrap();
        let distinct: Vec<String> = (b'B'..=b'M')
            .map(|c| format!("sid={payload}.{}{}", char::from(c), "A".repeat(42)))
            .collect();
        let res = client
            .send(
                "/read",
                Some(&format!("{}; sid={good}", distinct.join("; "))),
            )
            .await;
        assert_eq!((res.status, res.body.as_str()), (200, "0"));
        assert!(
            res.set_cookies.is_empty(),
            "with several values, no removal: it could hit the live cookie"
        );
        // Values that are not even well-formed cost no MAC and do not count: twenty of them
        // (junk a sibling subdomain could plant) do not hide the good one.
        let junk: Vec<String> = (0..20).map(|i| format!("sid=junk{i}")).collect();
        let res = client
            .send("/read", Some(&format!("{}; sid={good}", junk.join("; "))))
            .await;
        assert_eq!((res.status, res.body.as_str()), (200, "1"));
        assert_eq!(client.get("/read").await.body, "1", "the session is intact");
    }

    /// Two apps on one site share a key and a key prefix but not a cookie name: neither
    /// accepts the other's cookie.
    pub async fn a_cookie_is_bound_to_its_name_even_under_a_shared_key(backend: Backend) {
        let a = serve(
            backend
                .builder(key(1))
                .cookie_name("a_sid")
                .build()
                .unwrap(),
        );
        let b = serve(
            backend
                .builder(key(1))
                .cookie_name("b_sid")
                .build()
                .unwrap(),
        );
        let mut client = Client::new(&a);
        client.get("/count").await;
        let value = client.jar["a_sid"].clone();
        let res = Client::new(&b)
            .send("/read", Some(&format!("b_sid={value}")))
            .await;
        assert_eq!(res.body, "0", "a's cookie is no session for b");
        assert_eq!(res.set_cookie("b_sid").map(|c| c.value()), Some(""));
        assert_eq!(client.get("/read").await.body, "1", "and still one for a");
    }

    pub async fn update_or_stores_the_default_as_is_when_missing(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        assert_eq!(
            client.get("/update-or/visits").await.body,
            "1",
            "the default, as is"
        );
        assert_eq!(client.get("/update-or/visits").await.body, "2");
    }

    pub async fn clear_reports_changed_even_on_an_empty_session(backend: Backend) {
        let srv = serve(backend.sessions(key(1)));
        let mut client = Client::new(&srv);
        let res = client.get("/clear-status").await;
        assert_eq!(res.body, "Changed");
        assert!(res.set_cookies.is_empty(), "and nothing is stored");
        assert_eq!(backend.stored_sessions(), 0);
    }

    /// Guards cannot wait for a load: they see the session when the middleware loads it
    /// before routing (`lazy_load(false)`), or when a middleware of the scope loaded it.
    pub async fn a_guard_routes_signed_in_users(backend: Backend) {
        use actix_redis_session::{Session, SessionError, SessionExt};
        use actix_web::{guard, web, HttpResponse};
        fn home() -> actix_web::Resource {
            let signed_in = guard::fn_guard(|ctx| {
                ctx.get_session()
                    .ok()
                    .and_then(|s: Session| s.get::<String>("user").ok().flatten())
                    .is_some()
            });
            web::resource("/home")
                .route(
                    web::get()
                        .guard(signed_in)
                        .to(|| async { HttpResponse::Ok().body("dashboard") }),
                )
                .route(web::get().to(|req: actix_web::HttpRequest| async move {
                    // Without a load before routing, a guard cannot see a stored session.
                    let seen = match req.get_session() {
                        Ok(_) => "loaded",
                        Err(SessionError::NotLoaded) => "not loaded",
                        Err(_) => "error",
                    };
                    HttpResponse::Ok().body(format!("welcome ({seen})"))
                }))
        }
        /// Loads the session before the scope routes, so that its guards see it.
        async fn load_first(
            req: actix_web::dev::ServiceRequest,
            next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
        ) -> Result<
            actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
            actix_web::Error,
        > {
            req.load_session().await?;
            next.call(req).await
        }
        let eager = backend.builder(key(1)).lazy_load(false).build().unwrap();
        let lazy = backend.sessions(key(1));
        let srv = actix_test::start(move || {
            App::new()
                .service(
                    web::scope("/eager")
                        .wrap(eager.clone())
                        .service(home())
                        .configure(common::routes),
                )
                .service(
                    web::scope("/scoped")
                        .wrap(actix_web::middleware::from_fn(load_first))
                        .service(home())
                        .wrap(lazy.clone()),
                )
                .service(
                    web::scope("")
                        .wrap(lazy.clone())
                        .service(home())
                        .configure(common::routes),
                )
        });
        for scope in ["/eager", "/scoped"] {
            let mut client = Client::new(&srv);
            assert_eq!(
                client.get(&format!("{scope}/home")).await.body,
                "welcome (loaded)"
            );
            let prefix = if scope == "/eager" { "/eager" } else { "" };
            client.get(&format!("{prefix}/set/user/alice")).await;
            assert_eq!(
                client.get(&format!("{scope}/home")).await.body,
                "dashboard",
                "{scope}"
            );
            client.get(&format!("{prefix}/purge")).await;
            assert_eq!(
                client.get(&format!("{scope}/home")).await.body,
                "welcome (loaded)"
            );
        }
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        assert_eq!(client.get("/home").await.body, "welcome (not loaded)");
    }

    pub async fn middleware_reach_the_session_from_the_response(backend: Backend) {
        use actix_redis_session::SessionExt;
        use actix_web::dev::Service as _;
        let sessions = backend.sessions(key(1));
        let srv = actix_test::start(move || {
            App::new()
                .wrap_fn(|req, srv| {
                    let fut = srv.call(req);
                    async move {
                        let mut res = fut.await?;
                        let user = res
                            .get_session()
                            .ok()
                            .and_then(|s| s.get::<String>("user").ok().flatten())
                            .unwrap_or_default();
                        res.headers_mut().insert(
                            actix_web::http::header::HeaderName::from_static("x-user"),
                            actix_web::http::header::HeaderValue::from_str(&user).unwrap(),
                        );
                        Ok(res)
                    }
                })
                .wrap(sessions.clone())
                .configure(common::routes)
        });
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let header = client.cookie_header().unwrap();
        let res = awc::Client::new()
            .get(srv.url("/read"))
            .insert_header((actix_web::http::header::COOKIE, header))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers().get("x-user").unwrap(), "alice");
    }
}
