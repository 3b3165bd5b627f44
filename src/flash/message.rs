//! Flash messages themselves: [`Level`] and [`FlashMessage`], as stored in a session.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Importance of a [`FlashMessage`], ordered `Debug < Info < Success < Warning < Error`.
///
/// `Display` and serde use the lowercase name, so it can serve directly as a CSS class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Development detail; dropped by the default minimum level.
    Debug,
    /// Neutral information.
    Info,
    /// An action succeeded.
    Success,
    /// Something needs attention.
    Warning,
    /// An action failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// A one-time notification for the user, e.g. "Signed in" after a login.
///
/// Send it with [`FlashMessage::send`]; the next request that reads
/// [`IncomingFlashMessages`](crate::IncomingFlashMessages) gets it, once. The session handle is explicit, so sending also
/// works inside `web::block` and spawned tasks.
///
/// # Examples
///
/// ```
/// use actix_redis_session::{FlashMessage, Session};
/// use actix_web::{http::header, HttpResponse, Result};
///
/// async fn login(session: Session) -> Result<HttpResponse> {
///     session.renew();
///     FlashMessage::success("Welcome back!").send(&session)?;
///     Ok(HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish())
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[must_use = "a flash message does nothing until it is sent"]
pub struct FlashMessage {
    level: Level,
    content: String,
}

impl FlashMessage {
    /// A message of the given level.
    pub fn new(level: Level, content: impl Into<String>) -> FlashMessage {
        FlashMessage {
            level,
            content: content.into(),
        }
    }

    /// A [`Level::Debug`] message.
    pub fn debug(content: impl Into<String>) -> FlashMessage {
        FlashMessage::new(Level::Debug, content)
    }

    /// A [`Level::Info`] message.
    pub fn info(content: impl Into<String>) -> FlashMessage {
        FlashMessage::new(Level::Info, content)
    }

    /// A [`Level::Success`] message.
    pub fn success(content: impl Into<String>) -> FlashMessage {
        FlashMessage::new(Level::Success, content)
    }

    /// A [`Level::Warning`] message.
    pub fn warning(content: impl Into<String>) -> FlashMessage {
        FlashMessage::new(Level::Warning, content)
    }

    /// A [`Level::Error`] message.
    pub fn error(content: impl Into<String>) -> FlashMessage {
        FlashMessage::new(Level::Error, content)
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The text.
    pub fn content(&self) -> &str {
        &self.content
    }
}
