//! Classifying every outcome of the SMTP transport: turns an SMTP reply or a broken connection
//! from Exchange Online (or, for Google accounts, Gmail: `gmail.rs`, chosen by the failure's
//! `provider`) into a [`Verdict`]: transient (back off and retry), configuration (an admin must act;
//! keep the mail queued, retry slowly, alert) or permanent (fail this message), with the reason
//! in plain words and the admin fix from `exchange-online.md` §5.
//!
//! Invariants:
//! - Pure and total: no I/O, no clock, never panics on any code or text.
//! - One table decides (`rules.rs`); the enhanced status code is matched before text, text
//!   matching is case-insensitive. Where the doc gives a class, the verdict has that class.
//! - A 4xx reply is never [`Class::Permanent`] (RFC 5321: a temporary refusal must not become a
//!   failure). Everything the table does not know is transient, except a 5xx, which follows the
//!   stage:
//!   - at Connect or Greeting a 5xx refuses the whole session before any message was named, so
//!     it says nothing about this message: transient (and not configuration, because a front end
//!     that refuses sessions usually recovers by itself);
//!   - at EHLO, STARTTLS, TLS or AUTH a 5xx is about the relay's identity, TLS path or
//!     credentials, which an admin must fix: configuration;
//!   - at MAIL, RCPT, DATA and the final dot a 5xx is about this message (or this recipient):
//!     permanent;
//!   - at RSET or QUIT the message outcome is already known; the session is out of step:
//!     transient, reconnect.
//! - Where the doc's class differs from that default, the doc wins: the 5xx recipient quotas
//!   (`554 5.2.0 …SubmissionQuotaExceeded`, `550 5.1.90`, `550 5.7.233`) are transient with a
//!   long back-off; `500 5.3.3` (a desynchronised conversation) is transient and reconnects; and
//!   `501 5.5.124` and `504 5.7.4` at AUTH stay permanent (relay bugs, as the doc classes them)
//!   although other AUTH refusals are configuration.
//! - `duplicate_possible` is set only when the final dot may have reached Exchange: transport
//!   failures at [`Stage::DataEnd`] and `4.4.2`/`4.4.3` "connection dropped" replies there.
//! - Follow-up advice that needs memory (refresh the token once on `535 5.7.3`, escalate a
//!   mailbox logon failure after an hour) is returned as [`FollowUp`]; acting on it is the
//!   caller's job (`delivery`, the only part deciding what happens to the message).

mod gmail;
#[cfg(test)]
mod gmail_tests;
mod rules;
#[cfg(test)]
mod tests;

use crate::vocab::provider::Provider;
use crate::vocab::verdict::{Class, ConnectionFailure, FollowUp, Stage, TlsFailure, Verdict};

use self::rules::{RULES, ReplyCodes, Rule};
use super::failure::{SmtpFailure, SmtpFailureKind};
use crate::vocab::enhanced_status::{EnhancedStatus, enhanced_code};

/// Classifies a failure of the SMTP transport: its reply by the catalogue, a broken
/// connection by [`classify_connection`], and the relay's own stops (a limitation of the
/// server, its unreadable spool copy) by what they mean for the message.
pub fn classify_failure(failure: &SmtpFailure) -> Verdict {
    match &failure.kind {
        SmtpFailureKind::Reply { code, text } => {
            classify_reply_for(failure.provider, failure.stage, *code, text)
        }
        SmtpFailureKind::Connection { failure: kind, .. } => match failure.provider {
            Provider::Google if failure.stage != Stage::DataEnd => gmail::connection(*kind),
            _ => classify_connection(failure.stage, *kind),
        },
        SmtpFailureKind::Local(_) => match failure.provider {
            Provider::Microsoft => local_verdict(failure.stage),
            Provider::Google => gmail::local(failure.stage),
        },
        SmtpFailureKind::Spool(_) => SPOOL_READ_VERDICT,
    }
}

/// The relay could not read its own copy: transient, and the entry is verified again (and
/// quarantined if it really is damaged) when it is next loaded.
const SPOOL_READ_VERDICT: Verdict = Verdict {
    class: Class::Transient,
    reason: "the relay could not read its spooled copy of the message",
    fix: "check the disk and the permissions of the state directory",
    duplicate_possible: false,
    follow_up: FollowUp::None,
};

/// A failure the relay itself detected (e.g. no STARTTLS offered).
fn local_verdict(stage: Stage) -> Verdict {
    let (class, reason, fix) = match stage {
        Stage::MailFrom | Stage::RcptTo => (
            Class::Permanent,
            "the message cannot be expressed for this server",
            "check the sender and recipient addresses of the message",
        ),
        _ => (
            Class::Configuration,
            "the upstream server does not offer what Exchange Online offers",
            "check smtp_server and smtp_tls of the account (smtp.office365.com:587 with STARTTLS)",
        ),
    };
    Verdict {
        class,
        reason,
        fix,
        duplicate_possible: false,
        follow_up: FollowUp::None,
    }
}

