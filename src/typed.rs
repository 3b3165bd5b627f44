//! `TypedSession<T>`: a whole struct of the application's, kept in one session field.

use std::ops::{Deref, DerefMut};

use actix_web::{dev::Payload, FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::{FutureExt as _, Map};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    error::SessionError,
    record::TYPED_PREFIX,
    session::{load, LoadSession, Session},
};

/// A struct that lives in the session as one field, `t:<KEY>`.
///
/// # Examples
///
/// ```
/// use actix_redis_session::SessionData;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Cart {
///     items: Vec<u32>,
/// }
///
/// impl SessionData for Cart {
///     const KEY: &'static str = "cart";
/// }
/// ```
pub trait SessionData: Serialize + DeserializeOwned + Default {
    /// The field name under which the struct is stored (after `t:`). Unique per type.
    const KEY: &'static str;
}

/// Extractor and guard for a [`SessionData`] struct: derefs to `T`, starts from
/// `T::default()` when the session has none, and writes `T` back when it is dropped (at the
/// end of the handler) if it was borrowed mutably and its serialized form changed.
///
/// A stored value that no longer deserializes into `T` (its shape changed in a deploy) is
/// logged and replaced by `T::default()` instead of failing the request.
///
/// The write-back on drop cannot report errors (such as a size limit), so they are logged;
/// call [`TypedSession::save`] to handle them yourself.
///
/// # Examples
///
/// ```
/// use actix_redis_session::{SessionData, TypedSession};
/// use actix_web::{post, web, HttpResponse};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Cart {
///     items: Vec<u32>,
/// }
///
/// impl SessionData for Cart {
///     const KEY: &'static str = "cart";
/// }
///
/// #[post("/cart/{id}")]
/// async fn add(mut cart: TypedSession<Cart>, id: web::Path<u32>) -> HttpResponse {
///     cart.items.push(*id); // saved after the handler
///     HttpResponse::Ok().body(format!("{} items", cart.items.len()))
/// }
/// ```
pub struct TypedSession<T: SessionData> {
    session: Session,
    value: T,
    dirty: bool,
    /// The session's generation when `value` was read: a purge or clear since then makes the
    /// value a leftover of the session that was ended or emptied, never to be written back.
    generation: u64,
}

impl<T: SessionData> TypedSession<T> {
    fn field() -> String {
        format!("{TYPED_PREFIX}{}", T::KEY)
    }

    /// Reads `T` from `session`.
    pub fn from_session(session: Session) -> TypedSession<T> {
        let generation = session.lock().generation();
        let value = match session.get_field::<T>(&Self::field(), T::KEY) {
            Ok(value) => value.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(key = T::KEY, error = %e, "stored typed session value does not fit its type; starting from the default");
                T::default()
            }
        };
        TypedSession {
            session,
            value,
            dirty: false,
            generation,
        }
    }

    /// Writes `T` into the session now, if it was borrowed mutably and changed.
    ///
    /// Nothing is written if [`Session::purge`] or [`Session::clear`] was called since this
    /// value was read: it belongs to the session that was ended or emptied (a cart must not
    /// survive a logout). To store a value after a purge, extract or build a new
    /// `TypedSession` afterwards ([`TypedSession::from_session`]). After [`Session::renew`]
    /// the value is written as usual, and goes to the new id only.
    ///
    /// # Errors
    ///
    /// As [`Session::insert`].
    pub fn save(&mut self) -> Result<(), SessionError> {
        if !self.dirty {
            return Ok(());
        }
        if self.session.lock().generation() != self.generation {
            tracing::debug!(
                key = T::KEY,
                "typed session value read before a purge or clear; not written back"
            );
            self.dirty = false;
            return Ok(());
        }
        let field = Self::field();
        // A value never stored and still equal to the default is not worth a write.
        let untouched_default = !self.session.contains_field(&field) && {
            let config = self.session.lock().shared_config();
            let encoded = config.codecs.encode(&self.value).ok();
            encoded.is_some() && encoded == config.codecs.encode(&T::default()).ok()
        };
        if !untouched_default {
            self.session.set_field(field, &self.value, T::KEY)?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Replaces the value with `T::default()` and removes the field from the session.
    pub fn reset(&mut self) {
        self.value = T::default();
        self.dirty = false;
        self.session.remove_field(&Self::field());
    }

    /// The session this value lives in.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl<T: SessionData> Deref for TypedSession<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: SessionData> DerefMut for TypedSession<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.dirty = true;
        &mut self.value
    }
}

impl<T: SessionData> Drop for TypedSession<T> {
    fn drop(&mut self) {
        if let Err(e) = self.save() {
            tracing::error!(key = T::KEY, error = %e, "typed session value not saved");
        }
    }
}

impl<T: SessionData + std::fmt::Debug> std::fmt::Debug for TypedSession<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedSession").field(&self.value).finish()
    }
}

impl<T: SessionData> FromRequest for TypedSession<T> {
    type Error = SessionError;
    type Future = Map<LoadSession, fn(Result<Session, SessionError>) -> Result<Self, SessionError>>;

    /// Loads the session as [`Session`]'s extractor does.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        load(&req.extensions()).map(|session| session.map(TypedSession::from_session))
    }
}
