//! Switching from actix-session without logging anyone out: the old application (actix-session
//! 0.11 with its Redis store) and the new one (actix-redis-session with
//! `migrate_from_actix_session`) side by side on one Redis.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example migrate_from_actix_session
//! ```
//!
//! Open <http://127.0.0.1:8081> (the old application), sign in and count a few visits; then
//! open <http://127.0.0.1:8080> (the new one): you are still signed in, with your visits. The
//! browser sends the old cookie to both ports (cookies do not depend on the port); the first
//! request to the new application moves the session into a record of ours, removes the old
//! cookie and leaves at the old Redis key a forward to the new record, for the requests the
//! browser sent at the same time, which expires after a minute (`redis-cli keys '*'` shows
//! it). `CODEC=msgpack`
//! (with `--features msgpack`) writes the moved values in MessagePack as they change.

use std::{env, io};

use actix_redis_session::{
    ActixContentSecurity, FromActixSession, Key, RedisSession, Session as NewSession,
};
use actix_session::{storage::RedisSessionStore, Session as OldSession, SessionMiddleware};
use actix_web::{cookie::Key as CookieKey, web, App, HttpResponse, HttpServer};

/// The old application's key, as actix-session had it (a fixed demo key: in a real
/// application, the one it was configured with).
fn old_key() -> CookieKey {
    CookieKey::from(&[42u8; 64])
}

fn page(title: &str, user: Option<String>, visits: u64, other: &str) -> HttpResponse {
    let user = user.map_or_else(
        || "not signed in: <a href=\"/login/ada\">sign in as ada</a>".to_owned(),
        |user| format!("signed in as <b>{user}</b>"),
    );
    HttpResponse::Ok().content_type("text/html").body(format!(
        "<h1>{title}</h1><p>{user}</p><p>{visits} visits</p><p><a href=\"{other}\">{other}</a></p>"
    ))
}

async fn old_index(session: OldSession) -> actix_web::Result<HttpResponse> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    let user = session.get::<String>("user")?;
    Ok(page(
        "Old application (actix-session)",
        user,
        visits,
        "http://127.0.0.1:8080/",
    ))
}

async fn old_login(
    session: OldSession,
    user: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    session.renew();
    session.insert("user", user.into_inner())?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/"))
        .finish())
}

async fn new_index(session: NewSession) -> actix_web::Result<HttpResponse> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    let user = session.get::<String>("user")?;
    Ok(page(
        "New application (actix-redis-session)",
        user,
        visits,
        "http://127.0.0.1:8081/",
    ))
}

#[actix_web::main]
async fn main() -> io::Result<()> {
    let url = env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let store = RedisSessionStore::new(url.clone()).await.map_err(|e| {
        io::Error::other(format!(
            "{e}: is redis-server running at {url}? (apt-get install -y redis-server)"
        ))
    })?;
    let old = HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), old_key())
                    .cookie_secure(false)
                    .build(),
            )
            .route("/", web::get().to(old_index))
            .route("/login/{user}", web::get().to(old_login))
    })
    .bind(("127.0.0.1", 8081))?
    .run();

    let builder = RedisSession::builder(&url, Key::generate())
        .cookie_secure(false)
        .migrate_from_actix_session(
            FromActixSession::new(old_key().master())
                .cookie_name("id")
                .content_security(ActixContentSecurity::Private),
        );
    #[cfg(feature = "msgpack")]
    let builder = if env::var("CODEC").as_deref() == Ok("msgpack") {
        builder.codec(actix_redis_session::codec::MessagePack)
    } else {
        builder
    };
    let sessions = builder.build().map_err(io::Error::other)?;
    let new = HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .route("/", web::get().to(new_index))
    })
    .bind(("127.0.0.1", 8080))?
    .run();
    println!("old application: http://127.0.0.1:8081  new application: http://127.0.0.1:8080");
    futures_util::future::try_join(old, new).await.map(drop)
}
