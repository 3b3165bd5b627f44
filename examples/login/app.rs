//! The login example's routes and templates, shared by `examples/login.rs` and
//! `tests/browser.rs` (which includes this file with `#[path]`).

use std::{sync::LazyLock, time::Duration};

use actix_redis_session::{
    csrf::CSRF_FIELD, CsrfForm, FlashMessage, IncomingFlashMessages, Session,
};
use actix_web::{http::header, web, HttpResponse, Result};
use minijinja::{context, value::Serde, Environment, Value};
use serde::Deserialize;

/// The one account of the example; the sign-in page says so.
pub const DEMO_USER: &str = "demo";
/// The password of [`DEMO_USER`].
pub const DEMO_PASSWORD: &str = "demo";

const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Compiled once. The templates are in the binary (`include_str!`), so the example runs from
/// any working directory, and their names end in `.html`, so minijinja escapes every
/// `{{ ... }}` for HTML.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("index.html", include_str!("templates/index.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
});

/// `GET /`, `POST /login`, `POST /logout`. Wrap the app with `RedisSession`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout));
}

async fn index(session: Session, flash: IncomingFlashMessages) -> Result<HttpResponse> {
    page(&session, &flash)
}

fn page(session: &Session, flash: &IncomingFlashMessages) -> Result<HttpResponse> {
    let user: Option<String> = session.get("user")?;
    // Only signed-in visitors get a counter. An anonymous visitor's session holds nothing, so
    // it is never stored, and after logout the page that shows "signed out" leaves the session
    // empty: it is deleted and its cookie removed.
    let (views, csrf) = match user {
        Some(_) => {
            let views = session.get::<u64>("views")?.unwrap_or(0) + 1;
            session.insert("views", views)?;
            // The logout form carries the session's CSRF token. The login form needs none:
            // an anonymous visitor has no session to hold one, and `CsrfForm` then requires
            // the browser's own word that the form came from this origin.
            (Some(views), Some(session.csrf_token()?))
        }
        None => (None, None),
    };
    Ok(render(
        "index.html",
        context! {
            flash => Serde(flash),
            user,
            views,
            csrf,
            csrf_field => CSRF_FIELD,
            demo_user => DEMO_USER,
            demo_password => DEMO_PASSWORD,
        },
    ))
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
    /// Present ("on") when the checkbox is ticked.
    remember: Option<String>,
}

/// No fields but the CSRF token, which `CsrfForm` checks.
#[derive(Deserialize)]
struct Empty {}

/// `CsrfForm` refuses a login posted from another site (login CSRF: the attacker's account,
/// signed in in the victim's browser) with a 403.
async fn login(session: Session, form: CsrfForm<Login>) -> Result<HttpResponse> {
    if form.user != DEMO_USER || form.password != DEMO_PASSWORD {
        // Shown on this very response (`now`), not carried to the next page: a failed login
        // by an anonymous visitor stores no session, so a flood of them stores nothing.
        FlashMessage::error("Wrong user name or password").now(&session)?;
        return page(&session, &IncomingFlashMessages::from_session(&session));
    }
    // A new id on login: an id planted before it (session fixation) is now worthless.
    session.renew();
    session.insert("user", &form.user)?;
    session.remove("views");
    if form.remember.is_some() {
        session.remember(REMEMBER_FOR);
    }
    FlashMessage::success(format!("Welcome, {}!", form.user)).send(&session)?;
    Ok(see_home())
}

async fn logout(session: Session, _form: CsrfForm<Empty>) -> Result<HttpResponse> {
    // Only a visitor who had a session hears that it ended: a logout without one (a bot, a
    // second click) stores nothing.
    let had_session = !session.is_new();
    session.purge();
    if had_session {
        // The message rides in a new session, which the next page empties and so removes.
        FlashMessage::info("You have been signed out").send(&session)?;
    }
    Ok(see_home())
}

/// Post/Redirect/Get: reloading the page does not send the form again.
fn see_home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish()
}

fn render(name: &str, ctx: Value) -> HttpResponse {
    match TEMPLATES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            tracing::error!(template = name, error = %e, "rendering failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
