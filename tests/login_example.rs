//! The login example over plain HTTP: anonymous visitors cannot make it store sessions.

mod common;

#[path = "../examples/login/app.rs"]
#[allow(dead_code)]
mod app;

use actix_web::{http::header, App};
use common::{key, Backend};

#[actix_web::test]
async fn anonymous_logins_and_logouts_store_nothing() {
    for backend in [Backend::memory(), Backend::redis()] {
        anonymous_logins_and_logouts_store_nothing_on(backend).await;
    }
}

/// 200 cookie-less failed logins and logouts, 20 at a time: no Set-Cookie, no record.
async fn anonymous_logins_and_logouts_store_nothing_on(backend: Backend) {
    let sessions = backend.sessions(key(1));
    let srv = actix_test::start(move || App::new().wrap(sessions.clone()).configure(app::routes));
    let http = awc::Client::builder().disable_redirects().finish();
    for _ in 0..10 {
        let requests = (0..10).flat_map(|_| {
            // As a browser sends them: from the app's own page.
            let login = http
                .post(srv.url("/login"))
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .insert_header(("sec-fetch-site", "same-origin"))
                .send_body("user=demo&password=wrong");
            let logout = http
                .post(srv.url("/logout"))
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .insert_header(("sec-fetch-site", "same-origin"))
                .send_body("");
            [
                Box::pin(login) as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
                Box::pin(logout),
            ]
        });
        for res in futures_util::future::join_all(requests).await {
            let mut res = res.expect("an answer");
            assert!(res.status().is_success() || res.status().is_redirection());
            assert!(res.headers().get(header::SET_COOKIE).is_none(), "{res:?}");
            let body = res.body().await.unwrap();
            if res.status().is_success() {
                let page = String::from_utf8_lossy(&body);
                assert!(
                    page.contains("Wrong user name or password"),
                    "shown at once"
                );
            }
        }
    }
    assert_eq!(backend.stored_sessions(), 0);
    // From another site, or from no page at all: refused before anything else.
    for site in [Some("cross-site"), None] {
        let mut req = http
            .post(srv.url("/login"))
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"));
        if let Some(site) = site {
            req = req.insert_header(("sec-fetch-site", site));
        }
        let res = req.send_body("user=demo&password=demo").await.unwrap();
        assert_eq!(res.status(), 403, "{site:?}");
        assert!(res.headers().get(header::SET_COOKIE).is_none());
    }
    assert_eq!(backend.stored_sessions(), 0);
}
