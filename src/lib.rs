//! smtp-oauth-relay: accepts mail from legacy SMTP clients on the LAN, keeps it durably in a
//! spool, and delivers it to Exchange Online over STARTTLS with SASL XOAUTH2 and an OAuth 2.0
//! client-credentials token that the relay obtains, caches and renews by itself.
//!
//! See `ARCHITECTURE.md` for the parts and the way a message travels.

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod diagnose;
pub mod message;
pub mod metrics;
pub mod named_file;
pub mod oauth;
pub mod ops;
pub mod policy;
pub mod queue;
pub mod smtp;
pub mod spool;
pub mod telemetry;
pub mod testkit;
pub mod tls;
pub mod transport;
pub mod vocab;
