//! Operating the relay: the admin HTTP endpoint (health, readiness, metrics and
//! queue management), the open-file limit, and what the `queue` and `healthcheck` commands
//! use.

pub mod admin;
pub mod fd_limit;
