//! Classifying every outcome of the Graph transport: an HTTP status with Graph's `error.code`
//! (graph.md §5; branch on the code, never on the human message, except for the 4 MB request
//! limit, which Graph reports as a 400 with only a message), or a broken connection, into a
//! [`Verdict`] with the reason in plain words and the administrator's fix.
//!
//! Invariants:
//! - Pure and total: no I/O, no clock, never panics on any status, code or text.
//! - The [`Stage`] a failure carries says how far the problem reaches; the session chooses it
//!   with [`stage_for`]: a refused token, a permission or scope refusal and an unusable
//!   mailbox are at [`Stage::Auth`] (about the account: `delivery` pauses it); a refused sender
//!   at [`Stage::MailFrom`], refused recipients at [`Stage::RcptTo`], everything else about the
//!   message at [`Stage::Data`] (a draft step) or [`Stage::DataEnd`] (a request that sends).
//! - `duplicate_possible` only when a sending request may have been carried out: a 504, or a
//!   connection lost after a sending request was written.
//! - 401 and the permission refusals ask for one token refresh ([`FollowUp::RefreshTokenOnce`]):
//!   a consent or role change only shows in tokens issued after it.

use crate::vocab::verdict::{ConnectionFailure, FollowUp, Stage, TlsFailure, Verdict};

use super::failure::{GraphFailure, GraphFailureKind};

/// Where a Graph error answer belongs (see the module invariants); `sends` is true for a
/// request that could send the message, `draft` for the draft steps before it.
pub fn stage_for(status: u16, code: &str, sends: bool) -> Stage {
    match (status, code) {
        (401, _)
        | (_, "NoPermissionsInAccessToken" | "MailboxNotEnabledForRESTAPI" | "ErrorInvalidUser")
        | (404, "ResourceNotFound") => Stage::Auth,
        (403, "ErrorAccessDenied") if sends => Stage::Auth,
        (_, "ErrorSendAsDenied") => Stage::MailFrom,
        (_, "ErrorInvalidRecipients") => Stage::RcptTo,
        _ if sends => Stage::DataEnd,
        _ => Stage::Data,
    }
}

/// Classifies a failure of the Graph transport.
pub fn classify_failure(failure: &GraphFailure) -> Verdict {
    match &failure.kind {
        GraphFailureKind::Reply {
            status,
            code,
            message,
            not_before,
            sends,
        } => classify_reply(
            failure.stage,
            *status,
            code,
            message,
            not_before.is_some(),
            *sends,
        ),
        GraphFailureKind::Connection { failure: kind, .. } => {
            classify_connection(failure.stage, *kind)
        }
        GraphFailureKind::TooLarge { .. } => TOO_LARGE,
        GraphFailureKind::Waiting { .. } => THROTTLED,
        GraphFailureKind::Local(_) => Verdict::transient(
            "Graph's answer could not be used (the draft route went out of step)",
            "none needed if it passes; if it persists, check graph_endpoint points at Microsoft Graph",
        ),
        GraphFailureKind::Spool(_) => Verdict::transient(
            "the relay could not read its spooled copy of the message",
            "check the disk and the permissions of the state directory",
        ),
    }
}

const TOO_LARGE: Verdict = Verdict::configuration(
    "larger than Graph's 4 MB request, and what is left without its base64 attachments of 3 MB or more (at the top level of the MIME) still does not fit one request",
    "the message waits in the queue; send such messages through an account with transport = \"smtp\" (`queue requeue` after moving it)",
);

const THROTTLED: Verdict = Verdict::transient(
    "Graph throttled the mailbox (429/503 with Retry-After); the whole account waits as long as Graph asked",
    "none needed; if it persists, lower max_connections or spread the traffic over several mailboxes (Graph allows 4 concurrent and 10,000 requests per 10 minutes per mailbox)",
);

const TOKEN_REFUSED: Verdict = Verdict::configuration(
    "Graph refused the access token (InvalidAuthenticationToken: wrong audience or cloud, or expired)",
    "the token must be for the Graph of the account's cloud: check cloud and scope of the account (the relay asks for <graph root>/.default by default) and that graph_endpoint is Microsoft Graph of that cloud",
)
.with(FollowUp::RefreshTokenOnce);

const NO_ROLES: Verdict = Verdict::configuration(
    "the token carries no application permission (NoPermissionsInAccessToken: no roles claim)",
    "Entra admin center → App registrations → the app → API permissions → Add a permission → Microsoft Graph → Application permissions → Mail.Send, then Grant admin consent; the relay fetches a new token",
)
.with(FollowUp::RefreshTokenOnce);