/// Classifies a reply from Exchange. `code` is the 3-digit reply code; `text` is the rest of the
/// reply (enhanced code and text; multi-line replies joined with spaces). A code outside
/// 400..=599 (a 2xx or 3xx the caller did not expect here, or garbage) means the conversation is
/// out of step: transient, reconnect.
pub fn classify_reply(stage: Stage, code: u16, text: &str) -> Verdict {
    classify_reply_for(Provider::Microsoft, stage, code, text)
}

/// The verdict for a reply no rule of a catalogue knows.
type Fallback = fn(Stage, u16) -> Verdict;

/// Classifies a reply by the catalogue of `provider`'s mail service: Exchange Online's
/// (`rules.rs`) or Gmail's (`gmail.rs`); the rules on codes outside 400..=599 and on 4xx
/// never being permanent are the same for both.
pub fn classify_reply_for(provider: Provider, stage: Stage, code: u16, text: &str) -> Verdict {
    if !(400..600).contains(&code) {
        return UNEXPECTED_REPLY;
    }
    let enhanced = enhanced_code(text);
    let (rules, fallback): (&[Rule], Fallback) = match provider {
        Provider::Microsoft => (RULES, fallback),
        Provider::Google => (gmail::GMAIL_RULES, gmail::fallback),
    };
    let verdict = rules
        .iter()
        .find(|rule| rule_matches(rule, stage, code, enhanced, text))
        .map_or_else(|| fallback(stage, code), |rule| rule.verdict);
    if (400..500).contains(&code) && verdict.class == Class::Permanent {
        Verdict {
            class: Class::Transient,
            ..verdict
        }
    } else {
        verdict
    }
}

/// Whether one catalogue rule applies to a reply.
fn rule_matches(
    rule: &Rule,
    stage: Stage,
    code: u16,
    enhanced: Option<EnhancedStatus>,
    text: &str,
) -> bool {
    let reply_ok = match rule.reply {
        ReplyCodes::Any => true,
        ReplyCodes::Exactly(expected) => code == expected,
        ReplyCodes::Transient => (400..500).contains(&code),
    };
    let enhanced_ok = rule.enhanced.is_none() || rule.enhanced == enhanced;
    let stage_ok = rule.stages.is_empty() || rule.stages.contains(&stage);
    let text_ok = rule.any_of.is_empty()
        || rule
            .any_of
            .iter()
            .any(|needle| contains_ignoring_ascii_case(text, needle));
    reply_ok && enhanced_ok && stage_ok && text_ok
}

