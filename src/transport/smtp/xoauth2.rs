//! `AUTH XOAUTH2` as both servers speak it (google-workspace.md §4, exchange-online.md): the
//! initial response `base64("user=" mailbox ^A "auth=Bearer " token ^A ^A)`, then `235` on
//! success. On failure Exchange answers `535` at once, but Gmail first sends a `334` challenge
//! holding a base64 JSON error (`{"status":"401","schemes":…,"scope":…}`), to which the
//! client must answer with an empty line before it gets the final `535`. lettre's own XOAUTH2
//! refuses any challenge ("This mechanism does not expect a challenge") and leaves the
//! conversation mid-SASL, so the relay runs this exchange itself over lettre's `command`.
//!
//! Invariants: the token is written only inside the initial response, never logged (lettre's
//! `tracing` feature is off) and never part of an error; at most one challenge is answered.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::transport::smtp::client::AsyncSmtpConnection;

use super::SmtpFailure;
use super::steps::timed;
use crate::vocab::verdict::Stage;

/// `AUTH XOAUTH2 <initial response>`; its `Display` is the command line (with the token).
struct AuthXoauth2 {
    encoded: String,
}

impl fmt::Display for AuthXoauth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AUTH XOAUTH2 {}\r\n", self.encoded)
    }
}

impl fmt::Debug for AuthXoauth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AUTH XOAUTH2 [redacted]")
    }
}

/// The empty line that answers an error challenge.
struct EmptyAnswer;

impl fmt::Display for EmptyAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\r\n")
    }
}

/// The initial client response of XOAUTH2 for `user` and `token`.
fn initial_response(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// Authenticates `connection` as `user` with `token`; each step bounded by `limit`.
///
/// # Errors
/// [`SmtpFailure`] at [`Stage::Auth`]: the server's final refusal (a `535` after Gmail's
/// challenge, too), a second challenge, or a broken connection.
pub(super) async fn authenticate(
    connection: &mut AsyncSmtpConnection,
    user: &str,
    token: &str,
    limit: Duration,
) -> Result<(), SmtpFailure> {
    let command = AuthXoauth2 {
        encoded: initial_response(user, token),
    };
    let mut response = timed(Stage::Auth, limit, connection.command(command)).await?;
    if response.has_code(334) {
        // An error challenge: answer it, and the server's next reply is the verdict.
        response = timed(Stage::Auth, limit, connection.command(EmptyAnswer)).await?;
    }
    if response.has_code(334) {
        return Err(SmtpFailure::local(
            Stage::Auth,
            "the server sent a second XOAUTH2 challenge; the relay answers at most one",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_response_is_the_sasl_string_and_debug_hides_it() {
        let encoded = initial_response("relay@example.com", "ya29.token");
        let decoded = STANDARD.decode(&encoded).unwrap();
        assert_eq!(
            decoded,
            b"user=relay@example.com\x01auth=Bearer ya29.token\x01\x01"
        );
        let command = AuthXoauth2 { encoded };
        assert!(command.to_string().starts_with("AUTH XOAUTH2 dXNlcj1"));
        assert!(command.to_string().ends_with("\r\n"));
        assert!(!format!("{command:?}").contains("dXNlcj1"));
        assert_eq!(EmptyAnswer.to_string(), "\r\n");
    }
}
