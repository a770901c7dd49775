//! The inbound SMTP session state machine: lines in, replies and [`Action`]s out.
//!
//! No socket, no clock, no disk: the connection driver (`conn.rs`) feeds it command lines and
//! the results of the actions it asked for (message stored, password checked, TLS started),
//! and sends the replies it returns, in order. That keeps every protocol decision here and
//! testable without I/O. The verbs with steps of their own have a file each: AUTH
//! (`session_auth.rs`) and DATA (`session_data.rs`).
//!
//! Invariants:
//! - MAIL is accepted only from a client with a [`Grant`] (an authenticated user, or a trusted
//!   network); everyone else gets `530 5.7.0`. The sender must match the grant's patterns.
//! - AUTH is offered and accepted only over TLS, unless the listener allows it in clear.
//! - Every reply of class 2, 4 or 5 carries an enhanced status code (RFC 2034), except the
//!   greeting and the EHLO/HELO answers, which RFC 2034 excludes.
//! - After STARTTLS the session forgets everything it was told in clear (RFC 3207 §4.2).
//! - While the spool's filesystem is below its disk reserve, MAIL gets `452 4.3.1` (RFC 5321
//!   §4.2.3, RFC 1870 §6.1), after the access checks, so it tells nothing to strangers.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::policy::{Grant, SenderDecision};
use crate::smtp::proto::command::{Command, MailFrom, parse_command};
use crate::smtp::proto::reply::Reply;
use crate::vocab::address::Address;
use crate::vocab::tls_mode::TlsMode;

#[path = "session_auth.rs"]
mod auth_verb;
#[path = "session_data.rs"]
mod data_verb;
use auth_verb::AuthPhase;

pub use super::session_io::{Action, DataOutcome, DataRequest, Refusal, SessionSettings, Step};

/// What EHLO or HELO told the session.
#[derive(Debug)]
struct Hello {
    /// The name the client gave (its argument, as sent).
    name: String,
    /// EHLO (extended SMTP) rather than HELO.
    extended: bool,
}

/// A mail transaction: from an accepted MAIL until DATA finished, RSET, a new EHLO/HELO or
/// STARTTLS.
#[derive(Debug)]
struct Transaction {
    /// The MAIL command as the client sent it.
    mail: MailFrom,
    /// The sender the message goes out with (the client's, or the account's mailbox).
    effective_sender: Option<Address>,
    /// The account chosen by the envelope sender (the grant's default when none may send as
    /// it); the `From:` header may still change it before the commit.
    account: String,
    /// The accepted recipients, each mailbox once.
    recipients: Vec<Address>,
}

/// One inbound SMTP session.
#[derive(Debug)]
pub struct Session {
    /// The listener's settings, as they were when the connection started.
    settings: Arc<SessionSettings>,
    /// The client's address.
    peer: SocketAddr,
    /// The grant of the trusted network the client is on, if any.
    network_grant: Option<Arc<Grant>>,
    /// TLS is active (implicit TLS, or after STARTTLS).
    tls_active: bool,
    /// The latest EHLO/HELO since the start or STARTTLS.
    helo: Option<Hello>,
    /// The authenticated user's grant (it wins over `network_grant`).
    user: Option<Arc<Grant>>,
    /// The mail transaction in progress.
    transaction: Option<Transaction>,
    /// Where an AUTH exchange stands.
    auth: AuthPhase,
    /// 5xx answers to commands so far (the session closes past `max_errors`).
    errors: u32,
    /// Failed AUTH attempts so far (the session closes at `max_auth_failures`).
    auth_failures: u32,
}

impl Session {
    /// A new session. `tls_active` is true on implicit-TLS listeners.
    pub fn new(
        settings: Arc<SessionSettings>,
        peer: SocketAddr,
        network_grant: Option<Arc<Grant>>,
        tls_active: bool,
    ) -> Session {
        Session {
            settings,
            peer,
            network_grant,
            tls_active,
            helo: None,
            user: None,
            transaction: None,
            auth: AuthPhase::Idle,
            errors: 0,
            auth_failures: 0,
        }
    }

    /// The `220` greeting.
    pub fn greeting(&self) -> Reply {
        Reply::bare(
            220,
            vec![format!("{} ESMTP smtp-oauth-relay ready", self.settings.hostname).into()],
        )
    }