/// Case-insensitive (ASCII) substring test; an empty needle matches.
fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    if needle.is_empty() {
        return true;
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

const UNEXPECTED_REPLY: Verdict = Verdict::transient(
    "Exchange sent a reply the relay did not expect here: the conversation is out of step",
    "report a relay bug if it repeats",
)
.with(FollowUp::Reconnect);

const CLOSING: Verdict = Verdict::transient(
    "Exchange is closing the session (421); it will accept a new one later",
    "",
)
.with(FollowUp::Reconnect);

const DEFERRED: Verdict = Verdict::transient("Exchange deferred the request (4xx)", "");

const SESSION_REFUSED: Verdict = Verdict::transient(
    "Exchange refused the session before any message was sent, so this is not about the message",
    "if it lasts, check that smtp_server is smtp.office365.com:587",
);

const EHLO_REFUSED: Verdict = Verdict::configuration(
    "the server refused EHLO: the relay's host name is unacceptable or smtp_server is not an \
     ESMTP submission server",
    "set hostname in [relay] to a fully qualified domain name and check that smtp_server is \
     smtp.office365.com:587",
);

const STARTTLS_REFUSED: Verdict = Verdict::configuration(
    "the server refused STARTTLS: it does not offer TLS, or something in between strips it",
    "check smtp_server = smtp.office365.com:587 with smtp_tls = \"starttls\", and that no proxy \
     intercepts SMTP",
);

const AUTH_REFUSED: Verdict = Verdict::configuration(
    "Exchange refused authentication",
    "check SMTP.SendAsApp with admin consent, New-ServicePrincipal, FullAccess on the mailbox, \
     that SMTP AUTH is enabled (Set-CASMailbox -Identity <mailbox> \
     -SmtpClientAuthenticationDisabled $false) and that scope is \
     https://outlook.office365.com/.default",
);

const SENDER_REFUSED: Verdict = Verdict::permanent(
    "Exchange refused the sender",
    "send from the authenticated mailbox or one it holds SendAs on",
);

const RECIPIENT_REFUSED: Verdict = Verdict::permanent("Exchange refused this recipient", "");

const MESSAGE_REFUSED: Verdict = Verdict::permanent("Exchange refused the message", "");

const SESSION_OUT_OF_STEP: Verdict = Verdict::transient(
    "Exchange refused a command between messages; the session is out of step (no message is \
     affected)",
    "",
)
.with(FollowUp::Reconnect);

/// The verdict for a reply no catalogue rule knows (see the module docs).
fn fallback(stage: Stage, code: u16) -> Verdict {
    match code {
        421 => CLOSING,
        400..=499 => DEFERRED,
        500..=599 => match stage {
            Stage::Connect | Stage::Greeting => SESSION_REFUSED,
            Stage::Ehlo => EHLO_REFUSED,
            Stage::StartTls | Stage::Tls => STARTTLS_REFUSED,
            Stage::Auth => AUTH_REFUSED,
            Stage::MailFrom => SENDER_REFUSED,
            Stage::RcptTo => RECIPIENT_REFUSED,
            Stage::Data | Stage::DataEnd => MESSAGE_REFUSED,
            Stage::Rset | Stage::Quit => SESSION_OUT_OF_STEP,
        },
        _ => UNEXPECTED_REPLY,
    }
}

const LOST_AFTER_DOT: Verdict = Verdict::transient(
    "the connection failed after the final dot was sent: Exchange may already have accepted the \
     message, so a retry can deliver it twice",
    "",
)
.with(FollowUp::Reconnect)
.possibly_delivered();

/// The verdict of a failure below SMTP before the final dot, with the provider's service name
/// and submission host (literals) in its reasons and fixes: one table for every provider.
macro_rules! connection_verdict {
    ($kind:expr, $service:literal, $host:literal) => {
        match $kind {
            ConnectionFailure::Refused => Verdict::transient(
                "the connection to smtp_server was refused",
                concat!(
                    "if it lasts, check smtp_server (",
                    $host,
                    ":587) and that the firewall allows outbound TCP 587"
                ),
            ),
            ConnectionFailure::Timeout => Verdict::transient(
                concat!($service, " did not answer in time"),
                "if it lasts, check that the firewall allows outbound TCP 587 to smtp_server",
            ),
            ConnectionFailure::Reset => Verdict::transient("the connection was reset", ""),
            ConnectionFailure::Closed => {
                Verdict::transient("the server closed the connection without a reply", "")
            }
            ConnectionFailure::NotSmtp => Verdict::transient(
                "the server's answer is not an SMTP reply",
                concat!(
                    "check that smtp_server is ",
                    $host,
                    ":587 with smtp_tls = \"starttls\", and that no proxy or firewall answers in \
                     its place"
                ),
            ),
            ConnectionFailure::Dns => Verdict::transient(
                "the smtp_server host name could not be resolved",
                "check the host name in smtp_server and the relay host's DNS resolver",
            ),
            ConnectionFailure::Tls(TlsFailure::CertificateInvalid) => Verdict::configuration(
                "the server's TLS certificate is not trusted or does not match the host name",
                concat!(
                    "check that smtp_server names the host (",
                    $host,
                    ", not an IP address); behind a TLS-inspecting proxy, put the proxy's root \
                     certificate in ca_file"
                ),
            ),
            ConnectionFailure::Tls(TlsFailure::ProtocolVersion) => Verdict::configuration(
                "TLS failed on the protocol version: the relay requires TLS 1.2 or later and the \
                 other side offered less",
                concat!(
                    "check that smtp_server is ",
                    $host,
                    " and that no proxy in between downgrades TLS"
                ),
            ),
            ConnectionFailure::Tls(TlsFailure::HandshakeFailed) => Verdict::transient(
                "the TLS handshake failed",
                concat!(
                    "if it lasts, check for a TLS-inspecting proxy (its root goes in ca_file) and \
                     that smtp_server is ",
                    $host,
                    ":587 with smtp_tls = \"starttls\""
                ),
            ),
        }
        .with(FollowUp::Reconnect)
    };
}
pub(super) use connection_verdict;

/// Classifies a failure below SMTP. At [`Stage::DataEnd`] every failure is transient with
/// `duplicate_possible`, because the final dot may have arrived.
pub fn classify_connection(stage: Stage, kind: ConnectionFailure) -> Verdict {
    if stage == Stage::DataEnd {
        return LOST_AFTER_DOT;
    }
    connection_verdict!(kind, "Exchange", "smtp.office365.com")
}
