//! A small app to try sessions in a browser: a visit counter, a typed cart, login with
//! "remember me" (renewing the session id) and logout (purging the session).
//!
//! ```text
//! cargo run --example demo                                   # memory store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example demo  # Redis
//! ```
//!
//! Then open <http://127.0.0.1:8080>. Environment:
//!
//! - `BIND`: address to listen on, default `127.0.0.1:8080`.
//! - `REDIS_URL`: Redis to use; without it sessions live in this process's memory, or with
//!   `STORE=file` in files under `SESSION_DIR` (default `./sessions`), or with `STORE=cookie`
//!   sealed in the cookie itself (no server state).
//! - `TRANSPORT=multiplexed`: with Redis, one async connection per worker instead of the
//!   default r2d2 pool (see the README's "Performance and choosing a transport").
//! - `LOCAL_CACHE=1`: with Redis, keep sessions in this process too, coherent through Redis's
//!   invalidations (the README's "Local cache"); <http://127.0.0.1:8080/cache-stats> shows
//!   its hits, misses and invalidations. Run two demos on two ports (`BIND`) on one Redis
//!   and change the cart in one: the other shows the change on its next page.
//! - `SESSION_KEY`: base64 secret of 32+ bytes (`openssl rand -base64 64`); without it a
//!   random key is used and sessions do not survive a restart.
//! - `COOKIE_SECURE=false`: drop the cookie's `Secure` flag. Browsers (and recent curl)
//!   accept Secure cookies from `http://localhost` and `http://127.0.0.1`, but not from other
//!   plain-HTTP hosts such as a LAN IP; older curl never sends them over HTTP. Never in
//!   production.
//! - `PRESET=development|production|high_security`: start from one of the builder's presets
//!   (the README's "Security" section has their table). `high_security` seals every value in
//!   the store, binds the session to the browser's User-Agent (the same cookie from `curl`
//!   gets a fresh session) and turns "remember me" off.
//! - `RUST_LOG`: log filter, default `info`.

use std::{env, io, time::Duration};

use actix_redis_session::{
    store::{CookieStore, FileStore, LocalCache, MemoryStore},
    Key, RedisSession, Session, SessionData, Transport, TypedSession,
};
use actix_web::{
    get, http::header, middleware::Logger, post, web, App, HttpResponse, HttpServer, Result,
};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The cart, kept in the session as one typed field.
#[derive(Serialize, Deserialize, Default)]
struct Cart {
    items: Vec<String>,
}

impl SessionData for Cart {
    const KEY: &'static str = "cart";
}

#[get("/")]
async fn index(session: Session, cart: TypedSession<Cart>) -> Result<HttpResponse> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    let user: Option<String> = session.get("user")?;

    let items: String = cart
        .items
        .iter()
        .map(|item| format!("<li>{}</li>", escape(item)))
        .collect();
    let account = match user {
        Some(user) => format!(
            r#"<p>Signed in as <b>{}</b>.</p>
<form method="post" action="/logout"><button>Log out</button></form>"#,
            escape(&user)
        ),
        None => r#"<form method="post" action="/login">
<input name="user" placeholder="any name" required>
<label><input type="checkbox" name="remember"> remember me for 30 days</label>
<button>Log in</button></form>"#
            .to_owned(),
    };
    let html = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>actix-redis-session demo</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}code{{font-size:.8em}}</style>
</head><body>
<h1>actix-redis-session demo</h1>
<p>Visits in this session: <b>{visits}</b></p>
<h2>Cart ({count} items)</h2>
<ul>{items}</ul>
<form method="post" action="/cart/add"><input name="item" placeholder="item" required>
<button>Add</button></form>
<form method="post" action="/cart/clear"><button>Clear cart</button></form>
<h2>Account</h2>
{account}
<h2>Session</h2>
<p>Handle: <code>{handle}</code><br>Status: {status:?}, new in this request: {new}</p>
</body></html>"#,
        count = cart.items.len(),
        handle = session.handle(),
        status = session.status(),
        new = session.is_new(),
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}

#[derive(Deserialize)]
struct AddItem {
    item: String,
}

#[post("/cart/add")]
async fn cart_add(mut cart: TypedSession<Cart>, form: web::Form<AddItem>) -> HttpResponse {
    let item: String = form.item.trim().chars().take(100).collect();
    if !item.is_empty() {
        cart.items.push(item); // written back when `cart` is dropped, after the handler
    }
    see_home()
}

#[post("/cart/clear")]
async fn cart_clear(mut cart: TypedSession<Cart>) -> HttpResponse {
    cart.reset();
    see_home()
}

