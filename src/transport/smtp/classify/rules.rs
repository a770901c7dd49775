//! The reply catalogue as data: one ordered table of rules taken from `exchange-online.md` §4.4
//! and §5, each mapping a pattern (reply code, enhanced status code, text, stage) to a verdict.
//!
//! Invariants: the first matching rule wins. Rules are ordered most specific first: enhanced
//! code plus text, then enhanced code alone, then text alone (for replies whose enhanced code is
//! missing or unfamiliar). Text matches are case-insensitive substrings. The class of each rule
//! is the class the doc gives; a reply that matches no rule is left to the fallbacks in
//! `classify.rs`. Reasons and fixes never end with a period: the caller adds punctuation.

use super::{EnhancedStatus, FollowUp, Stage, Verdict};

/// Which basic reply codes a rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyCodes {
    /// Any reply code.
    Any,
    /// Exactly this reply code.
    Exactly(u16),
    /// Only 4xx replies.
    Transient,
}

/// A pattern and the verdict it leads to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    /// The basic reply codes this rule applies to.
    pub reply: ReplyCodes,
    /// The leading enhanced status code the reply must carry, if any.
    pub enhanced: Option<EnhancedStatus>,
    /// The reply text must contain one of these (case-insensitive); empty means any text.
    pub any_of: &'static [&'static str],
    /// The stages this rule applies to; empty means every stage.
    pub stages: &'static [Stage],
    /// What the relay does when the rule matches.
    pub verdict: Verdict,
}

impl Rule {
    /// A rule keyed by an enhanced status code.
    const fn code(class: u8, subject: u16, detail: u16, verdict: Verdict) -> Self {
        Self {
            reply: ReplyCodes::Any,
            enhanced: Some(EnhancedStatus {
                class,
                subject,
                detail,
            }),
            any_of: &[],
            stages: &[],
            verdict,
        }
    }

    /// A rule keyed by text only.
    const fn text(any_of: &'static [&'static str], verdict: Verdict) -> Self {
        Self {
            reply: ReplyCodes::Any,
            enhanced: None,
            any_of,
            stages: &[],
            verdict,
        }
    }

    /// Also requires one of these substrings.
    const fn containing(self, any_of: &'static [&'static str]) -> Self {
        Self { any_of, ..self }
    }

    /// Only at these stages.
    const fn at(self, stages: &'static [Stage]) -> Self {
        Self { stages, ..self }
    }

    /// Only for these reply codes.
    const fn reply(self, reply: ReplyCodes) -> Self {
        Self { reply, ..self }
    }
}

const SETUP_CHECKLIST: &str = "work through the setup checklist: scope = \
     https://outlook.office365.com/.default (not Graph); Entra admin center → App registrations → \
     <app> → API permissions holds Office 365 Exchange Online → Application → SMTP.SendAsApp with \
     admin consent granted; New-ServicePrincipal -AppId <client_id> -ObjectId \
     <Enterprise-application object id> (not the App-registration object id); \
     Add-MailboxPermission -Identity <mailbox> -User <service principal> -AccessRights FullAccess; \
     mailbox is a mailbox of this tenant; then allow 30 min to 2 h for the changes to propagate";

const TOKEN_REJECTED: Verdict = Verdict::configuration(
    "Exchange rejected the access token (535 5.7.3): wrong scope or audience, SMTP.SendAsApp \
     missing or not consented, service principal not registered in Exchange or without FullAccess \
     on the mailbox, or a recent change still propagating",
    SETUP_CHECKLIST,
)
.with(FollowUp::RefreshTokenOnce);

const SMTP_AUTH_DISABLED_FOR_TENANT: Verdict = Verdict::configuration(
    "SMTP AUTH is disabled for the tenant (or by security defaults) and the mailbox has no \
     override; this blocks OAuth too",
    "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false (the per-mailbox \
     setting beats the tenant's), or tenant-wide: Set-TransportConfig \
     -SmtpClientAuthenticationDisabled $false; allow up to about 1 h to take effect",
);

const SMTP_AUTH_DISABLED_FOR_MAILBOX: Verdict = Verdict::configuration(
    "SMTP AUTH is explicitly disabled for this mailbox",
    "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false (or $null to \
     follow the tenant setting); allow up to about 1 h to take effect",
);

const BASIC_AUTH_USED: Verdict = Verdict::configuration(
    "Exchange answered as if the relay had used Basic authentication; the relay must only use \
     XOAUTH2, so this is a relay bug or smtp_server is not Exchange Online",
    "report a relay bug; check that smtp_server is smtp.office365.com:587 and that no proxy \
     rewrites AUTH",
);

