//! The inbound SMTP server: listeners, TLS, the per-connection driver and the session state
//! machine. It accepts mail from trusted clients and hands it to the spool; it never talks to
//! Exchange.

pub mod auth;
pub mod conn;
mod framing;
pub mod listener;
mod message_sink;
pub mod registry;
pub mod sasl;
pub mod session;
pub mod session_io;
pub mod stream;
pub mod throttle;
