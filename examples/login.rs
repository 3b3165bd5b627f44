//! Sign in and out with flash messages, rendered with templates.
//!
//! ```text
//! cargo run --example login                                   # memory store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example login  # Redis
//! ```
//!
//! Then open <http://127.0.0.1:8080> and sign in as `demo` with password `demo`. A wrong
//! password shows an error message; signing in shows a welcome message once and counts the
//! pages viewed since; signing out shows a notice and then leaves no cookie behind. The same
//! app is checked in headless Chromium by `tests/browser.rs`.
//!
//! Environment:
//!
//! - `BIND`: address to listen on, default `127.0.0.1:8080`.
//! - `REDIS_URL`: Redis to use; without it sessions live in this process's memory.
//! - `SESSION_KEY`: base64 secret of 32+ bytes (`openssl rand -base64 64`); without it a
//!   random key is used and sessions do not survive a restart.
//! - `RUST_LOG`: log filter, default `info`.
//!
//! The cookie keeps its `Secure` flag: browsers accept it from `http://localhost` and
//! `http://127.0.0.1`. For another plain-HTTP host see `COOKIE_SECURE` in `examples/demo.rs`.
//!
//! The templates are [minijinja]: Jinja syntax, loaded at run time (no proc-macro or build
//! step, so editing a template does not recompile Rust code generated from it), a small
//! dependency (serde is its only one here), and HTML auto-escaping for templates whose name
//! ends in `.html`. `IncomingFlashMessages` serializes to a list of `{level, content}`, so a
//! template loops over it directly.
//!
//! [minijinja]: https://docs.rs/minijinja

use std::{env, io};

use actix_redis_session::{store::MemoryStore, Key, RedisSession};
use actix_web::{middleware::Logger, App, HttpServer};
use tracing_subscriber::EnvFilter;

#[path = "login/app.rs"]
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
    let sessions = builder.build().map_err(io::Error::other)?;

    println!("listening on http://{bind} (user demo, password demo)");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .wrap(Logger::default())
            .configure(app::routes)
    })
    .bind(&bind)?
    .run()
    .await
}
