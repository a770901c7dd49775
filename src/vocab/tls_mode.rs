//! How an inbound listener offers TLS. Shared by the config (which parses it) and the SMTP
//! session (which decides what EHLO advertises and whether AUTH is allowed yet).

/// TLS on an inbound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text only (trusted networks, localhost).
    None,
    /// Plain text, upgraded with STARTTLS.
    Starttls,
    /// TLS from the first byte (port 465 style).
    Implicit,
}