const ACCESS_DENIED: Verdict = Verdict::configuration(
    "Graph denied the app access to the mailbox (ErrorAccessDenied: the Mail.Send application permission is missing or not consented, or the mailbox is outside the app's RBAC for Applications scope)",
    "grant Microsoft Graph Application permission Mail.Send with admin consent; with RBAC for Applications: New-ManagementRoleAssignment -App <client id> -Role \"Application Mail.Send\" -CustomResourceScope \"<scope name>\" and check with Test-ServicePrincipalAuthorization -Identity <client id> -Resource <mailbox>",
)
.with(FollowUp::RefreshTokenOnce);

const DRAFT_DENIED: Verdict = Verdict::configuration(
    "the message must go through a draft (its To/Cc name someone who is not in its envelope, or it is larger than one Graph request) and Graph denied the draft: the app lacks Mail.ReadWrite (only such messages wait)",
    "grant Microsoft Graph Application permission Mail.ReadWrite with admin consent, or New-ManagementRoleAssignment -App <client id> -Role \"Application Mail.ReadWrite\" -CustomResourceScope \"<scope name>\"; check with Test-ServicePrincipalAuthorization -Identity <client id> -Resource <mailbox>",
);

const SEND_AS_DENIED: Verdict = Verdict::permanent(
    "the mailbox may not send as the From: address of the message (ErrorSendAsDenied; the reply names it)",
    "Add-RecipientPermission -Identity <the From: address in the reply> -Trustee <mailbox> -AccessRights SendAs, or make the client write From: <mailbox>",
);

const NOT_REST_ENABLED: Verdict = Verdict::configuration(
    "the mailbox cannot be used through Graph (MailboxNotEnabledForRESTAPI: inactive, soft-deleted, unlicensed or hosted on-premises)",
    "give <mailbox> an Exchange Online licence and mailbox, or use transport = \"smtp\" for it",
);

const UNKNOWN_USER: Verdict = Verdict::configuration(
    "Graph does not know the account's mailbox (ErrorInvalidUser / ResourceNotFound)",
    "set mailbox of the account to the user principal name of an Exchange Online mailbox",
);

const INVALID_RECIPIENTS: Verdict = Verdict::permanent(
    "Graph refused the recipients of the message (ErrorInvalidRecipients)",
    "check the recipient addresses of the message",
);

const MESSAGE_TOO_BIG: Verdict = Verdict::permanent(
    "the message exceeds the mailbox's size limit (ErrorMessageSizeExceeded)",
    "Set-Mailbox -Identity <mailbox> -MaxSendSize 150MB raises the limit (35 MB by default)",
);

const QUOTA_EXCEEDED: Verdict = Verdict::transient(
    "the sending mailbox is full, so Graph cannot keep the copy in Sent Items (ErrorQuotaExceeded)",
    "free space in <mailbox> (Sent Items) or raise its quota",
)
.with(FollowUp::EscalateAfterOneHour);

const GATEWAY_TIMEOUT: Verdict = Verdict::transient(
    "Graph answered 504 Gateway Timeout; the message may have been sent already, so a retry can deliver it twice",
    "none needed; check the message trace if a recipient reports a duplicate",
)
.possibly_delivered();

const SERVICE_ERROR: Verdict = Verdict::transient(
    "Graph had a temporary problem (5xx)",
    "none needed; Microsoft 365 service health shows outages",
);

const NOT_FOUND_ITEM: Verdict = Verdict::transient(
    "the draft the relay created was not found again (ErrorItemNotFound)",
    "none needed; the whole draft route is tried again",
);

const BAD_REQUEST: Verdict = Verdict::permanent(
    "Graph refused the message as malformed (400)",
    "check the message; the log quotes Graph's error code",
);

const RELAY_BUG: Verdict = Verdict::transient(
    "Graph could not decode the request the relay sent (ErrorMimeContentInvalidBase64String)",
    "report this to the relay's maintainers with the log line",
)
.with(FollowUp::EscalateAfterOneHour);

const OTHER_REFUSAL: Verdict = Verdict::configuration(
    "Graph refused the request with a status the relay does not know",
    "check graph_endpoint and the app's Graph permissions; the log quotes Graph's answer",
);

