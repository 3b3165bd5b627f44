//! The devices example's routes and templates, shared by `examples/admin.rs` and
//! `tests/browser.rs` (which includes this file with `#[path]`).

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use actix_redis_session::{
    csrf::CSRF_FIELD, CsrfForm, FlashMessage, Handle, IncomingFlashMessages, Session, SessionAdmin,
};
use actix_web::{error::ErrorServiceUnavailable, http::header, web, HttpResponse, Result};
use futures_util::{StreamExt as _, TryStreamExt as _};
use minijinja::{context, value::Serde, Environment, Value};
use serde::{Deserialize, Serialize};

/// The accounts of the example (all with [`PASSWORD`]); [`OPERATOR`] may see every session.
pub const USERS: [&str; 3] = ["alice", "bob", OPERATOR];
/// The account that may open the operator page.
pub const OPERATOR: &str = "admin";
/// The password of every account.
pub const PASSWORD: &str = "demo";
/// Sessions per page of the operator page.
pub const PER_PAGE: usize = 20;
/// The middleware's `touch_after`: a session's last use is recorded to within a minute,
/// for "last seen".
pub const TOUCH_AFTER: Duration = Duration::from_secs(60);

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("index.html", include_str!("templates/index.html")),
        ("admin.html", include_str!("templates/admin.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
});

/// `GET /`, `POST /login`, `POST /logout`, `POST /devices/{handle}/sign-out`,
/// `POST /devices/sign-out-others`, `GET /admin`. Wrap the app with `RedisSession` and give it
/// that middleware's `SessionAdmin` as `web::Data`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/devices/sign-out-others", web::post().to(sign_out_others))
        .route(
            "/devices/{handle}/sign-out",
            web::post().to(sign_out_device),
        )
        .route("/admin", web::get().to(operator_page));
}

/// One row of a device list.
#[derive(Serialize)]
struct Device {
    handle: String,
    agent: String,
    network: String,
    created: String,
    seen: String,
    this: bool,
}

async fn index(
    session: Session,
    flash: IncomingFlashMessages,
    admin: web::Data<SessionAdmin>,
) -> Result<HttpResponse> {
    let Some(user) = session.user() else {
        return Ok(render(
            "index.html",
            context! { flash => Serde(&flash), password => PASSWORD },
        ));
    };
    let this = session.handle();
    let devices: Vec<Device> = admin
        .sessions_of(&user)
        .await
        .map_err(ErrorServiceUnavailable)?
        .into_iter()
        .map(|info| Device {
            handle: info.handle().to_string(),
            agent: info.user_agent().unwrap_or("unknown browser").to_owned(),
            network: info.network().unwrap_or("unknown network").to_owned(),
            created: ago(info.created()),
            // With touch_after the store records when a session's idle timeout last moved:
            // its last use, to within TOUCH_AFTER.
            seen: ago(info.touched()),
            this: *info.handle() == this,
        })
        .collect();
    Ok(render(
        "index.html",
        context! {
            flash => Serde(&flash),
            user,
            devices => Serde(&devices),
            csrf => session.csrf_token()?,
            csrf_field => CSRF_FIELD,
            operator => session.user().as_deref() == Some(OPERATOR),
        },
    ))
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago".
fn ago(at: Option<SystemTime>) -> String {
    let Some(at) = at else {
        return "unknown".to_owned();
    };
    let secs = at.elapsed().unwrap_or_default().as_secs();
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// "in 59 min".
fn from_now(at: Option<SystemTime>) -> String {
    let Some(at) = at else {
        return "unknown".to_owned();
    };
    let secs = at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..=59 => format!("in {secs} s"),
        60..=3599 => format!("in {} min", secs / 60),
        3600..=86_399 => format!("in {} h", secs / 3600),
        _ => format!("in {} d", secs / 86_400),
    }
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

#[derive(Deserialize)]
struct Empty {}

async fn login(session: Session, form: CsrfForm<Login>) -> Result<HttpResponse> {
    if !USERS.contains(&form.user.as_str()) || form.password != PASSWORD {
        FlashMessage::error("Wrong user name or password").send(&session)?;
        return Ok(see_home());
    }
    // A new id at login, and the session into the user's index (with this device).
    session.renew();
    session.set_user(form.user.clone())?;
    FlashMessage::success(format!("Welcome, {}!", form.user)).send(&session)?;
    Ok(see_home())
}

async fn logout(session: Session, _form: CsrfForm<Empty>) -> Result<HttpResponse> {
    session.purge();
    FlashMessage::info("You have been signed out").send(&session)?;
    Ok(see_home())
}

/// Signs out one of the user's own devices (another user's handle is not theirs to end).
async fn sign_out_device(
    session: Session,
    admin: web::Data<SessionAdmin>,
    handle: web::Path<String>,
    _form: CsrfForm<Empty>,
) -> Result<HttpResponse> {
    let (Some(user), Some(handle)) = (session.user(), Handle::parse(&handle)) else {
        return Ok(see_home());
    };
    let devices = admin
        .sessions_of(&user)
        .await
        .map_err(ErrorServiceUnavailable)?;
    if devices.iter().any(|device| *device.handle() == handle) {
        admin
            .destroy(&handle)
            .await
            .map_err(ErrorServiceUnavailable)?;
        FlashMessage::success("That device is signed out").send(&session)?;
    }
    Ok(see_home())
}

async fn sign_out_others(session: Session, _form: CsrfForm<Empty>) -> Result<HttpResponse> {
    if session.user().is_some() {
        session.sign_out_other_sessions();
        FlashMessage::success("Every other device is signed out").send(&session)?;
    }
    Ok(see_home())
}

/// One row of the operator page.
#[derive(Serialize)]
struct Row {
    handle: String,
    user: String,
    agent: String,
    created: String,
    expires: String,
}

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
}

/// Every session, a page at a time, streamed from the store (constant memory however many
/// there are). For the operator only.
async fn operator_page(
    session: Session,
    flash: IncomingFlashMessages,
    admin: web::Data<SessionAdmin>,
    query: web::Query<Page>,
) -> Result<HttpResponse> {
    if session.user().as_deref() != Some(OPERATOR) {
        return Ok(HttpResponse::Forbidden().body("Forbidden"));
    }
    let page = query.page.unwrap_or(0);
    let count = admin.count().await.map_err(ErrorServiceUnavailable)?;
    let rows: Vec<Row> = admin
        .iter()
        .skip(page * PER_PAGE)
        .take(PER_PAGE)
        .map_ok(|info| Row {
            handle: info.handle().to_string(),
            user: info.user().unwrap_or("(anonymous)").to_owned(),
            agent: info.user_agent().unwrap_or("").to_owned(),
            created: ago(info.created()),
            expires: from_now(info.expires()),
        })
        .try_collect()
        .await
        .map_err(ErrorServiceUnavailable)?;
    let more = (page as u64 + 1) * (PER_PAGE as u64) < count;
    Ok(render(
        "admin.html",
        context! { flash => Serde(&flash), count, sessions => Serde(&rows), page, more },
    ))
}

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
