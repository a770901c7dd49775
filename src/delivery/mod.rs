//! Delivery to Exchange Online: per-account workers and outcome classification

pub mod classify;
pub mod pacer;
pub mod worker;
