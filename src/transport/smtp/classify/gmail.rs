//! Gmail's reply catalogue (google-workspace.md §4 and §7, from Google's "Gmail SMTP errors
//! and codes" page, support.google.com/a/answer/3726730, and observed replies): the rules
//! consulted for accounts with `provider = "google"`, and the fallbacks for what they do not
//! know (the same stage rules as Exchange's, with Gmail's fixes).
//!
//! Invariants: as `rules.rs` (first match wins, most specific first, no final period). Classes
//! follow the fact sheet's "relay suggestion" column: `550 5.4.5` (daily sending limit) is
//! transient with a long back-off, so the account pauses and nothing is bounced although the
//! code is 5xx; `535` is configuration whatever its enhanced code (5.7.8 on the wire, 5.7.1 in
//! Google's xoauth2 example), with one token refresh first.

use super::rules::{ReplyCodes, Rule};
use super::{ConnectionFailure, EnhancedStatus, FollowUp, Stage, TlsFailure, Verdict};

const fn enhanced(class: u8, subject: u16, detail: u16) -> Option<EnhancedStatus> {
    Some(EnhancedStatus {
        class,
        subject,
        detail,
    })
}

const fn rule(
    reply: ReplyCodes,
    enhanced: Option<EnhancedStatus>,
    any_of: &'static [&'static str],
    verdict: Verdict,
) -> Rule {
    Rule {
        reply,
        enhanced,
        any_of,
        stages: &[],
        verdict,
    }
}

const TOKEN_REFUSED: Verdict = Verdict::configuration(
    "Gmail refused the XOAUTH2 token (535 Username and Password not accepted): domain-wide \
     delegation for the service account's client ID lacks https://mail.google.com/, the mailbox \
     is not the user the token was issued for, or the user is suspended or has Gmail turned off",
    "in the Admin console (admin.google.com) → Security → Access and data control → API \
     controls → Domain-wide delegation, give the key file's numeric client_id the scope \
     https://mail.google.com/ (minutes, up to 24 h to take effect); mailbox must be an active \
     user with Gmail on",
)
.with(FollowUp::RefreshTokenOnce);

const PASSWORD_AUTH_ANSWER: Verdict = Verdict::configuration(
    "Gmail answered as to a password login (534: application-specific password or web \
     sign-in required); the relay only uses XOAUTH2, so smtp_server is probably not Gmail's \
     submission server or a proxy rewrites AUTH",
    "check smtp_server = smtp.gmail.com:587 with smtp_tls = \"starttls\"",
);

const AUTH_TEMPORARY: Verdict = Verdict::transient(
    "Gmail cannot authenticate right now (454 4.7.0 temporary system problem); it clears by \
     itself",
    "",
);

const TOO_MANY_LOGINS: Verdict = Verdict::transient(
    "Gmail refused the login: too many login attempts for this user; the relay backs off",
    "lower max_connections of the account, and check that no other application logs in as \
     the mailbox in a loop",
);

const STARTTLS_FIRST: Verdict = Verdict::configuration(
    "Gmail requires STARTTLS before AUTH and mail (530 5.7.0 Must issue a STARTTLS command \
     first)",
    "set smtp_tls = \"starttls\" with smtp_server = smtp.gmail.com:587 (or \"implicit\" with \
     port 465)",
);

const AUTH_REQUIRED: Verdict = Verdict::configuration(
    "Gmail wants authentication before MAIL (530 5.7.0 Authentication Required): the session \
     was not authenticated",
    "check smtp_server = smtp.gmail.com:587; report a relay bug if it repeats",
);

const TLS_REQUIRED_FOR_DOMAIN: Verdict = Verdict::configuration(
    "Gmail requires TLS for this recipient domain (421 4.7.0 TLS required for RCPT domain)",
    "set smtp_tls = \"starttls\" (never \"none\" towards Gmail)",
);

const UNSOLICITED_RATE: Verdict = Verdict::transient(
    "Gmail temporarily blocks this sender for an unusual rate of unsolicited mail; the relay \
     backs off; if it lasts over an hour, investigate what is being sent",
    "check the sending applications for a loop or spam; see \
     https://support.google.com/mail/?p=UnsolicitedRateLimitError",
)
.with(FollowUp::EscalateAfterOneHour);