#[derive(Deserialize)]
struct Login {
    user: String,
    /// Present ("on") when the checkbox is ticked.
    remember: Option<String>,
}

#[post("/login")]
async fn login(session: Session, form: web::Form<Login>) -> Result<HttpResponse> {
    let user: String = form.user.trim().chars().take(64).collect();
    if user.is_empty() {
        return Ok(see_home());
    }
    // A new id on login: an id planted before it (session fixation) is now worthless.
    session.renew();
    session.insert("user", user)?;
    if form.remember.is_some() {
        session.remember(Duration::from_secs(30 * 24 * 3600));
    }
    Ok(see_home())
}

#[post("/logout")]
async fn logout(session: Session) -> HttpResponse {
    session.purge();
    see_home()
}

/// Post/Redirect/Get: a reload of the page does not repeat the form.
fn see_home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The URL without its password, for printing.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

#[actix_web::main]
async fn main() -> io::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let bind = env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let key = if env::var_os("SESSION_KEY").is_some() {
        Key::from_env("SESSION_KEY").map_err(io::Error::other)?
    } else {
        println!("note: SESSION_KEY is not set; using a random key, so sessions do not survive a restart");
        Key::generate()
    };
    let builder = match env::var("REDIS_URL") {
        Ok(url) => {
            let transport = match env::var("TRANSPORT").as_deref() {
                Ok("multiplexed") => Transport::Multiplexed,
                _ => Transport::Pool,
            };
            println!(
                "store: Redis at {} ({transport:?} transport)",
                redacted(&url)
            );
            let builder = RedisSession::builder(&url, key).transport(transport);
            if env::var("LOCAL_CACHE").is_ok_and(|v| v == "1") {
                println!("local cache: on (GET /cache-stats)");
                builder.local_cache(LocalCache::new())
            } else {
                builder
            }
        }
        Err(_) => match env::var("STORE").as_deref() {
            Ok("file") => {
                let dir = env::var("SESSION_DIR").unwrap_or_else(|_| "sessions".to_owned());
                println!("store: files in {dir}");
                RedisSession::builder_with(FileStore::new(&dir)?, key)
            }
            Ok("cookie") => {
                println!("store: the cookie itself, sealed (AES-256-GCM)");
                RedisSession::builder_with(CookieStore::new(), key)
            }
            _ => {
                println!(
                    "store: memory (REDIS_URL=redis://127.0.0.1:6379 for Redis; STORE=file or \
                     STORE=cookie for the others)"
                );
                RedisSession::builder_with(MemoryStore::new(), key)
            }
        },
    };
    let builder = match env::var("PRESET").as_deref() {
        Ok("development") => builder.development(),
        Ok("production") => builder.production(),
        Ok("high_security") => {
            // Sessions from before in the store stay readable: sealed on their next load.
            builder.high_security().reject_plain_values(false)
        }
        Ok(other) => {
            return Err(io::Error::other(format!(
                "PRESET={other}: expected development, production or high_security"
            )))
        }
        // Requests that change nothing (the cart page, a failed login) write nothing to
        // Redis: the 1-hour idle timeout moves at most once a minute per session. (The
        // index does change something: its visit counter, a write per view.)
        Err(_) => builder.touch_after(Duration::from_secs(60)),
    };
    if let Ok(preset) = env::var("PRESET") {
        println!("preset: {preset}");
    }
    let secure = env::var("COOKIE_SECURE").map_or(true, |v| v != "false");
    let builder = if secure {
        builder
    } else {
        println!("cookie: Secure flag off (COOKIE_SECURE=false); never do this in production");
        builder.cookie_secure(false)
    };
    let sessions = builder.build().map_err(io::Error::other)?;

    println!("listening on http://{bind}");
    let stats = sessions.clone();
    HttpServer::new(move || {
        let stats = stats.clone();
        App::new()
            .route(
                "/cache-stats",
                web::get().to(move || {
                    let stats = stats.cache_stats();
                    async move {
                        HttpResponse::Ok()
                            .content_type("text/plain")
                            .body(match stats {
                                Some(stats) => format!("{stats:#?}\n"),
                                None => "no local cache (REDIS_URL=... LOCAL_CACHE=1)\n".to_owned(),
                            })
                    }
                }),
            )
            .wrap(sessions.clone())
            .wrap(Logger::default())
            .service(index)
            .service(cart_add)
            .service(cart_clear)
            .service(login)
            .service(logout)
    })
    .bind(&bind)?
    .run()
    .await
}
