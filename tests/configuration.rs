//! Configuration out of range is a typed error at `build()`, never a panic or a 503 later.

#[macro_use]
mod common;

use std::time::Duration;

use actix_redis_session::{
    config::{MAX_LIFETIME, MAX_TIMEOUT},
    store::MemoryStore,
    ConfigError, RedisSession, RedisSessionBuilder, SameSite,
};
use common::{key, serve, Backend, Client};

fn memory() -> RedisSessionBuilder {
    RedisSession::builder_with_memory(MemoryStore::new(), key(1))
}

/// The option a configuration is refused for.
fn refused(builder: RedisSessionBuilder) -> &'static str {
    match builder.build() {
        Err(ConfigError::InvalidOption { option, .. }) => option,
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn durations_out_of_range_are_refused_by_build() {
    let day = Duration::from_secs(86_400);
    assert_eq!(
        refused(memory().idle_timeout(Duration::MAX)),
        "idle_timeout"
    );
    assert_eq!(
        refused(memory().idle_timeout(MAX_LIFETIME + Duration::from_secs(1))),
        "idle_timeout"
    );
    assert_eq!(
        refused(memory().idle_timeout(Duration::from_millis(999))),
        "idle_timeout"
    );
    assert_eq!(
        refused(memory().absolute_timeout(Duration::MAX)),
        "absolute_timeout"
    );
    assert_eq!(
        refused(memory().absolute_timeout(Duration::ZERO)),
        "absolute_timeout"
    );
    assert_eq!(refused(memory().touch_after(Duration::MAX)), "touch_after");
    for timeout in [
        Duration::ZERO,
        Duration::MAX,
        MAX_TIMEOUT + Duration::from_secs(1),
    ] {
        let url = "redis://127.0.0.1:1";
        let redis = || RedisSession::builder(url, key(1));
        assert_eq!(refused(redis().command_timeout(timeout)), "timeouts");
        assert_eq!(refused(redis().connect_timeout(timeout)), "timeouts");
        assert_eq!(refused(redis().checkout_timeout(timeout)), "timeouts");
    }
    assert_eq!(
        refused(RedisSession::builder("redis://127.0.0.1:1", key(1)).capacity(0)),
        "capacity"
    );
    for interval in [Duration::ZERO, Duration::MAX] {
        let store = MemoryStore::with_gc_interval(interval);
        assert_eq!(
            refused(RedisSession::builder_with_memory(store, key(1))),
            "MemoryStore::with_gc_interval"
        );
    }
    // The largest values that are accepted.
    memory()
        .idle_timeout(MAX_LIFETIME)
        .absolute_timeout(MAX_LIFETIME)
        .touch_after(MAX_LIFETIME - day)
        .build()
        .expect("in range");
    RedisSession::builder("redis://127.0.0.1:1", key(1))
        .command_timeout(MAX_TIMEOUT)
        .connect_timeout(MAX_TIMEOUT)
        .checkout_timeout(MAX_TIMEOUT)
        .build()
        .expect("in range");
}

#[test]
fn cookie_settings_that_would_corrupt_the_header_are_refused() {
    for name in [
        "",
        "a b",
        "sid;",
        "sid\r\nX: y",
        "s=d",
        "s\u{7f}",
        "sé",
        "a\tb",
    ] {
        assert_eq!(
            refused(memory().cookie_name(name)),
            "cookie_name",
            "{name:?}"
        );
    }
    for path in [
        "",
        "app",
        "/a;b",
        "/a b",
        "/a\r\nSet-Cookie: x=1",
        "/\u{0}",
        "/é",
    ] {
        assert_eq!(
            refused(memory().cookie_path(path)),
            "cookie_path",
            "{path:?}"
        );
    }
    for domain in [
        "",
        ".",
        "a..b",
        "a;b",
        "exa mple.test",
        "example.test\r\n",
        "ex/ample",
        "é.test",
        &"a".repeat(254),
    ] {
        assert_eq!(
            refused(memory().cookie_domain(domain)),
            "cookie_domain",
            "{domain:?}"
        );
    }
    assert_eq!(
        refused(
            memory()
                .cookie_same_site(SameSite::None)
                .cookie_secure(false)
        ),
        "cookie_same_site"
    );
    assert_eq!(
        refused(memory().cookie_name("__Secure-sid").cookie_secure(false)),
        "cookie_name"
    );
    for host_only in [
        memory().cookie_name("__Host-sid").cookie_secure(false),
        memory().cookie_name("__Host-sid").cookie_path("/app"),
        memory()
            .cookie_name("__Host-sid")
            .cookie_domain("example.test"),
    ] {
        assert_eq!(refused(host_only), "cookie_name");
    }
    // What is fine.
    memory()
        .cookie_name("__Host-sid")
        .cookie_same_site(SameSite::None)
        .build()
        .unwrap();
    memory()
        .cookie_name("__Secure-sid")
        .cookie_path("/app/v1")
        .cookie_domain(".example-1.test")
        .build()
        .unwrap();
}

#[actix_web::test]
async fn a_remember_me_lifetime_beyond_the_maximum_is_clamped_and_works() {
    let backend = Backend::memory();
    let srv = serve(backend.sessions(key(1)));
    let mut client = Client::new(&srv);
    client.get("/count").await;
    let res = client.get(&format!("/remember/{}", u64::MAX)).await;
    assert_eq!(res.status, 200);
    let cookie = res.set_cookie("sid").expect("a persistent cookie");
    assert_eq!(
        cookie.max_age().map(|d| d.whole_seconds()),
        Some(i64::try_from(MAX_LIFETIME.as_secs()).unwrap())
    );
    assert_eq!(
        client.get("/remembered").await.body,
        format!("{:?}", Some(MAX_LIFETIME))
    );
    assert_eq!(client.get("/count").await.body, "2");
}

#[actix_web::test]
async fn the_longest_lifetimes_work_on_redis() {
    let backend = Backend::redis();
    let sessions = backend
        .builder(key(1))
        .idle_timeout(MAX_LIFETIME)
        .absolute_timeout(MAX_LIFETIME)
        .build()
        .unwrap();
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    assert_eq!(client.get("/count").await.status, 200);
    assert_eq!(
        client.get(&format!("/remember/{}", u64::MAX)).await.status,
        200
    );
    assert_eq!(client.get("/count").await.body, "2");
}

#[test]
fn redis_only_options_with_another_store_are_refused_not_ignored() {
    use actix_redis_session::{store::FileStore, Transport};
    let dir = tempfile::tempdir().unwrap();
    let file = || RedisSession::builder_with(FileStore::new(dir.path()).unwrap(), key(1));
    let users = || RedisSession::builder_with(common::user_store::MapStore::default(), key(1));
    let second = Duration::from_secs(1);
    type Setter = fn(RedisSessionBuilder) -> RedisSessionBuilder;
    let setters: [(&str, Setter); 5] = [
        ("transport", |b| b.transport(Transport::Multiplexed)),
        ("capacity", |b| b.capacity(4)),
        ("checkout_timeout", |b| {
            b.checkout_timeout(Duration::from_secs(1))
        }),
        ("connect_timeout", |b| {
            b.connect_timeout(Duration::from_secs(1))
        }),
        ("command_timeout", |b| {
            b.command_timeout(Duration::from_secs(1))
        }),
    ];
    for (name, set) in setters {
        assert_eq!(refused(set(memory())), name);
        assert_eq!(refused(set(file())), name);
        assert_eq!(refused(set(users())), name);
        // The same setters are fine for Redis.
        set(RedisSession::builder("redis://127.0.0.1:1", key(1)))
            .build()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The first one called is named.
    assert_eq!(
        refused(memory().capacity(2).command_timeout(second)),
        "capacity"
    );
    file().build().expect("no Redis-only option");
    users().build().expect("no Redis-only option");
}

#[test]
fn zero_limits_are_refused() {
    let option = "max_fields/max_value_size/max_session_size/max_key_len";
    assert_eq!(refused(memory().max_fields(0)), option);
    assert_eq!(refused(memory().max_value_size(0)), option);
    assert_eq!(refused(memory().max_session_size(0)), option);
    assert_eq!(refused(memory().max_key_len(0)), option);
    memory().max_key_len(1).build().expect("one byte is a key");
}
