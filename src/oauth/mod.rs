//! OAuth 2.0 access tokens for the transports. `token` is the provider seam: the
//! [`TokenProvider`](token::TokenProvider) of an account (cache, renewal, single flight) and
//! its [`AccessToken`](token::AccessToken)/[`TokenError`](token::TokenError); delivery and
//! `diagnose` use nothing else to get a token. Each identity provider is a module: `entra`
//! (Microsoft Entra client credentials, with `aadsts`, `certificate` and `assertion`) and
//! `google` (a Google service account's JWT bearer grant, with `key` and `refusal`). Shared by
//! the providers: `app` (what a provider is given), `http` (the HTTPS client and the standard
//! token answer), `jws` (signed JWTs), `claims` (reading a token's claims for diagnostics) and `expiry` (a
//! credential's expiry date: a secret's configured one or a certificate's, and its daily
//! warning). `registry` keeps one provider per app (endpoint, client, scope, credential), so
//! accounts of one app share one cached token.

pub mod app;
pub mod claims;
pub mod entra;
pub mod expiry;
pub mod google;
pub mod http;
pub mod jws;
pub mod registry;
pub mod token;
