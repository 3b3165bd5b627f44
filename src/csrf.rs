//! Cross-site request forgery defence tied to the session: a per-session token, and a check
//! of where an unsafe request comes from.
//!
//! `SameSite=Lax` keeps the session cookie off cross-site POSTs, which stops most forged
//! requests against a signed-in user, but not all: a forged login (the attacker's own
//! credentials, posted from their page; the response's `Set-Cookie` is accepted on a
//! top-level navigation) needs no cookie, and a sibling subdomain (`evil.example.com` against
//! `app.example.com`) is the *same site*, so Lax cookies go along. Two checks close that:
//!
//! - **Where it comes from.** Browsers say it on every request: `Sec-Fetch-Site`
//!   (`same-origin`, `same-site`, `cross-site`, `none`), and `Origin` on POSTs. An unsafe
//!   request (POST, PUT, PATCH, DELETE) from another origin is refused, sibling subdomains
//!   included.
//! - **A token only the page has.** [`Session::csrf_token`] gives the session a random token
//!   (stored in the session, new after [`Session::renew`]); forms carry it in a hidden field
//!   `csrf_token`, scripts in the header `X-CSRF-Token`; [`CsrfForm`] and [`Csrf`] check it.
//!
//! A session without a token (an anonymous visitor's login form, which should not create a
//! session just to hold one) is protected by the first check alone, which then requires the
//! browser's headers to be there and to say "same origin".

use std::{future::Future, pin::Pin};

use actix_web::{
    dev::Payload,
    http::{header, Method, StatusCode},
    web, FromRequest, HttpRequest, HttpResponse, ResponseError,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::{
    error::SessionError,
    record::CSRF,
    session::{Session, SessionExt},
};

/// Name of the form field that carries the token.
pub const CSRF_FIELD: &str = "csrf_token";
/// Name of the header that carries the token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Largest form [`CsrfForm`] reads: 256 KiB.
const FORM_LIMIT: usize = 256 * 1024;

/// Why a request was refused as a possible forgery. Answers `403 Forbidden` with an opaque
/// body; the reason goes to the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrfError {
    /// `Sec-Fetch-Site` or `Origin` says another origin sent it.
    #[error("cross-origin unsafe request refused")]
    CrossOrigin,
    /// The session has no token, and the request does not show that it comes from this
    /// origin (no `Sec-Fetch-Site`, no `Origin`).
    #[error("unsafe request without proof of its origin refused")]
    UnknownOrigin,
    /// The token is missing or does not match the session's.
    #[error("missing or wrong CSRF token")]
    BadToken,
    /// The form could not be read or parsed.
    #[error("unreadable form")]
    BadForm(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The session could not be reached.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl ResponseError for CsrfError {
    fn status_code(&self) -> StatusCode {
        match self {
            CsrfError::BadForm(_) => StatusCode::BAD_REQUEST,
            CsrfError::Session(e) => e.status_code(),
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let CsrfError::Session(e) = self {
            return e.error_response();
        }
        tracing::warn!(reason = %self, "request refused by the CSRF check");
        let status = self.status_code();
        HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(status.canonical_reason().unwrap_or("Forbidden"))
    }
}

impl Session {
    /// The session's CSRF token, created (and stored with the session) on first use: put it
    /// in a hidden form field named [`CSRF_FIELD`] or send it in the header [`CSRF_HEADER`].
    /// [`Session::renew`] replaces it, [`Session::purge`] and [`Session::clear`] remove it.
    ///
    /// # Errors
    ///
    /// [`SessionError::SessionTooLarge`] or [`SessionError::TooManyFields`] when the
    /// session has no room for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::{Session, csrf::CSRF_FIELD};
    ///
    /// async fn form(session: Session) -> actix_web::Result<String> {
    ///     let token = session.csrf_token()?;
    ///     Ok(format!(
    ///         r#"<form method="post" action="/transfer">
    ///              <input type="hidden" name="{CSRF_FIELD}" value="{token}">
    ///              <button>Send</button>
    ///            </form>"#
    ///     ))
    /// }
    /// ```
    pub fn csrf_token(&self) -> Result<String, SessionError> {
        if let Some(token) = self.stored_csrf_token() {
            return Ok(token);
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.set_field(CSRF.to_owned(), &token, "csrf token")?;
        Ok(token)
    }

    /// Whether `token` is this session's CSRF token (compared in constant time). `false`
    /// when the session has none.
    pub fn verify_csrf(&self, token: &str) -> bool {
        match self.stored_csrf_token() {
            Some(expected) => bool::from(expected.as_bytes().ct_eq(token.as_bytes())),
            None => false,
        }
    }

    fn stored_csrf_token(&self) -> Option<String> {
        self.get_field::<String>(CSRF, "csrf token")
            .ok()
            .flatten()
            .filter(|token| !token.is_empty())
    }
}

/// Methods that change state; the checks apply to these only.
fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The check of where a request comes from. `strict`: the headers must be there and say
/// "this origin" (no token to fall back on); otherwise only a header that says "another
/// origin" refuses it (old browsers and non-browser clients send neither).
fn check_origin(req: &HttpRequest, strict: bool) -> Result<(), CsrfError> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            // `none`: the user's own navigation (address bar, bookmark).
            b"same-origin" | b"none" => Ok(()),
            // `same-site` is a sibling subdomain: another origin, as far as a form goes.
            _ => Err(CsrfError::CrossOrigin),
        };
    }
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let info = req.connection_info();
            let ours = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .is_some_and(|(scheme, authority)| {
                    scheme.eq_ignore_ascii_case(info.scheme())
                        && authority.eq_ignore_ascii_case(info.host())
                });
            if ours {
                Ok(())
            } else {
                // `null` (a sandboxed frame, a redirect across origins), another origin, or
                // this host over another scheme (a plain-HTTP page posting to HTTPS).
                Err(CsrfError::CrossOrigin)
            }
        }
        None if strict => Err(CsrfError::UnknownOrigin),
        None => Ok(()),
    }
}

