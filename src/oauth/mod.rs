//! OAuth 2.0 client-credentials tokens for Exchange Online

pub mod aadsts;
pub mod assertion;
pub mod token;
