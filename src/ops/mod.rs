//! Operating the relay: metrics, the admin HTTP endpoint (health, readiness, metrics and
//! queue management), and what the `queue` and `healthcheck` commands use.

pub mod admin;
pub mod metrics;
