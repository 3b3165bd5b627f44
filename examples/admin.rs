//! A device list with "sign out this device" and "sign out everywhere else", and an operator
//! page that counts every session and lists them page by page, rendered with templates.
//!
//! ```text
//! cargo run --example admin                                   # memory store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example admin  # Redis
//! ```
//!
//! Then open <http://127.0.0.1:8080> in two browsers (or a normal and a private window),
//! sign in as `alice` (password `demo`) in both, and sign one out from the other: its next
//! page is the sign-in form. `admin` (password `demo`) also sees the operator page. The same
//! app is checked in headless Chromium by `tests/browser.rs`.
//!
//! Environment: `BIND` (default `127.0.0.1:8080`), `REDIS_URL`, `SESSION_KEY` (base64, 32+
//! bytes; random without it), `RUST_LOG` (default `info`), as in `examples/login.rs`.

use std::{env, io};

use actix_redis_session::{store::MemoryStore, Key, RedisSession};
use actix_web::{middleware::Logger, web, App, HttpServer};
use tracing_subscriber::EnvFilter;

#[path = "admin/app.rs"]
mod app;

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
            println!("store: Redis (REDIS_URL)");
            RedisSession::builder(url, key)
        }
        Err(_) => {
            println!("store: memory (set REDIS_URL, e.g. redis://127.0.0.1:6379, to use Redis)");
            RedisSession::builder_with_memory(MemoryStore::new(), key)
        }
    };
    let sessions = builder
        .touch_after(app::TOUCH_AFTER)
        .build()
        .map_err(io::Error::other)?;
    // One administration for all workers: on the multiplexed transport it has a connection
    // of its own.
    let admin = web::Data::new(sessions.admin());

    println!("listening on http://{bind} (users alice, bob, admin; password demo)");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .wrap(Logger::default())
            .app_data(admin.clone())
            .configure(app::routes)
    })
    .bind(&bind)?
    .run()
    .await
}