/// Classifies an error answer of Graph. `waits` is true when it carried `Retry-After`;
/// `sends` when the request could have sent the message.
pub fn classify_reply(
    stage: Stage,
    status: u16,
    code: &str,
    message: &str,
    waits: bool,
    sends: bool,
) -> Verdict {
    let too_long = status == 413
        || (status == 400
            && message
                .to_ascii_lowercase()
                .contains("maximum request length"));
    match (status, code) {
        _ if too_long => TOO_LARGE,
        (401, _) => TOKEN_REFUSED,
        (_, "NoPermissionsInAccessToken") => NO_ROLES,
        (403, "ErrorAccessDenied") if stage == Stage::Data && !sends => DRAFT_DENIED,
        (403, "ErrorAccessDenied") => ACCESS_DENIED,
        (_, "ErrorSendAsDenied") => SEND_AS_DENIED,
        (_, "MailboxNotEnabledForRESTAPI") => NOT_REST_ENABLED,
        (_, "ErrorInvalidUser") | (404, "ResourceNotFound") => UNKNOWN_USER,
        (_, "ErrorInvalidRecipients") => INVALID_RECIPIENTS,
        (_, "ErrorMessageSizeExceeded") => MESSAGE_TOO_BIG,
        (_, "ErrorQuotaExceeded") => QUOTA_EXCEEDED,
        (_, "ErrorMimeContentInvalidBase64String") => RELAY_BUG,
        (404, "ErrorItemNotFound") => NOT_FOUND_ITEM,
        (429, _) | (503, _) if waits => THROTTLED,
        (429, _) => THROTTLED,
        (504, _) if sends => GATEWAY_TIMEOUT,
        (500..=599, _) => SERVICE_ERROR,
        (400, _) => BAD_REQUEST,
        _ => OTHER_REFUSAL,
    }
}

/// Classifies a connection that gave no answer. After a sending request was written
/// ([`Stage::DataEnd`]) Graph may have carried it out: transient, duplicate possible.
pub fn classify_connection(stage: Stage, failure: ConnectionFailure) -> Verdict {
    match (stage, failure) {
        (_, ConnectionFailure::Tls(TlsFailure::CertificateInvalid)) => Verdict::configuration(
            "the Graph host's certificate is not trusted or does not match its name",
            "check graph_endpoint; behind a TLS-inspecting proxy, name its CA in ca_file",
        ),
        (Stage::DataEnd, _) => Verdict::transient(
            "the connection to Graph was lost after the request was sent; Graph may have sent the message, so a retry can deliver it twice",
            "none needed; check the message trace if a recipient reports a duplicate",
        )
        .possibly_delivered(),
        (_, ConnectionFailure::Dns) => Verdict::transient(
            "the Graph host name could not be resolved",
            "check graph_endpoint and the host's DNS",
        ),
        _ => Verdict::transient(
            "Graph could not be reached",
            "check the network path to graph_endpoint (firewall, proxy)",
        ),
    }
}