const SEND_AS_DENIED: Verdict = Verdict::permanent(
    "the sender address is neither the authenticated mailbox nor one it holds SendAs on (checked \
     after the final dot)",
    "send from the authenticated mailbox, or Add-RecipientPermission -Identity <sender> -Trustee \
     <mailbox> -AccessRights SendAs (allow up to 1-2 h to propagate)",
);

const RECIPIENT_QUOTA: Verdict = Verdict::transient(
    "the mailbox reached its limit of 10,000 recipients per rolling 24 hours; it can send again as \
     the window slides (suspect a compromised account if unexpected)",
    "wait; spread mail across several mailboxes, or use HVE / Azure Communication Services for \
     bulk mail",
)
.with(FollowUp::LongBackoff);

const MAILBOX_FULL: Verdict = Verdict::configuration(
    "the sending mailbox is full: every SMTP submission is kept in its Sent Items",
    "free space in <mailbox> and give it a retention policy that empties Sent Items",
);

const MAILBOX_LOGON_FAILURE: Verdict = Verdict::transient(
    "Exchange could not open the mailbox for this session (STOREDRV mailbox logon failure): \
     usually the service principal lacks FullAccess or a permission change has not propagated; \
     treat as configuration if it lasts over 1 h",
    "Add-MailboxPermission -Identity <mailbox> -User <service principal> -AccessRights FullAccess, \
     then allow up to 1 h to propagate",
)
.with(FollowUp::EscalateAfterOneHour);

const CONCURRENCY_LIMIT: Verdict = Verdict::transient(
    "more than 3 concurrent submissions for this mailbox",
    "reduce per-mailbox concurrency to ≤3 (the relay's max_connections for this account; other \
     senders using the same mailbox count too)",
)
.with(FollowUp::ReduceConcurrency);

const STARTTLS_REQUIRED: Verdict = Verdict::configuration(
    "Exchange requires STARTTLS before mail, and this session was not encrypted",
    "set smtp_tls = \"starttls\" with smtp_server = smtp.office365.com:587 (never \"none\" towards \
     Exchange Online)",
);

const MECHANISM_REFUSED: Verdict = Verdict::permanent(
    "Exchange did not accept the authentication mechanism (AUTH before STARTTLS, or not XOAUTH2): \
     a relay bug",
    "report a relay bug; check smtp_tls = \"starttls\" so AUTH is sent after TLS",
);

const PROXY_ERROR: Verdict = Verdict::transient(
    "Exchange front-end proxy error (PRX); it clears by itself",
    "",
);

const BACKEND_ERROR: Verdict = Verdict::transient(
    "transient Exchange back-end error (MRH); it clears by itself",
    "",
);

const BARE_LINEFEEDS: Verdict = Verdict::permanent(
    "Exchange refused bare line feeds in the message; the relay normalises line endings, so this \
     is a relay bug",
    "report a relay bug",
);

const RECIPIENT_NOT_FOUND: Verdict = Verdict::permanent(
    "this recipient address does not exist",
    "correct the recipient address in the sending application",
);

const POLICY_BLOCKED_SIGN_IN: Verdict = Verdict::configuration(
    "Conditional Access or an authentication policy blocked the sign-in",
    "review Conditional Access policies in Entra admin center; the service-principal sign-in logs \
     name the policy that applied",
);

const SMTP_AUTH_REFUSED_BY_POLICY: Verdict = Verdict::configuration(
    "Exchange refused SMTP AUTH for this mailbox by policy (5.7.139)",
    "make sure SMTP AUTH is enabled: Set-CASMailbox -Identity <mailbox> \
     -SmtpClientAuthenticationDisabled $false; review Conditional Access policies",
);

const XOAUTH2_DATA_INVALID: Verdict = Verdict::permanent(
    "Exchange could not parse the XOAUTH2 data: a relay bug in the SASL encoder",
    "report a relay bug; meanwhile check that mailbox holds a plain address without spaces",
);

const NOT_AUTHENTICATED: Verdict = Verdict::configuration(
    "Exchange refused MAIL FROM because the session is not authenticated (or not encrypted)",
    "the relay must AUTH successfully before MAIL: look for the AUTH outcome in the log, and check \
     smtp_server = smtp.office365.com:587 with smtp_tls = \"starttls\"",
);

const LEGACY_TLS_REFUSED: Verdict = Verdict::configuration(
    "Exchange refused TLS 1.0/1.1; it requires TLS 1.2 or later",
    "the relay offers TLS 1.2+, so something in between downgrades it: exempt smtp_server from TLS \
     inspection, or fix the proxy",
);

