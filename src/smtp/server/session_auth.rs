//! The AUTH verb of the session state machine (RFC 4954): the mechanisms PLAIN and LOGIN,
//! their SASL steps, and the session's side of the password check (the check itself runs in
//! the driver, `auth.rs`).
//!
//! Invariants: AUTH is accepted only over TLS unless the listener allows it in clear, never
//! twice in a session and never inside a mail transaction. A cancelled or undecodable response
//! ends the exchange with a 5xx counted as an error; wrong credentials (including a PLAIN
//! response without a username, or one that asks to act as someone else) count against
//! `max_auth_failures`, after which the session closes with `421 4.7.0`. A deferred check
//! (the throttle's `454 4.7.0`) counts as neither.

use std::sync::Arc;

use super::Session;
use crate::policy::Grant;
use crate::smtp::proto::reply::Reply;
use crate::smtp::server::sasl::{self, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT, SaslError};
use crate::smtp::server::session_io::{Action, Step};
use crate::vocab::secret::Secret;

/// Where the session is in an AUTH exchange.
#[derive(Debug)]
pub(super) enum AuthPhase {
    /// No AUTH in progress: the next line is a command.
    Idle,
    /// `AUTH PLAIN` without an initial response: the next line is the response.
    PlainResponse,
    /// `AUTH LOGIN`: the next line is the username.
    LoginUsername,
    /// `AUTH LOGIN`: the next line is the password for this username.
    LoginPassword { username: String },
    /// The credentials are with the driver for checking.
    Verifying,
}

impl Session {
    /// True while the next line is a SASL response, not a command.
    pub fn expects_auth_response(&self) -> bool {
        matches!(
            self.auth,
            AuthPhase::PlainResponse | AuthPhase::LoginUsername | AuthPhase::LoginPassword { .. }
        )
    }

    /// `AUTH <mechanism> [initial-response]`.
    pub(super) fn auth(&mut self, mechanism: &str, initial_response: Option<String>) -> Step {
        if self.user.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.transaction.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            ));
        }
        if !self.auth_offered() {
            return self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        match (mechanism, initial_response) {
            ("PLAIN", None) => {
                self.auth = AuthPhase::PlainResponse;
                Step::reply(Reply::bare(334, vec![]))
            }
            ("PLAIN", Some(response)) => self.plain(&response),
            ("LOGIN", None) => {
                self.auth = AuthPhase::LoginUsername;
                Step::reply(Reply::bare(334, vec![LOGIN_USERNAME_PROMPT.into()]))
            }
            ("LOGIN", Some(response)) => {
                self.auth = AuthPhase::LoginUsername;
                self.auth_response(response.as_bytes())
            }
            _ => self.error(Reply::new(504, "5.5.4", "Unrecognized authentication type")),
        }
    }

    /// The next line of an AUTH exchange (or of one that just ended: a stray response).
    pub(super) fn auth_response(&mut self, line: &[u8]) -> Step {
        let phase = std::mem::replace(&mut self.auth, AuthPhase::Idle);
        let Ok(line) = std::str::from_utf8(line) else {
            return self.sasl_error(SaslError::BadBase64);
        };
        match phase {
            AuthPhase::PlainResponse => self.plain(line),
            AuthPhase::LoginUsername => match sasl::decode_login_field(line) {
                Ok(username) if !username.is_empty() => {
                    self.auth = AuthPhase::LoginPassword { username };
                    Step::reply(Reply::bare(334, vec![LOGIN_PASSWORD_PROMPT.into()]))
                }
                Ok(_) => self.sasl_error(SaslError::BadPlain),
                Err(error) => self.sasl_error(error),
            },
            AuthPhase::LoginPassword { username } => match sasl::decode_login_field(line) {
                Ok(password) => self.verify(username, Secret::new(password)),
                Err(error) => self.sasl_error(error),
            },
            AuthPhase::Idle | AuthPhase::Verifying => {
                self.error(Reply::new(503, "5.5.1", "No authentication in progress"))
            }
        }
    }

    fn plain(&mut self, response: &str) -> Step {
        match sasl::decode_plain(response) {
            Ok((username, password)) => self.verify(username, password),
            Err(error) => self.sasl_error(error),
        }
    }

    fn verify(&mut self, username: String, password: Secret) -> Step {
        self.auth = AuthPhase::Verifying;
        Step {
            reply: None,
            action: Action::VerifyPassword { username, password },
            refusal: None,
        }
    }

    fn sasl_error(&mut self, error: SaslError) -> Step {
        self.auth = AuthPhase::Idle;
        match error {
            SaslError::Cancelled => {
                self.error(Reply::new(501, "5.7.0", "Authentication cancelled"))
            }
            SaslError::BadBase64 => {
                self.error(Reply::new(501, "5.5.2", "Cannot decode the response"))
            }
            SaslError::BadPlain | SaslError::ProxyNotAllowed => self.auth_finished(None),
        }
    }

    /// The password check could not run in time (the client's address or username is being
    /// slowed down after failures): a temporary refusal that does not count as a failure.
    pub fn auth_deferred(&mut self, reply: Reply) -> Step {
        self.auth = AuthPhase::Idle;
        Step::reply(reply)
    }

    /// The password check finished: `Some(grant)` on success.
    pub fn auth_finished(&mut self, grant: Option<Arc<Grant>>) -> Step {
        self.auth = AuthPhase::Idle;
        match grant {
            Some(grant) => {
                self.user = Some(grant);
                Step::reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            None => {
                self.auth_failures += 1;
                if self.auth_failures >= self.settings.max_auth_failures {
                    return Step::then(
                        Reply::new(
                            421,
                            "4.7.0",
                            "Too many authentication failures, closing connection",
                        ),
                        Action::Close,
                    );
                }
                self.error(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ))
            }
        }
    }
}
