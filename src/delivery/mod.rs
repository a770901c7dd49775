//! Delivery to Exchange Online: per-account workers, and the one place deciding what happens
//! to a message after an attempt (delivered, deferred, failed and bounced). It reaches the
//! mail server only through the transport seam (`crate::transport`) and gets its tokens only
//! from the provider seam (`crate::oauth::token::TokenProvider`).

pub mod attempt;
pub mod budget;
pub mod dsn;
pub mod escalation;
pub mod failure;
pub mod health;
pub mod pacer;
mod settle;
pub mod share;
pub mod worker;
mod worker_budgets;