const LEGACY_TLS_REFUSED_BY_ORGANISATION: Verdict = Verdict::configuration(
    "the organisation refuses TLS 1.0/1.1; TLS 1.2 or later is required",
    "exempt smtp_server from TLS inspection or fix the proxy that downgrades TLS",
);

const SENDER_RESTRICTED: Verdict = Verdict::configuration(
    "Exchange restricted the mailbox from sending (Restricted entities: suspected spam or \
     compromise)",
    "investigate <mailbox> for compromise, then release it in Microsoft Defender portal → \
     Restricted entities",
);

const TENANT_BLOCKED: Verdict = Verdict::permanent(
    "the tenant is blocked from sending: it exceeded the outbound spam or bulk threshold",
    "fix the cause, then contact Microsoft Support",
);

const IP_NOT_ACCEPTED: Verdict = Verdict::permanent(
    "Exchange does not accept traffic from this IP address (low reputation, common on trial \
     tenants)",
    "open a Microsoft Support request",
);

const UNREGISTERED_DOMAIN: Verdict = Verdict::permanent(
    "the sender's domain is not an accepted (registered) domain of the tenant",
    "add and verify the domain in Microsoft 365 admin center → Settings → Domains, or send from an \
     accepted domain",
);

const TENANT_EXTERNAL_RECIPIENT_LIMIT: Verdict = Verdict::transient(
    "the tenant exceeded its daily external-recipient limit (TERRL); the 24-hour window slides",
    "wait; the limit grows with the number of licences",
)
.with(FollowUp::LongBackoff);

const TRIAL_TENANT_RECIPIENT_LIMIT: Verdict = Verdict::permanent(
    "the trial tenant exceeded its external-recipient limit",
    "move the tenant to a paid subscription",
);

const FRONT_END_RESTARTING: Verdict =
    Verdict::transient("the Exchange front end is draining or restarting", "")
        .with(FollowUp::Reconnect);

const TOO_MANY_RECIPIENTS: Verdict = Verdict::transient(
    "too many recipients for one message; the remaining recipients go in a new transaction",
    "optional: raise the mailbox's recipient limit (at most 1000)",
)
.with(FollowUp::SplitRecipients);

const MESSAGE_TOO_LARGE: Verdict = Verdict::permanent(
    "the message is larger than the mailbox may send (MaxSendSize, 35 MB by default; base64 adds \
     about a third)",
    "Set-Mailbox -Identity <mailbox> -MaxSendSize 150MB (150 MB at most), or send a smaller \
     message",
);

const HEADER_TOO_LONG: Verdict = Verdict::permanent(
    "a header value is longer than Exchange's limit of 32768 characters",
    "fix the sending application so it shortens or folds that header",
);

const COMMAND_NOT_RECOGNISED: Verdict = Verdict::transient(
    "Exchange did not recognise a command: the SMTP conversation is out of step",
    "none if it clears after reconnecting; report a relay bug if it repeats",
)
.with(FollowUp::Reconnect);

const CONNECTION_LOST_AFTER_DOT: Verdict = Verdict::transient(
    "the connection dropped after the final dot: Exchange may already have accepted the message, \
     so a retry can deliver it twice",
    "",
)
.with(FollowUp::Reconnect)
.possibly_delivered();

const CONNECTION_DROPPED: Verdict =
    Verdict::transient("the connection to Exchange dropped", "").with(FollowUp::Reconnect);

/// Stages at which "mailbox full" is about the sending mailbox, not a recipient's.
const SUBMISSION_STAGES: &[Stage] = &[Stage::MailFrom, Stage::Data, Stage::DataEnd];