const DAILY_LIMIT: Verdict = Verdict::transient(
    "Gmail's daily sending limit for this user is reached (550 5.4.5; 2,000 messages or \
     10,000 recipients per rolling 24 h): the account pauses until the window allows, nothing \
     is bounced",
    "wait (up to 24 h); spread mail over several accounts, or lower max_recipients_per_day of \
     the account so the relay paces itself below Gmail's limit",
)
.with(FollowUp::LongBackoff);

const TOO_MANY_RECIPIENTS: Verdict = Verdict::transient(
    "Gmail takes at most 100 recipients per message over SMTP (452 4.5.3); the rest go in \
     another transaction",
    "set max_recipients_per_message of the account to 100 or less",
)
.with(FollowUp::SplitRecipients);

const RECIPIENT_OVER_QUOTA: Verdict = Verdict::transient(
    "the recipient's mailbox is over quota (452 4.2.2); retried later",
    "",
);

const RECIPIENT_TOO_FAST: Verdict = Verdict::transient(
    "the recipient is receiving mail too quickly (450 4.2.1); retried later",
    "",
);

const PROTOCOL_VIOLATION: Verdict = Verdict::configuration(
    "Gmail reports an SMTP protocol violation by the relay (4.5.0)",
    "report a relay bug",
);

const BLOCKED_CONTENT: Verdict = Verdict::permanent(
    "Gmail blocked the message because its content presents a potential security issue \
     (552 5.7.0): usually an attachment of a blocked type (.exe, .js, .bat …, also inside \
     archives) or a macro document",
    "send the file another way (a link to a shared drive), or remove the attachment; see \
     https://support.google.com/mail/?p=BlockedMessage",
);

const TOO_LARGE: Verdict = Verdict::permanent(
    "the message exceeds Gmail's size limit (552 5.3.4; 25 MB for outgoing mail)",
    "send a smaller message (attachments as links) or lower max_message_size in [limits] to \
     25 MB so clients are told at once",
);

const ADMIN_POLICY: Verdict = Verdict::permanent(
    "a Gmail compliance rule of the Workspace refused the message (550 5.7.1 … email policy, \
     gcdp)",
    "review the rules in Admin console → Apps → Google Workspace → Gmail → Compliance (and \
     Routing) that match this sender or content",
);

const POLICY_REFUSED: Verdict = Verdict::permanent(
    "Gmail refused the message by policy (550 5.7.1: unsolicited mail, not RFC 5322 \
     compliant, or relaying denied)",
    "check the message's headers (From, Date, Message-ID) and that the sender is the mailbox \
     or one of its send-as addresses (Gmail → Settings → Accounts → Send mail as)",
);

/// Gmail's rules, most specific first.
pub(super) const GMAIL_RULES: &[Rule] = &[
    rule(ReplyCodes::Exactly(535), None, &[], TOKEN_REFUSED),
    rule(ReplyCodes::Exactly(534), None, &[], PASSWORD_AUTH_ANSWER),
    rule(
        ReplyCodes::Exactly(454),
        enhanced(4, 7, 0),
        &["too many login"],
        TOO_MANY_LOGINS,
    ),
    rule(
        ReplyCodes::Exactly(454),
        enhanced(4, 7, 0),
        &["cannot authenticate", "temporary"],
        AUTH_TEMPORARY,
    ),
    rule(
        ReplyCodes::Exactly(454),
        enhanced(4, 5, 0),
        &[],
        PROTOCOL_VIOLATION,
    ),
    rule(
        ReplyCodes::Exactly(451),
        enhanced(4, 5, 0),
        &[],
        PROTOCOL_VIOLATION,
    ),
    rule(
        ReplyCodes::Exactly(530),
        enhanced(5, 7, 0),
        &["starttls"],
        STARTTLS_FIRST,
    ),
    rule(
        ReplyCodes::Exactly(530),
        enhanced(5, 7, 0),
        &["authentication required", "wantautherror"],
        AUTH_REQUIRED,
    ),
    rule(
        ReplyCodes::Exactly(421),
        enhanced(4, 7, 0),
        &["tls required"],
        TLS_REQUIRED_FOR_DOMAIN,
    ),
    rule(
        ReplyCodes::Exactly(421),
        enhanced(4, 7, 0),
        &["unsolicited", "unusual rate"],
        UNSOLICITED_RATE,
    ),
    rule(ReplyCodes::Any, enhanced(5, 4, 5), &[], DAILY_LIMIT),
    rule(
        ReplyCodes::Any,
        None,
        &["sending limit exceeded", "DailyLimitExceeded"],
        DAILY_LIMIT,
    ),
    rule(
        ReplyCodes::Exactly(452),
        enhanced(4, 5, 3),
        &[],
        TOO_MANY_RECIPIENTS,
    ),
    rule(
        ReplyCodes::Exactly(452),
        enhanced(4, 2, 2),
        &[],
        RECIPIENT_OVER_QUOTA,
    ),
    rule(
        ReplyCodes::Exactly(450),
        enhanced(4, 2, 1),
        &[],
        RECIPIENT_TOO_FAST,
    ),
    rule(
        ReplyCodes::Exactly(552),
        enhanced(5, 7, 0),
        &[],
        BLOCKED_CONTENT,
    ),
    rule(ReplyCodes::Any, None, &["BlockedMessage"], BLOCKED_CONTENT),
    rule(ReplyCodes::Exactly(552), enhanced(5, 3, 4), &[], TOO_LARGE),
    rule(ReplyCodes::Any, None, &["MaxSizeError"], TOO_LARGE),
    rule(
        ReplyCodes::Any,
        enhanced(5, 7, 1),
        &["email policy", "gcdp"],
        ADMIN_POLICY,
    ),
    rule(ReplyCodes::Any, enhanced(5, 7, 1), &[], POLICY_REFUSED),
];

