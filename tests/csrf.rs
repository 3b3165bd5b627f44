//! The CSRF defence over real HTTP, on every store: tokens, `Sec-Fetch-Site` and `Origin`.

mod common;

use actix_redis_session::{csrf::CSRF_HEADER, Csrf, CsrfForm, Session};
use actix_web::{http::header, web, App, HttpResponse};
use common::{key, Backend};
use serde::Deserialize;

/// Strict on purpose: `CsrfForm` must not pass the token on.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    cents: u64,
}

async fn token(session: Session) -> actix_web::Result<String> {
    session.insert("user", "alice")?;
    Ok(session.csrf_token()?)
}

async fn transfer(form: CsrfForm<Transfer>) -> HttpResponse {
    HttpResponse::Ok().body(format!("sent {}", form.cents))
}

async fn api(_csrf: Csrf) -> HttpResponse {
    HttpResponse::Ok().body("api ok")
}

async fn renew(session: Session) -> HttpResponse {
    session.renew();
    HttpResponse::Ok().finish()
}

fn serve(backend: &Backend) -> actix_test::TestServer {
    let sessions = backend.sessions(key(1));
    actix_test::start(move || {
        App::new()
            .wrap(sessions.clone())
            .route("/token", web::get().to(token))
            .route("/transfer", web::post().to(transfer))
            .route("/api", web::get().to(api))
            .route("/api", web::post().to(api))
            .route("/renew", web::post().to(renew))
    })
}

/// A POST of `body` with the cookie and these extra headers; the status and body.
async fn post(
    srv: &actix_test::TestServer,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let mut req = awc::Client::new()
        .post(srv.url(path))
        .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"));
    if let Some(cookie) = cookie {
        req = req.insert_header((header::COOKIE, cookie));
    }
    for (name, value) in headers {
        req = req.insert_header((*name, value.as_str()));
    }
    let mut res = req.send_body(body.to_owned()).await.expect("an answer");
    let body = res.body().await.expect("a body");
    (
        res.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A session with a token: the cookie header and the token.
async fn signed_in(srv: &actix_test::TestServer) -> (String, String) {
    let mut res = awc::Client::new()
        .get(srv.url("/token"))
        .send()
        .await
        .unwrap();
    let cookie = res.cookie("sid").expect("a session cookie");
    let token = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    (format!("sid={}", cookie.value()), token)
}

#[actix_web::test]
async fn forms_need_the_sessions_token_and_must_come_from_this_origin() {
    for backend in [Backend::memory(), Backend::redis(), Backend::multiplexed()] {
        let srv = serve(&backend);
        let (cookie, token) = signed_in(&srv).await;
        let same_origin = [("sec-fetch-site", "same-origin".to_owned())];
        let body = format!("cents=5&csrf_token={token}");

        let ok = post(&srv, "/transfer", Some(&cookie), &same_origin, &body).await;
        assert_eq!(ok, (200, "sent 5".to_owned()));
        // Non-browser clients send neither header: the token alone is enough.
        assert_eq!(
            post(&srv, "/transfer", Some(&cookie), &[], &body).await.0,
            200
        );

        let forbidden = (403, "Forbidden".to_owned());
        let no_token = post(&srv, "/transfer", Some(&cookie), &same_origin, "cents=5").await;
        assert_eq!(no_token, forbidden);
        let wrong = format!("cents=5&csrf_token={}", "A".repeat(43));
        assert_eq!(
            post(&srv, "/transfer", Some(&cookie), &same_origin, &wrong).await,
            forbidden
        );
        // Another session's token is no good either.
        let (_, other_token) = signed_in(&srv).await;
        let other = format!("cents=5&csrf_token={other_token}");
        assert_eq!(
            post(&srv, "/transfer", Some(&cookie), &same_origin, &other).await,
            forbidden
        );

        // The right token from the wrong place: another site, a sibling subdomain, another
        // origin.
        let host = srv.addr().to_string();
        for headers in [
            vec![("sec-fetch-site", "cross-site".to_owned())],
            vec![("sec-fetch-site", "same-site".to_owned())],
            vec![("origin", "http://evil.example".to_owned())],
            vec![("origin", "null".to_owned())],
        ] {
            let res = post(&srv, "/transfer", Some(&cookie), &headers, &body).await;
            assert_eq!(res, forbidden, "{headers:?}");
        }
        // This host over another scheme: a plain-HTTP page is not this origin.
        let other_scheme = [("origin", format!("https://{host}"))];
        assert_eq!(
            post(&srv, "/transfer", Some(&cookie), &other_scheme, &body).await,
            forbidden
        );
        let own_origin = [("origin", format!("http://{host}"))];
        assert_eq!(
            post(&srv, "/transfer", Some(&cookie), &own_origin, &body)
                .await
                .0,
            200
        );

        // Scripts send the token in a header.
        let api_ok = [
            ("sec-fetch-site", "same-origin".to_owned()),
            (CSRF_HEADER, token.clone()),
        ];
        assert_eq!(post(&srv, "/api", Some(&cookie), &api_ok, "").await.0, 200);
        assert_eq!(
            post(&srv, "/api", Some(&cookie), &same_origin, "").await.0,
            403
        );

        // Safe methods are not checked.
        let res = awc::Client::new()
            .get(srv.url("/api"))
            .insert_header((header::COOKIE, cookie.as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);

        // A renew (a login) replaces the token.
        let mut res = awc::Client::new()
            .post(srv.url("/renew"))
            .insert_header((header::COOKIE, cookie.as_str()))
            .insert_header(("sec-fetch-site", "same-origin"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let renewed = format!("sid={}", res.cookie("sid").expect("a new cookie").value());
        let _ = res.body().await;
        let mut res = awc::Client::new()
            .get(srv.url("/token"))
            .insert_header((header::COOKIE, renewed.as_str()))
            .send()
            .await
            .unwrap();
        let new_token = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
        assert_ne!(new_token, token);
        assert_eq!(
            post(&srv, "/transfer", Some(&renewed), &same_origin, &body).await,
            forbidden,
            "the token from before the renew"
        );
        let fresh = format!("cents=5&csrf_token={new_token}");
        assert_eq!(
            post(&srv, "/transfer", Some(&renewed), &same_origin, &fresh)
                .await
                .0,
            200
        );
    }
}

#[actix_web::test]
async fn without_a_token_only_a_request_that_proves_its_origin_passes() {
    for backend in [Backend::memory(), Backend::redis()] {
        let srv = serve(&backend);
        // An anonymous visitor (a login form): no session, so no token to check.
        let same_origin = [("sec-fetch-site", "same-origin".to_owned())];
        assert_eq!(
            post(&srv, "/transfer", None, &same_origin, "cents=1")
                .await
                .0,
            200
        );
        let own_origin = [("origin", format!("http://{}", srv.addr()))];
        assert_eq!(
            post(&srv, "/transfer", None, &own_origin, "cents=1")
                .await
                .0,
            200
        );
        for headers in [
            vec![],
            vec![("sec-fetch-site", "cross-site".to_owned())],
            vec![("origin", "http://evil.example".to_owned())],
        ] {
            let res = post(&srv, "/transfer", None, &headers, "cents=1").await;
            assert_eq!(res.0, 403, "{headers:?}");
        }
        // A form that is not one: a 400, not a 500.
        let res = post(&srv, "/transfer", None, &same_origin, "cents=lots").await;
        assert_eq!(res.0, 400);
        assert_eq!(backend.stored_sessions(), 0);
    }
}