/// The catalogue, most specific first.
pub(super) static RULES: &[Rule] = &[
    // 5.7.139: SMTP AUTH refused by tenant policy, told apart by text.
    Rule::code(5, 7, 139, BASIC_AUTH_USED).containing(&["basic authentication is disabled"]),
    Rule::code(5, 7, 139, SMTP_AUTH_DISABLED_FOR_MAILBOX).containing(&["disabled for the Mailbox"]),
    Rule::code(5, 7, 139, SMTP_AUTH_DISABLED_FOR_TENANT).containing(&["SmtpClientAuthentication"]),
    Rule::code(5, 7, 139, POLICY_BLOCKED_SIGN_IN).containing(&["did not meet the criteria"]),
    Rule::code(5, 7, 139, BASIC_AUTH_USED).containing(&["security defaults", "credentials were"]),
    Rule::code(5, 7, 139, SMTP_AUTH_REFUSED_BY_POLICY),
    Rule::code(5, 7, 30, BASIC_AUTH_USED),
    Rule::code(5, 7, 3, TOKEN_REJECTED).reply(ReplyCodes::Exactly(535)),
    Rule::code(5, 5, 124, XOAUTH2_DATA_INVALID),
    Rule::code(5, 7, 4, MECHANISM_REFUSED),
    Rule::code(5, 7, 57, NOT_AUTHENTICATED),
    Rule::code(4, 7, 66, LEGACY_TLS_REFUSED),
    Rule::code(5, 7, 67, LEGACY_TLS_REFUSED_BY_ORGANISATION),
    // Sender permission, quotas and tenant limits (after the final dot, mostly).
    Rule::code(5, 7, 60, SEND_AS_DENIED),
    Rule::code(5, 2, 252, SEND_AS_DENIED),
    Rule::code(5, 2, 0, SEND_AS_DENIED).containing(&["SendAsDenied"]),
    Rule::code(5, 2, 0, RECIPIENT_QUOTA).containing(&["SubmissionQuotaExceeded"]),
    Rule::code(5, 1, 90, RECIPIENT_QUOTA),
    Rule::code(5, 2, 2, MAILBOX_FULL).at(SUBMISSION_STAGES),
    Rule::code(5, 1, 8, SENDER_RESTRICTED),
    Rule::code(5, 7, 705, TENANT_BLOCKED),
    Rule::code(5, 7, 708, IP_NOT_ACCEPTED),
    Rule::code(5, 7, 750, UNREGISTERED_DOMAIN),
    Rule::code(5, 7, 233, TENANT_EXTERNAL_RECIPIENT_LIMIT),
    Rule::code(5, 7, 232, TRIAL_TENANT_RECIPIENT_LIMIT),
    // Transient service conditions.
    Rule::code(4, 7, 0, PROXY_ERROR).containing(&["PRX"]),
    Rule::code(4, 3, 111, BACKEND_ERROR),
    Rule::code(4, 3, 2, CONCURRENCY_LIMIT).containing(&[
        "ClientSubmit",
        "thread limit",
        "Concurrent",
    ]),
    Rule::code(4, 3, 2, FRONT_END_RESTARTING),
    Rule::code(4, 2, 0, MAILBOX_LOGON_FAILURE).containing(&["STOREDRV", "logon fail"]),
    Rule::code(4, 4, 3, CONNECTION_LOST_AFTER_DOT).at(&[Stage::DataEnd]),
    Rule::code(4, 4, 2, CONNECTION_LOST_AFTER_DOT).at(&[Stage::DataEnd]),
    Rule::code(4, 4, 3, CONNECTION_DROPPED),
    Rule::code(4, 4, 2, CONNECTION_DROPPED),
    Rule::code(4, 5, 3, TOO_MANY_RECIPIENTS),
    // The message itself.
    Rule::code(5, 3, 4, MESSAGE_TOO_LARGE),
    Rule::code(5, 6, 211, HEADER_TOO_LONG),
    Rule::code(5, 3, 3, COMMAND_NOT_RECOGNISED),
    Rule::code(5, 6, 11, BARE_LINEFEEDS),
    Rule::code(5, 1, 10, RECIPIENT_NOT_FOUND),
    // Text alone, for replies whose enhanced code is missing or unfamiliar.
    Rule::text(&["basic authentication is disabled"], BASIC_AUTH_USED),
    Rule::text(
        &["SmtpClientAuthentication is disabled for the Mailbox"],
        SMTP_AUTH_DISABLED_FOR_MAILBOX,
    ),
    Rule::text(&["SmtpClientAuthentication"], SMTP_AUTH_DISABLED_FOR_TENANT),
    Rule::text(&["STARTTLS is required"], STARTTLS_REQUIRED),
    Rule::text(&["Unrecognized authentication type"], MECHANISM_REFUSED),
    Rule::text(&["SendAsDenied"], SEND_AS_DENIED),
    Rule::text(&["SubmissionQuotaExceeded"], RECIPIENT_QUOTA),
    Rule::text(
        &["mailbox logon failure", "MapiExceptionLogonFailed"],
        MAILBOX_LOGON_FAILURE,
    ),
    Rule::text(
        &["sender thread limit", "Concurrent connections limit"],
        CONCURRENCY_LIMIT,
    ),
    Rule::text(&["QuotaExceeded", "mailbox full"], MAILBOX_FULL).at(SUBMISSION_STAGES),
    Rule::text(&["BareLinefeedsAreIllegal"], BARE_LINEFEEDS),
    Rule::text(&["RecipientNotFound"], RECIPIENT_NOT_FOUND),
    Rule::text(&["PRX"], PROXY_ERROR).reply(ReplyCodes::Transient),
    Rule::text(&["MRH"], BACKEND_ERROR).reply(ReplyCodes::Transient),
];
