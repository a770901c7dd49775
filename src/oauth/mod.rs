//! OAuth 2.0 client-credentials tokens for Exchange Online: the token provider (`token`), client
//! assertions signed with a certificate (`assertion`), and the explanation of token-endpoint
//! errors (`aadsts`).

pub mod aadsts;
pub mod app;
pub mod assertion;
pub mod claims;
pub mod token;
