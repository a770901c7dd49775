//! Delivery to Exchange Online: per-account workers and outcome classification

pub mod attempt;
pub mod budget;
pub mod classify;
pub mod dsn;
pub mod escalation;
pub mod failure;
pub mod pacer;
pub mod share;
pub mod worker;
