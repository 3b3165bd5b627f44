//! Flash messages: one-time notifications carried by the session to the next page.

mod extract;
mod message;

pub use self::{
    extract::{Flash, IncomingFlashMessages},
    message::{FlashMessage, Level},
};
