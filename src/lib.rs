//! smtp-oauth-relay: accepts mail from legacy SMTP clients on the LAN, keeps it durably in a
//! spool, and delivers it to Exchange Online over STARTTLS with SASL XOAUTH2 and an OAuth 2.0
//! client-credentials token that the relay obtains, caches and renews by itself.

pub mod testkit;