/// The checks for an unsafe request whose token (if any) is `token`.
fn check(req: &HttpRequest, session: &Session, token: Option<&str>) -> Result<(), CsrfError> {
    if !is_unsafe(req.method()) {
        return Ok(());
    }
    if session.stored_csrf_token().is_none() {
        return check_origin(req, true);
    }
    check_origin(req, false)?;
    match token {
        Some(token) if session.verify_csrf(token) => Ok(()),
        _ => Err(CsrfError::BadToken),
    }
}

/// Extractor that refuses a forged unsafe request whose token comes in the header
/// [`CSRF_HEADER`] (scripts, `fetch`, HTMX). Safe methods pass unchecked.
///
/// # Examples
///
/// ```
/// use actix_redis_session::csrf::Csrf;
/// use actix_web::{post, HttpResponse};
///
/// #[post("/api/settings")]
/// async fn save(_csrf: Csrf) -> HttpResponse {
///     HttpResponse::NoContent().finish()
/// }
/// ```
#[derive(Debug)]
pub struct Csrf(());

impl FromRequest for Csrf {
    type Error = CsrfError;
    type Future = Pin<Box<dyn Future<Output = Result<Csrf, CsrfError>>>>;

    /// Loads the session as [`Session`]'s extractor does.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let session = req.load_session().await?;
            let token = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            check(&req, &session, token)?;
            Ok(Csrf(()))
        })
    }
}

/// Extractor for an HTML form (`application/x-www-form-urlencoded`) that refuses a forgery:
/// checks where the request comes from and the form's [`CSRF_FIELD`] against the session's
/// token, then deserializes the other fields into `T` like `web::Form<T>` (the token is not
/// passed on: `T` need not have it, and may deny unknown fields). Reads at most 256 KiB.
///
/// # Examples
///
/// ```
/// use actix_redis_session::{csrf::CsrfForm, Session};
/// use actix_web::{http::header, post, HttpResponse};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Transfer {
///     to: String,
///     cents: u64,
/// }
///
/// #[post("/transfer")]
/// async fn transfer(session: Session, form: CsrfForm<Transfer>) -> HttpResponse {
///     let Transfer { to, cents } = form.into_inner();
///     // ...
///     # let _ = (session, to, cents);
///     HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish()
/// }
/// ```
#[derive(Debug)]
pub struct CsrfForm<T>(pub T);

impl<T> CsrfForm<T> {
    /// The form.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for CsrfForm<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = CsrfError;
    type Future = Pin<Box<dyn Future<Output = Result<CsrfForm<T>, CsrfError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let session = req.load_session().await?;
            if is_unsafe(req.method()) {
                // Where it comes from first: a forged request is refused before its body is
                // read.
                check_origin(&req, session.stored_csrf_token().is_none())?;
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| CsrfError::BadForm(Box::new(e)))?;
                if body.len() + chunk.len() > FORM_LIMIT {
                    return Err(CsrfError::BadForm("form over 256 KiB".into()));
                }
                body.extend_from_slice(&chunk);
            }
            let mut token = None;
            let mut others = form_urlencoded::Serializer::new(String::with_capacity(body.len()));
            for (name, value) in form_urlencoded::parse(&body) {
                if name == CSRF_FIELD {
                    token.get_or_insert(value);
                } else {
                    others.append_pair(&name, &value);
                }
            }
            check(&req, &session, token.as_deref())?;
            // `T` sees the form without the token (a `deny_unknown_fields` struct, a map).
            let form = serde_urlencoded::from_str(&others.finish())
                .map_err(|e| CsrfError::BadForm(Box::new(e)))?;
            Ok(CsrfForm(form))
        })
    }
}
