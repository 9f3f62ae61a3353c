//! The one body type of the gateway: a request or response body streamed through it, never
//! held whole. Its own leaf, so the parts that pass bodies along (push, proxy, cgi, upstream,
//! symref) share it without importing each other.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

/// A request or response body on its way through the gateway.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;
