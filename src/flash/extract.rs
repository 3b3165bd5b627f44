//! Reading and sending flash messages in handlers: [`IncomingFlashMessages`], [`Flash`], and
//! [`FlashMessage::send`] / [`FlashMessage::now`].

use actix_web::{dev::Payload, FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::{FutureExt as _, Map};
use serde::Serialize;

use super::{FlashMessage, Level};
use crate::{
    error::SessionError,
    session::{load, LoadSession, Session},
};

impl FlashMessage {
    /// Queues the message for the next request that reads flash messages. A message below
    /// the configured minimum level is dropped (and this returns `Ok`).
    ///
    /// # Errors
    ///
    /// [`SessionError::FlashTooLarge`] or [`SessionError::TooManyFlashMessages`] when a
    /// configured limit is exceeded.
    pub fn send(self, session: &Session) -> Result<(), SessionError> {
        session.flash_send(self, false)
    }

    /// Shows the message in this request's [`IncomingFlashMessages`] only (Rails'
    /// `flash.now`), for a page rendered without a redirect. Add it before reading the
    /// incoming messages.
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn now(self, session: &Session) -> Result<(), SessionError> {
        session.flash_send(self, true)
    }
}

/// The flash messages for this request, in the order they were sent: those sent by earlier
/// requests, then those added with [`FlashMessage::now`].
///
/// Extracting it reads the messages once: they are gone from the session after this
/// request (unless its session cannot be saved). Requests that do not extract it leave the
/// messages waiting, so an asset or API request cannot swallow them. A request with no
/// messages costs nothing: no extra Redis command and no write.
///
/// It serializes as a list of `{"level": ..., "content": ...}`, ready for a template.
///
/// # Examples
///
/// ```
/// use actix_redis_session::{IncomingFlashMessages, Level};
/// use std::fmt::Write;
///
/// async fn page(messages: IncomingFlashMessages) -> String {
///     let mut html = String::new();
///     for m in messages.iter().filter(|m| m.level() >= Level::Info) {
///         // Escape the content in real code (a template engine does).
///         write!(html, r#"<p class="{}">{}</p>"#, m.level(), m.content()).unwrap();
///     }
///     html
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IncomingFlashMessages {
    messages: Vec<FlashMessage>,
}

impl IncomingFlashMessages {
    /// Takes the messages of `session` (marking them read).
    pub fn from_session(session: &Session) -> IncomingFlashMessages {
        IncomingFlashMessages {
            messages: session.flash_take(),
        }
    }

    /// The messages in order.
    pub fn iter(&self) -> std::slice::Iter<'_, FlashMessage> {
        self.messages.iter()
    }

    /// The messages of exactly `level`.
    pub fn with_level(&self, level: Level) -> impl Iterator<Item = &FlashMessage> {
        self.messages.iter().filter(move |m| m.level() == level)
    }

    /// The messages of `level` or above.
    pub fn at_least(&self, level: Level) -> impl Iterator<Item = &FlashMessage> {
        self.messages.iter().filter(move |m| m.level() >= level)
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// `true` when there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl<'a> IntoIterator for &'a IncomingFlashMessages {
    type Item = &'a FlashMessage;
    type IntoIter = std::slice::Iter<'a, FlashMessage>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.iter()
    }
}

impl IntoIterator for IncomingFlashMessages {
    type Item = FlashMessage;
    type IntoIter = std::vec::IntoIter<FlashMessage>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.into_iter()
    }
}

impl FromRequest for IncomingFlashMessages {
    type Error = SessionError;
    type Future = Map<LoadSession, fn(Result<Session, SessionError>) -> Result<Self, SessionError>>;

    /// Loads the session as [`Session`]'s extractor does.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        load(&req.extensions())
            .map(|session| session.map(|session| IncomingFlashMessages::from_session(&session)))
    }
}

/// Extractor with shortcuts for sending flash messages: `flash.success("Saved")?`.
///
/// # Examples
///
/// ```
/// use actix_redis_session::Flash;
/// use actix_web::{http::header, HttpResponse, Result};
///
/// async fn save(flash: Flash) -> Result<HttpResponse> {
///     flash.success("Saved")?;
///     Ok(HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Flash {
    session: Session,
}

impl Flash {
    /// Flash messages over `session`.
    pub fn new(session: Session) -> Flash {
        Flash { session }
    }

    /// Sends `message` (see [`FlashMessage::send`]).
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn send(&self, message: FlashMessage) -> Result<(), SessionError> {
        message.send(&self.session)
    }

    /// Shows `message` in this request only (see [`FlashMessage::now`]).
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn now(&self, message: FlashMessage) -> Result<(), SessionError> {
        message.now(&self.session)
    }

    /// Sends a [`Level::Debug`] message.
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn debug(&self, content: impl Into<String>) -> Result<(), SessionError> {
        self.send(FlashMessage::debug(content))
    }

    /// Sends a [`Level::Info`] message.
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn info(&self, content: impl Into<String>) -> Result<(), SessionError> {
        self.send(FlashMessage::info(content))
    }

    /// Sends a [`Level::Success`] message.
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn success(&self, content: impl Into<String>) -> Result<(), SessionError> {
        self.send(FlashMessage::success(content))
    }

    /// Sends a [`Level::Warning`] message.
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn warning(&self, content: impl Into<String>) -> Result<(), SessionError> {
        self.send(FlashMessage::warning(content))
    }

    /// Sends a [`Level::Error`] message.
    ///
    /// # Errors
    ///
    /// As [`FlashMessage::send`].
    pub fn error(&self, content: impl Into<String>) -> Result<(), SessionError> {
        self.send(FlashMessage::error(content))
    }

    /// Takes this request's messages (see [`IncomingFlashMessages`]).
    pub fn incoming(&self) -> IncomingFlashMessages {
        IncomingFlashMessages::from_session(&self.session)
    }
}

impl FromRequest for Flash {
    type Error = SessionError;
    type Future = Map<LoadSession, fn(Result<Session, SessionError>) -> Result<Self, SessionError>>;

    /// Loads the session as [`Session`]'s extractor does.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        load(&req.extensions()).map(|session| session.map(Flash::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_display_and_serialize_in_lowercase() {
        assert!(Level::Debug < Level::Info && Level::Info < Level::Success);
        assert!(Level::Success < Level::Warning && Level::Warning < Level::Error);
        assert_eq!(Level::Warning.to_string(), "warning");
        let json = serde_json::to_string(&FlashMessage::error("no")).unwrap();
        assert_eq!(json, r#"{"level":"error","content":"no"}"#);
        let incoming = IncomingFlashMessages {
            messages: vec![FlashMessage::info("a"), FlashMessage::success("b")],
        };
        assert_eq!(
            serde_json::to_string(&incoming).unwrap(),
            r#"[{"level":"info","content":"a"},{"level":"success","content":"b"}]"#
        );
        assert_eq!(incoming.at_least(Level::Success).count(), 1);
        assert_eq!(
            incoming.with_level(Level::Info).next().unwrap().content(),
            "a"
        );
    }
}
