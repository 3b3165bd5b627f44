//! The login and devices examples in a real browser: headless Chromium driven over WebDriver,
//! on the memory store and on a real redis-server; the devices example in two browsers at
//! once (two Chromium profiles: two devices of one user).
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install -y chromium chromium-driver`;
//! scripts/test installs them). Screenshots go to `target/browser/`.

mod common;

#[path = "../examples/login/app.rs"]
mod app;

#[path = "../examples/admin/app.rs"]
mod admin_app;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use actix_redis_session::config::DEFAULT_COOKIE_NAME;
use actix_web::App;
use common::{key, Backend};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "chromium and chromedriver are needed. Install them with \
     `apt-get update && apt-get install -y chromium chromium-driver` (scripts/test does this for you)";
/// Generous: a cold Chromium on a busy 2-core machine. Polling ends as soon as the page is there.
const WAIT: Duration = Duration::from_secs(20);

#[actix_web::test]
async fn sign_in_and_out_in_chromium_with_the_memory_store() {
    run_flow(Backend::memory(), "memory", false).await;
}

#[actix_web::test]
async fn sign_in_and_out_in_chromium_with_redis_and_remember_me() {
    run_flow(Backend::redis(), "redis", true).await;
}

/// Serves the login app, opens it in a fresh headless Chromium and walks through it. The
/// browser session is closed whether the flow passes or panics.
async fn run_flow(backend: Backend, name: &str, remember: bool) {
    let sessions = backend.sessions(key(1));
    let srv = actix_test::start(move || App::new().wrap(sessions.clone()).configure(app::routes));
    // 127.0.0.1, not localhost: the address the app's Secure cookie must work on.
    let base = format!("http://{}/", srv.addr());
    // Another site: `localhost`, where the app is on `127.0.0.1`.
    let attacker = actix_test::start(move || {
        App::new().route("/", actix_web::web::get().to(forged_login_page))
    });
    let attacker = format!("http://localhost:{}/?target={base}", attacker.addr().port());
    let driver = ChromeDriver::start();
    let browser = driver.browser().await;
    let outcome = AssertUnwindSafe(async {
        flow(&browser, &backend, &base, name, remember).await;
        forgeries(&browser, &backend, &base, &attacker).await;
    })
    .catch_unwind()
    .await;
    let _ = browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn flow(browser: &Client, backend: &Backend, base: &str, name: &str, remember: bool) {
    browser.goto(base).await.expect("open /");
    wait_for(browser, "form#login").await;
    assert!(
        text(browser, ".hint").await.contains(app::DEMO_USER),
        "the page names the demo account"
    );

    // A wrong password: an error message, and no session left once it has been shown.
    sign_in(browser, app::DEMO_USER, "not the password", false).await;
    assert_eq!(
        text(browser, ".flash.error").await,
        "Wrong user name or password"
    );
    wait_for(browser, "form#login").await;
    assert_eq!(session_cookie(browser).await, None);
    screenshot(browser, &format!("{name}-wrong-password")).await;

    // The right one: a welcome message once, then a counter of pages viewed.
    sign_in(browser, app::DEMO_USER, app::DEMO_PASSWORD, remember).await;
    assert_eq!(text(browser, ".flash.success").await, "Welcome, demo!");
    assert_eq!(text(browser, "#account").await, "Signed in as demo.");
    assert_eq!(text(browser, "#views").await, "1");
    screenshot(browser, &format!("{name}-signed-in")).await;

    browser.refresh().await.expect("reload");
    wait_for_text(browser, "#views", "2").await;
    assert!(
        flash_messages(browser).await.is_empty(),
        "a flash message is shown once"
    );

    // The session cookie exists, but scripts cannot read it.
    let cookie = session_cookie(browser)
        .await
        .expect("a session cookie after sign-in");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(
        cookie.expires().is_some(),
        remember,
        "persistent only with \"remember me\""
    );
    let script_cookies = browser
        .execute("return document.cookie", vec![])
        .await
        .expect("run a script");
    let script_cookies = script_cookies
        .as_str()
        .expect("document.cookie is a string");
    assert!(
        !script_cookies
            .split("; ")
            .any(|c| c.starts_with(&format!("{DEFAULT_COOKIE_NAME}="))),
        "HttpOnly: {script_cookies:?}"
    );
    assert_eq!(backend.stored_sessions(), 1);

    // Sign out: a notice, then nothing left, in the browser or in the store.
    browser
        .find(Locator::Css("#logout"))
        .await
        .expect("the logout button")
        .click()
        .await
        .expect("click logout");
    assert_eq!(
        text(browser, ".flash.info").await,
        "You have been signed out"
    );
    wait_for(browser, "form#login").await;
    assert_eq!(session_cookie(browser).await, None);
    assert_eq!(backend.stored_sessions(), 0);
}

#[actix_web::test]
async fn a_device_signed_out_from_another_browser_is_signed_out_on_its_next_request() {
    let backend = Backend::multiplexed();
    let sessions = backend
        .builder(key(1))
        .touch_after(admin_app::TOUCH_AFTER)
        .build()
        .unwrap();
    let admin = actix_web::web::Data::new(sessions.admin());
    let srv = actix_test::start(move || {
        App::new()
            .wrap(sessions.clone())
            .app_data(admin.clone())
            .configure(admin_app::routes)
    });
    let base = format!("http://{}/", srv.addr());
    let (driver_a, driver_b) = (ChromeDriver::start(), ChromeDriver::start());
    let (laptop, phone) = (driver_a.browser().await, driver_b.browser().await);
    let outcome = AssertUnwindSafe(devices_flow(&laptop, &phone, &backend, &base))
        .catch_unwind()
        .await;
    let _ = laptop.close().await;
    let _ = phone.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn devices_flow(laptop: &Client, phone: &Client, backend: &Backend, base: &str) {
    for browser in [laptop, phone] {
        browser.goto(base).await.expect("open /");
        sign_in(browser, "alice", admin_app::PASSWORD, false).await;
        assert_eq!(text(browser, "#account").await, "Signed in as alice.");
    }
    // The phone lists both devices, itself marked, and signs the other one out.
    phone.refresh().await.expect("reload");
    wait_for(phone, "#devices").await;
    let rows = phone
        .find_all(Locator::Css("tr.device"))
        .await
        .expect("device rows");
    assert_eq!(rows.len(), 2, "two devices");
    let this = phone
        .find_all(Locator::Css("tr.device.this"))
        .await
        .expect("this device");
    assert_eq!(this.len(), 1, "one of them is this one");
    assert!(text(phone, "tr.device.this")
        .await
        .contains("(this device)"));
    screenshot(phone, "devices-two").await;
    phone
        .find(Locator::Css("tr.device:not(.this) .sign-out-device"))
        .await
        .expect("the other device's sign-out button")
        .click()
        .await
        .expect("click sign out");
    assert_eq!(
        text(phone, ".flash.success").await,
        "That device is signed out"
    );
    let rows = phone.find_all(Locator::Css("tr.device")).await.unwrap();
    assert_eq!(rows.len(), 1, "one device left");

    // The laptop is signed out on its next request; the phone is not.
    laptop.refresh().await.expect("reload");
    wait_for(laptop, "form#login").await;
    screenshot(laptop, "devices-signed-out").await;
    phone.refresh().await.expect("reload");
    assert_eq!(text(phone, "#account").await, "Signed in as alice.");

    // Signed in again on the laptop; "sign out everywhere else" from the phone.
    sign_in(laptop, "alice", admin_app::PASSWORD, false).await;
    assert_eq!(text(laptop, "#account").await, "Signed in as alice.");
    phone.refresh().await.expect("reload");
    wait_for(phone, "#sign-out-others")
        .await
        .click()
        .await
        .expect("click");
    assert_eq!(
        text(phone, ".flash.success").await,
        "Every other device is signed out"
    );
    laptop.refresh().await.expect("reload");
    wait_for(laptop, "form#login").await;

    // The operator page: every session, counted and listed.
    sign_in(laptop, admin_app::OPERATOR, admin_app::PASSWORD, false).await;
    wait_for(laptop, "#operator")
        .await
        .click()
        .await
        .expect("open the operator page");
    wait_for_text(laptop, "#count", "2").await;
    let rows = laptop.find_all(Locator::Css("tr.session")).await.unwrap();
    assert_eq!(rows.len(), 2);
    let page = text(laptop, "#sessions").await;
    assert!(page.contains("alice") && page.contains("admin"), "{page}");
    screenshot(laptop, "devices-operator").await;
    assert_eq!(
        backend.stored_sessions(),
        2 + 2,
        "two sessions and two user indexes"
    );
}

/// The attacker's page: a form that posts the demo account's credentials to the app's
/// `/login` as soon as it loads (login CSRF), then, from a link, one that posts `/logout`.
async fn forged_login_page(
    query: actix_web::web::Query<std::collections::HashMap<String, String>>,
) -> actix_web::HttpResponse {
    let target = query.get("target").cloned().unwrap_or_default();
    let html = format!(
        r##"<!doctype html><title>Win a prize</title>
<form id="forged-login" method="post" action="{target}login">
  <input name="user" value="{user}"><input name="password" value="{password}">
</form>
<form id="forged-logout" method="post" action="{target}logout"></form>
<script>
  if (location.hash !== "#logout") document.getElementById("forged-login").submit();
  else document.getElementById("forged-logout").submit();
</script>"##,
        user = app::DEMO_USER,
        password = app::DEMO_PASSWORD,
    );
    actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

/// Forged cross-site POSTs from another site, in the same browser: refused.
async fn forgeries(browser: &Client, backend: &Backend, base: &str, attacker: &str) {
    // Login CSRF: an anonymous visitor must not end up signed in as the attacker's account.
    assert_eq!(session_cookie(browser).await, None);
    refused(browser, attacker, base).await;
    screenshot(browser, "forged-login").await;
    assert_eq!(
        session_cookie(browser).await,
        None,
        "not signed in by the forgery"
    );
    assert_eq!(backend.stored_sessions(), 0);

    // Signed in for real, then a forged logout from the other site: refused too.
    browser.goto(base).await.expect("open /");
    sign_in(browser, app::DEMO_USER, app::DEMO_PASSWORD, false).await;
    assert_eq!(text(browser, "#account").await, "Signed in as demo.");
    refused(browser, &format!("{attacker}#logout"), base).await;
    browser.goto(base).await.expect("open /");
    assert_eq!(
        text(browser, "#account").await,
        "Signed in as demo.",
        "still signed in"
    );
    assert_eq!(backend.stored_sessions(), 1);
}

/// Opens the attacker's page at `url`, waits for its form to post to the app at `base`, and
/// checks that the app refused it.
async fn refused(browser: &Client, url: &str, base: &str) {
    browser.goto(url).await.expect("open the attacker's page");
    let deadline = Instant::now() + WAIT;
    while !browser
        .current_url()
        .await
        .expect("url")
        .as_str()
        .starts_with(base)
    {
        assert!(
            Instant::now() < deadline,
            "the forged form was not submitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_text(browser, "body", "Forbidden").await;
}

async fn sign_in(browser: &Client, user: &str, password: &str, remember: bool) {
    let form = wait_for(browser, "form#login").await;
    for (field, value) in [("user", user), ("password", password)] {
        let input = form
            .find(Locator::Css(&format!("input[name={field}]")))
            .await
            .expect("a login field");
        input.clear().await.expect("clear a field");
        input.send_keys(value).await.expect("type into a field");
    }
    if remember {
        form.find(Locator::Css("input[name=remember]"))
            .await
            .expect("the remember-me box")
            .click()
            .await
            .expect("tick remember me");
    }
    form.find(Locator::Css("#sign-in"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("click sign in");
}

/// The first element matching `css`, waiting for it to appear.
async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(WAIT)
        .every(Duration::from_millis(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"))
}

async fn text(browser: &Client, css: &str) -> String {
    wait_for(browser, css).await.text().await.expect("text")
}

/// Waits until the element matching `css` shows `expected` (after a reload, the old page
/// may still be there for a moment).
async fn wait_for_text(browser: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = browser.find(Locator::Css(css)).await;
        if let Ok(element) = found {
            if element.text().await.is_ok_and(|t| t == expected) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{css} did not show {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn flash_messages(browser: &Client) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser
        .find_all(Locator::Css(".flash"))
        .await
        .expect("find flash messages")
    {
        texts.push(element.text().await.expect("text"));
    }
    texts
}

/// The session cookie (`sid`) as the browser holds it; WebDriver sees HttpOnly cookies too.
async fn session_cookie(browser: &Client) -> Option<fantoccini::cookies::Cookie<'static>> {
    browser
        .get_all_cookies()
        .await
        .expect("list cookies")
        .into_iter()
        .find(|c| c.name() == DEFAULT_COOKIE_NAME)
}

/// Saves a PNG of the page as `target/browser/login-NAME.png` and prints its path.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("browser");
    std::fs::create_dir_all(&dir).expect("create target/browser");
    let path = dir.join(format!("login-{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    println!("screenshot: {}", path.display());
}

/// A chromedriver process on a free loopback port, with a fresh Chromium profile; stopped
/// when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing. {INSTALL}"
        );
        common::redis_server::on_free_port("chromedriver", |port| {
            let child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| match e.kind() {
                    ErrorKind::NotFound => panic!("chromedriver is missing. {INSTALL}"),
                    _ => panic!("could not run chromedriver: {e}"),
                });
            let mut driver = ChromeDriver {
                child,
                port,
                profile: tempfile::tempdir().expect("temp dir"),
            };
            driver.wait_until_listening().map(|()| driver)
        })
    }

    fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("chromedriver exited with {status}"));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("chromedriver was not ready within 10 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET /status` says ready: chromedriver, not another process that took the port.
    fn is_ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let request = format!(
            "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .is_err()
            || stream.write_all(request.as_bytes()).is_err()
        {
            return false;
        }
        // Read up to the answer, not to the end: chromedriver keeps the connection open.
        let (mut response, mut buf) = (Vec::new(), [0; 1024]);
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            response.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&response).contains(r#""ready":true"#) {
                return true;
            }
        }
        false
    }

    /// A new headless Chromium session.
    async fn browser(&self) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=800,600",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", self.profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start {CHROMIUM}: {e}"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