#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::verdict::Class;

    /// (status, code, message, Retry-After, sends, stage, class, follow-up, duplicate, fix word)
    type Case = (
        u16,
        &'static str,
        &'static str,
        bool,
        bool,
        Stage,
        Class,
        FollowUp,
        bool,
        &'static str,
    );

    #[test]
    fn every_graph_answer_has_its_class_stage_and_fix() {
        use Class::{Configuration as C, Permanent as P, Transient as T};
        // (status, code, message, Retry-After, sends) → (stage, class, follow-up, duplicate,
        // a word the fix must contain)
        let cases: [Case; 21] = [
            (
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                false,
                true,
                Stage::Auth,
                C,
                FollowUp::RefreshTokenOnce,
                false,
                "scope",
            ),
            (
                403,
                "NoPermissionsInAccessToken",
                "",
                false,
                true,
                Stage::Auth,
                C,
                FollowUp::RefreshTokenOnce,
                false,
                "Grant admin consent",
            ),
            (
                403,
                "ErrorAccessDenied",
                "Access is denied.",
                false,
                true,
                Stage::Auth,
                C,
                FollowUp::RefreshTokenOnce,
                false,
                "New-ManagementRoleAssignment -App",
            ),
            (
                403,
                "ErrorAccessDenied",
                "Access is denied.",
                false,
                true,
                Stage::Auth,
                C,
                FollowUp::RefreshTokenOnce,
                false,
                "Test-ServicePrincipalAuthorization",
            ),
            (
                403,
                "ErrorAccessDenied",
                "Access is denied.",
                false,
                false,
                Stage::Data,
                C,
                FollowUp::None,
                false,
                "Mail.ReadWrite",
            ),
            (
                403,
                "ErrorSendAsDenied",
                "",
                false,
                true,
                Stage::MailFrom,
                P,
                FollowUp::None,
                false,
                "Add-RecipientPermission",
            ),
            (
                404,
                "MailboxNotEnabledForRESTAPI",
                "",
                false,
                true,
                Stage::Auth,
                C,
                FollowUp::None,
                false,
                "licence",
            ),
            (
                404,
                "ErrorInvalidUser",
                "",
                false,
                true,
                Stage::Auth,
                C,
                FollowUp::None,
                false,
                "mailbox",
            ),
            (
                400,
                "ErrorInvalidRecipients",
                "",
                false,
                true,
                Stage::RcptTo,
                P,
                FollowUp::None,
                false,
                "recipient",
            ),
            (
                400,
                "ErrorMessageSizeExceeded",
                "",
                false,
                true,
                Stage::DataEnd,
                P,
                FollowUp::None,
                false,
                "MaxSendSize",
            ),
            (
                413,
                "RequestEntityTooLarge",
                "",
                false,
                true,
                Stage::DataEnd,
                C,
                FollowUp::None,
                false,
                "smtp",
            ),
            (
                400,
                "BadRequest",
                "The maximum request length supported is 4MB.",
                false,
                true,
                Stage::DataEnd,
                C,
                FollowUp::None,
                false,
                "smtp",
            ),
            (
                429,
                "TooManyRequests",
                "",
                true,
                true,
                Stage::DataEnd,
                T,
                FollowUp::None,
                false,
                "max_connections",
            ),
            (
                503,
                "ServiceUnavailable",
                "",
                true,
                true,
                Stage::DataEnd,
                T,
                FollowUp::None,
                false,
                "max_connections",
            ),
            (
                503,
                "ServiceUnavailable",
                "",
                false,
                true,
                Stage::DataEnd,
                T,
                FollowUp::None,
                false,
                "service health",
            ),
            (
                504,
                "GatewayTimeout",
                "",
                false,
                true,
                Stage::DataEnd,
                T,
                FollowUp::None,
                true,
                "message trace",
            ),
            (
                504,
                "GatewayTimeout",
                "",
                false,
                false,
                Stage::Data,
                T,
                FollowUp::None,
                false,
                "service health",
            ),
            (
                404,
                "ErrorItemNotFound",
                "",
                false,
                false,
                Stage::Data,
                T,
                FollowUp::None,
                false,
                "draft",
            ),
            (
                400,
                "ErrorMimeContentInvalidBase64String",
                "",
                false,
                true,
                Stage::DataEnd,
                T,
                FollowUp::EscalateAfterOneHour,
                false,
                "maintainers",
            ),
            (
                400,
                "Unknown",
                "",
                false,
                true,
                Stage::DataEnd,
                P,
                FollowUp::None,
                false,
                "error code",
            ),
            (
                418,
                "",
                "",
                false,
                true,
                Stage::DataEnd,
                C,
                FollowUp::None,
                false,
                "graph_endpoint",
            ),
        ];
        for (status, code, message, waits, sends, stage, class, follow_up, duplicate, fix) in cases
        {
            assert_eq!(stage_for(status, code, sends), stage, "{status} {code}");
            let verdict = classify_reply(stage, status, code, message, waits, sends);
            assert_eq!(verdict.class, class, "{status} {code}");
            assert_eq!(verdict.follow_up, follow_up, "{status} {code}");
            assert_eq!(verdict.duplicate_possible, duplicate, "{status} {code}");
            assert!(
                verdict.fix.contains(fix),
                "{status} {code}: {}",
                verdict.fix
            );
        }
    }

    #[test]
    fn a_lost_connection_is_uncertain_only_after_a_sending_request() {
        let cases = [
            (
                Stage::Connect,
                ConnectionFailure::Refused,
                Class::Transient,
                false,
            ),
            (
                Stage::Tls,
                ConnectionFailure::Tls(TlsFailure::CertificateInvalid),
                Class::Configuration,
                false,
            ),
            (
                Stage::Data,
                ConnectionFailure::Reset,
                Class::Transient,
                false,
            ),
            (
                Stage::DataEnd,
                ConnectionFailure::Closed,
                Class::Transient,
                true,
            ),
            (
                Stage::DataEnd,
                ConnectionFailure::Timeout,
                Class::Transient,
                true,
            ),
        ];
        for (stage, failure, class, duplicate) in cases {
            let verdict = classify_connection(stage, failure);
            assert_eq!(verdict.class, class, "{stage} {failure:?}");
            assert_eq!(verdict.duplicate_possible, duplicate, "{stage} {failure:?}");
        }
    }

    #[test]
    fn the_local_stops_have_their_classes() {
        let too_large = GraphFailure {
            stage: Stage::Data,
            kind: GraphFailureKind::TooLarge { bytes: 5_000_000 },
        };
        assert_eq!(too_large.verdict().class, Class::Configuration);
        assert!(too_large.verdict().reason.contains("4 MB"));
        let waiting = GraphFailure {
            stage: Stage::DataEnd,
            kind: GraphFailureKind::Waiting { not_before: 42 },
        };
        assert_eq!(waiting.verdict().class, Class::Transient);
        assert_eq!(waiting.not_before(), Some(42));
    }
}