    /// True once a user authenticated (the registry favours such a session).
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// True from an accepted MAIL until the transaction ends (DATA finished, RSET, …): the
    /// connection registry never evicts such a session.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Handle one input line (a command, or a SASL response while AUTH is in progress).
    pub fn handle_line(&mut self, line: &[u8]) -> Step {
        if self.expects_auth_response() {
            return self.auth_response(line);
        }
        match parse_command(line) {
            Ok(command) => self.command(command),
            Err(error) => self.error(error.reply()),
        }
    }

    /// The line was longer than the limit and was discarded.
    pub fn line_too_long(&mut self) -> Step {
        if self.expects_auth_response() {
            self.auth = AuthPhase::Idle;
        }
        self.error(Reply::new(500, "5.5.2", "Line too long"))
    }

    /// Count a 5xx answer; close the connection after too many.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            return Step::then(
                Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Too many errors, closing connection",
                        self.settings.hostname
                    ),
                ),
                Action::Close,
            );
        }
        Step::reply(reply)
    }

    fn command(&mut self, command: Command) -> Step {
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(recipient) => self.rcpt(recipient),
            Command::RcptPostmaster => self.rcpt_postmaster(),
            Command::Data => self.data(),
            Command::Rset => {
                self.transaction = None;
                Step::reply(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => Step::reply(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => Step::then(
                Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing connection", self.settings.hostname),
                ),
                Action::Close,
            ),
            Command::Vrfy => Step::reply(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn => self.error(Reply::new(502, "5.5.1", "EXPN is not available")),
            Command::Help => self.help(),
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response),
            Command::Bdat => Step::then(
                Reply::new(
                    502,
                    "5.5.1",
                    "BDAT is not supported (CHUNKING is not offered), closing connection",
                ),
                Action::Close,
            ),
        }
    }

    /// The commands this session would take, like EHLO's list.
    fn help(&self) -> Step {
        let mut commands =
            String::from("Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
        if self.settings.tls_mode == TlsMode::Starttls && !self.tls_active {
            commands.push_str(" STARTTLS");
        }
        if self.auth_offered() {
            commands.push_str(" AUTH");
        }
        Step::reply(Reply::new(214, "2.0.0", commands))
    }

    fn auth_offered(&self) -> bool {
        self.tls_active || self.settings.allow_auth_without_tls
    }

    fn hello(&mut self, name: String, extended: bool) -> Step {
        self.transaction = None;
        let hostname = &self.settings.hostname;
        let reply = if extended {
            let mut lines: Vec<std::borrow::Cow<'static, str>> = vec![
                format!(
                    "{hostname} Hello {name} [{}]",
                    self.peer.ip().to_canonical()
                )
                .into(),
                "PIPELINING".into(),
                format!("SIZE {}", self.settings.max_message_size).into(),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
                "SMTPUTF8".into(),
            ];
            if self.settings.tls_mode == TlsMode::Starttls && !self.tls_active {
                lines.push("STARTTLS".into());
            }
            if self.auth_offered() {
                lines.push("AUTH PLAIN LOGIN".into());
                // Some old clients (Outlook Express era, some printers) only read this form.
                lines.push("AUTH=PLAIN LOGIN".into());
            }
            lines.push("HELP".into());
            Reply::bare(250, lines)
        } else {
            Reply::bare(250, vec![hostname.clone().into()])
        };
        self.helo = Some(Hello { name, extended });
        Step::reply(reply)
    }

    fn grant(&self) -> Option<&Arc<Grant>> {
        self.user.as_ref().or(self.network_grant.as_ref())
    }

    fn mail(&mut self, mail: MailFrom) -> Step {
        if self.transaction.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Sender already specified"));
        }
        let Some(grant) = self.grant() else {
            let text = if self.auth_offered() {
                "Authentication required"
            } else if self.settings.tls_mode == TlsMode::Starttls {
                "Authentication required; issue STARTTLS first, then AUTH"
            } else {
                "Authentication required, and this client is not on a trusted network"
            };
            let sender = mail.sender.as_ref().map(Address::to_string);
            return self.error(Reply::new(530, "5.7.0", text)).refused(
                "not authenticated",
                format!(
                    "MAIL FROM:<{}> from a client that has not authenticated and is on no trusted [[network]]",
                    sender.unwrap_or_default()
                ),
            );
        };
        // Routing by sender: the account that may send as the envelope sender, if any, else
        // the default account and its rules.
        let routed = grant
            .route_for(mail.sender.as_ref())
            .map(|route| grant.through(route));
        let grant = routed.as_ref().unwrap_or(grant);
        let account = grant.account.clone();
        let decision = grant.decide(mail.sender.as_ref());
        if decision == SenderDecision::Refuse {
            let sender = mail
                .sender
                .as_ref()
                .map(Address::to_string)
                .unwrap_or_default();
            let principal = grant.principal.to_string();
            return self
                .error(Reply::new(
                    550,
                    "5.7.1",
                    format!("Sender address <{sender}> is not allowed for {principal}"),
                ))
                .refused(
                    "sender not allowed",
                    format!(
                        "MAIL FROM:<{sender}> is not in the allowed_senders of {principal} (account {account})"
                    ),
                );
        }
        if let Some(size) = mail.declared_size
            && size > self.settings.max_message_size
        {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed maximum message size of {} bytes",
                    self.settings.max_message_size
                ),
            ));
        }
        if !self
            .settings
            .disk_reserve
            .admits(mail.declared_size.unwrap_or(0))
        {
            return Step::reply(Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage: the relay's disk is nearly full, please try again later",
            ));
        }
        let sender = mail
            .sender
            .as_ref()
            .map(Address::to_string)
            .unwrap_or_default();
        let (effective_sender, text) = match decision {
            SenderDecision::Rewrite(mailbox) => {
                let text = format!("Sender <{sender}> ok, will be sent as <{mailbox}>");
                (Some(mailbox), text)
            }
            _ => (mail.sender.clone(), format!("Sender <{sender}> ok")),
        };
        self.transaction = Some(Transaction {
            mail,
            effective_sender,
            account,
            recipients: Vec::new(),
        });
        Step::reply(Reply::new(250, "2.1.0", text))
    }

    /// The unqualified postmaster is the postmaster of the account mailbox's domain.
    fn rcpt_postmaster(&mut self) -> Step {
        let domain = self.grant().and_then(|g| {
            g.account_mailbox
                .as_str()
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
        });
        match domain.and_then(|d| Address::parse(&format!("postmaster@{d}")).ok()) {
            Some(postmaster) => self.rcpt(postmaster),
            // No grant means no MAIL either: the usual sequencing answer.
            None => self.error(Reply::new(503, "5.5.1", "Need MAIL command first")),
        }
    }

    fn rcpt(&mut self, recipient: Address) -> Step {
        let max = self.settings.max_recipients;
        let Some(transaction) = self.transaction.as_mut() else {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL command first"));
        };
        // The same mailbox twice gets the message once (and counts once against the limits).
        if transaction
            .recipients
            .iter()
            .any(|r| r.as_str().eq_ignore_ascii_case(recipient.as_str()))
        {
            return Step::reply(Reply::new(
                250,
                "2.1.5",
                format!("Recipient <{recipient}> ok (duplicate, delivered once)"),
            ));
        }
        if transaction.recipients.len() >= max {
            return Step::reply(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        let reply = Reply::new(250, "2.1.5", format!("Recipient <{recipient}> ok"));
        transaction.recipients.push(recipient);
        Step::reply(reply)
    }

    fn starttls(&mut self) -> Step {
        if self.tls_active {
            return self.error(Reply::new(503, "5.5.1", "TLS is already active"));
        }
        if self.settings.tls_mode != TlsMode::Starttls {
            return self.error(Reply::new(
                502,
                "5.5.1",
                "STARTTLS is not offered on this port",
            ));
        }
        Step::then(
            Reply::new(220, "2.0.0", "Ready to start TLS"),
            Action::StartTls,
        )
    }

    /// The TLS handshake succeeded: forget everything negotiated in clear.
    pub fn tls_established(&mut self) {
        self.tls_active = true;
        self.helo = None;
        self.user = None;
        self.transaction = None;
        self.auth = AuthPhase::Idle;
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