const CLOSING: Verdict = Verdict::transient(
    "Gmail is closing the session (421); it will accept a new one later",
    "",
)
.with(FollowUp::Reconnect);

const DEFERRED: Verdict = Verdict::transient("Gmail deferred the request (4xx)", "");

const SESSION_REFUSED: Verdict = Verdict::transient(
    "Gmail refused the session before any message was sent, so this is not about the message",
    "if it lasts, check that smtp_server is smtp.gmail.com:587",
);

const SESSION_SETUP_REFUSED: Verdict = Verdict::configuration(
    "Gmail refused the session's set-up (EHLO, STARTTLS or AUTH)",
    "check smtp_server = smtp.gmail.com:587 with smtp_tls = \"starttls\", and the account's \
     domain-wide delegation (client ID with https://mail.google.com/)",
);

const SENDER_REFUSED: Verdict = Verdict::permanent(
    "Gmail refused the sender",
    "send from the mailbox or one of its send-as addresses (Gmail → Settings → Accounts → \
     Send mail as)",
);

const RECIPIENT_REFUSED: Verdict = Verdict::permanent("Gmail refused this recipient", "");

const MESSAGE_REFUSED: Verdict = Verdict::permanent("Gmail refused the message", "");

const SESSION_OUT_OF_STEP: Verdict = Verdict::transient(
    "Gmail refused a command between messages; the session is out of step (no message is \
     affected)",
    "",
)
.with(FollowUp::Reconnect);

/// The verdict for a Gmail reply no rule knows: by code and stage, as for Exchange.
pub(super) fn fallback(stage: Stage, code: u16) -> Verdict {
    match code {
        421 => CLOSING,
        400..=499 => DEFERRED,
        _ => match stage {
            Stage::Connect | Stage::Greeting => SESSION_REFUSED,
            Stage::Ehlo | Stage::StartTls | Stage::Tls | Stage::Auth => SESSION_SETUP_REFUSED,
            Stage::MailFrom => SENDER_REFUSED,
            Stage::RcptTo => RECIPIENT_REFUSED,
            Stage::Data | Stage::DataEnd => MESSAGE_REFUSED,
            Stage::Rset | Stage::Quit => SESSION_OUT_OF_STEP,
        },
    }
}

/// A failure below SMTP on the way to Gmail (before the final dot; `classify_connection`
/// handles [`Stage::DataEnd`] alike for both providers).
pub(super) fn connection(kind: ConnectionFailure) -> Verdict {
    super::connection_verdict!(kind, "Gmail", "smtp.gmail.com")
}

/// A stop the relay itself made on the way to Gmail (no STARTTLS or XOAUTH2 offered, an
/// address lettre cannot express).
pub(super) fn local(stage: Stage) -> Verdict {
    match stage {
        Stage::MailFrom | Stage::RcptTo => Verdict::permanent(
            "the message cannot be expressed for this server",
            "check the sender and recipient addresses of the message",
        ),
        _ => Verdict::configuration(
            "the upstream server does not offer what Gmail offers (STARTTLS, then AUTH XOAUTH2)",
            "check smtp_server and smtp_tls of the account (smtp.gmail.com:587 with STARTTLS)",
        ),
    }
}
