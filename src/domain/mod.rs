//! The access lifecycle as pure data and pure transitions: no I/O, no clock reads, no SQL, no
//! HTTP, no wasmtime. Every function takes `now` from its caller.
//!
//! A [`Request`] is the aggregate: the request, its reviews and its grant. [`Request::apply`]
//! takes an [`Action`] and answers a [`Transition`]: the new aggregate, the audit events and the
//! jobs it causes. The store persists all three in one transaction, with compare-and-set on
//! [`Request::version`].

mod action;
mod duration;
mod request;

#[cfg(test)]
mod proptests;

pub use action::*;
pub use duration::{format_duration, format_utc, parse_duration};
pub use request::*;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;
