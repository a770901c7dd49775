//! The AUTH command of the fake Exchange server: refusal before TLS (`504 5.7.4`), XOAUTH2
//! with an initial response or after an empty `334 ` challenge, and the Basic mechanisms
//! (LOGIN dialogue, PLAIN) that end in `535 5.7.139 ... basic authentication is disabled.`.
//!
//! Invariants: every AUTH command produces exactly one [`AuthAttempt`] record; only the
//! token's first 8 characters are recorded; a successful AUTH opens the session's
//! concurrency slot, which it keeps until the connection ends.

use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{AuthAttempt, AuthRejection};
use super::exchange_auth::{Identity, authorize, parse_xoauth2, rejection_reply};
use super::exchange_io::{ConnError, Line, SmtpStream};
use super::exchange_replies as replies;
use super::exchange_session::{Authenticated, Session, Step};
use super::jwt::{decode_claims_unverified, token_prefix};

impl Session {
    pub(super) async fn auth<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        argument: &str,
    ) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut parts = argument.split_whitespace();
        let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(str::to_owned);
        if self.auth.is_some() {
            return self.protocol_error(conn, replies::AUTH_ALREADY).await;
        }
        let mut attempt = AuthAttempt {
            at: SystemTime::now(),
            mechanism: mechanism.clone(),
            mailbox: None,
            client_id: None,
            token_prefix: None,
            result: Err(AuthRejection::UnsupportedMechanism),
        };
        let outcome = if !self.tls {
            Err(AuthRejection::NotAdvertised)
        } else {
            match mechanism.as_str() {
                "XOAUTH2" => self.xoauth2(conn, initial, &mut attempt).await?,
                "LOGIN" => self.basic_login(conn, initial).await?,
                "PLAIN" => self.basic_plain(conn, initial).await?,
                _ => Err(AuthRejection::UnsupportedMechanism),
            }
        };
        attempt.result = outcome.as_ref().map(|_| ()).map_err(|r| *r);
        self.shared.record_auth(attempt);
        match outcome {
            Ok(identity) => {
                let slot = self.shared.open_slot(&identity.mailbox);
                self.auth = Some(Authenticated {
                    mailbox: identity.mailbox,
                    client_id: identity.client_id,
                    slot,
                });
                self.send(conn, replies::AUTH_OK).await?;
            }
            Err(rejection) => {
                let reply = rejection_reply(rejection, self.host());
                self.send(conn, &reply).await?;
            }
        }
        Ok(Step::Continue)
    }

    /// Reads the answer to a `334` challenge.
    async fn challenge<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        challenge: &str,
    ) -> Result<Option<String>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.send(conn, challenge).await?;
        match conn.read_line(self.shared.options.max_command_line).await? {
            Line::Complete(line) => {
                let answer = String::from_utf8_lossy(&line).trim().to_owned();
                Ok((answer != "*").then_some(answer))
            }
            Line::TooLong => Ok(Some(String::new())),
        }
    }

    async fn xoauth2<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        initial: Option<String>,
        attempt: &mut AuthAttempt,
    ) -> Result<Result<Identity, AuthRejection>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let encoded = match initial {
            Some(initial) => initial,
            None => match self.challenge(conn, replies::AUTH_CONTINUE_EMPTY).await? {
                Some(answer) => answer,
                None => return Ok(Err(AuthRejection::Cancelled)),
            },
        };
        let Some(payload) = parse_xoauth2(&encoded) else {
            return Ok(Err(AuthRejection::InvalidXoauth2Data));
        };
        attempt.mailbox = Some(payload.user.clone());
        attempt.token_prefix = Some(token_prefix(&payload.token));
        attempt.client_id = decode_claims_unverified(&payload.token)
            .ok()
            .map(|claims| claims.appid);
        Ok(authorize(&self.shared, &payload, SystemTime::now()))
    }

    /// AUTH LOGIN: the username/password dialogue, then the Basic-auth-disabled refusal.
    async fn basic_login<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        initial: Option<String>,
    ) -> Result<Result<Identity, AuthRejection>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if initial.is_none()
            && self
                .challenge(conn, replies::AUTH_LOGIN_USERNAME)
                .await?
                .is_none()
        {
            return Ok(Err(AuthRejection::Cancelled));
        }
        if self
            .challenge(conn, replies::AUTH_LOGIN_PASSWORD)
            .await?
            .is_none()
        {
            return Ok(Err(AuthRejection::Cancelled));
        }
        Ok(Err(AuthRejection::BasicAuthDisabled))
    }

    /// AUTH PLAIN (not advertised): optional empty challenge, then the Basic refusal.
    async fn basic_plain<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        initial: Option<String>,
    ) -> Result<Result<Identity, AuthRejection>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if initial.is_none()
            && self
                .challenge(conn, replies::AUTH_CONTINUE_EMPTY)
                .await?
                .is_none()
        {
            return Ok(Err(AuthRejection::Cancelled));
        }
        Ok(Err(AuthRejection::BasicAuthDisabled))
    }
}
