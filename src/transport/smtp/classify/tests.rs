//! Table tests for the classifier: every row of `exchange-online.md` §5 with its literal text,
//! the fallbacks, transport failures and the enhanced-code parser.

use super::*;
use Class::{Configuration as C, Permanent as P, Transient as T};
use Stage::*;

/// (stage, reply code, reply text after the code, expected class). Texts are the doc's literals.
#[rustfmt::skip]
const CASES: &[(Stage, u16, &str, Class)] = &[
    // §5 catalogue, in the doc's order.
    (Auth, 535, "5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]", C),
    (Auth, 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.", C),
    (Auth, 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.", C),
    (Auth, 535, "5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator.", C),
    (Auth, 535, "5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy", C),
    (Auth, 535, "5.7.139 Authentication unsuccessful, basic authentication is disabled.", C),
    (Auth, 550, "5.7.30 Basic authentication is not supported for Client Submission.", C),
    (Auth, 535, "5.7.139 Authentication unsuccessful, the user credentials were incorrect.", C),
    (Auth, 501, "5.5.124 Invalid XOAUTH2 auth data", P),
    (Auth, 504, "5.7.4 Unrecognized authentication type", P),
    (MailFrom, 530, "5.7.57 Client not authenticated to send mail. [SN4PR0201CA0059.namprd02.prod.outlook.com]", C),
    (MailFrom, 530, "5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM", C),
    (MailFrom, 451, "5.7.3 STARTTLS is required to send mail", C),
    (Tls, 421, "4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls", C),
    (Ehlo, 421, "4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls", C),
    (DataEnd, 550, "5.7.60 SMTP; Client does not have permissions to send as this sender", P),
    (DataEnd, 554, "5.2.252 SendAsDenied; relay@contoso.com not allowed to send as boss@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]", P),
    (DataEnd, 554, "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", P),
    (DataEnd, 430, "4.2.0 STOREDRV; mailbox logon failure; STOREDRV.Submission.Exception:ConnectionFailedTransientException.MapiExceptionLogonFailed; Cannot open mailbox", T),
    (DataEnd, 432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", T),
    (DataEnd, 432, "4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname=BN8PR12MB3345.namprd12.prod.outlook.com]", T),
    (DataEnd, 554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", T),
    (DataEnd, 550, "5.1.90 Your message can't be sent because you've reached your daily limit for message recipients", T),
    (DataEnd, 554, "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", C),
    (DataEnd, 554, "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionQuotaExceeded", C),
    (MailFrom, 550, "5.1.8 Access denied, bad outbound sender", C),
    (DataEnd, 550, "5.1.8 Access denied, bad outbound sender", C),
    (MailFrom, 550, "5.7.705 Access denied, tenant has exceeded threshold", P),
    (MailFrom, 550, "5.7.708 Access denied, traffic not accepted from this IP", P),
    (MailFrom, 550, "5.7.750 Client blocked from sending from unregistered domain", P),
    (RcptTo, 550, "5.7.233 Tenant exceeded its daily external recipient limit", T),
    (RcptTo, 550, "5.7.232 Trial tenant exceeded its external recipient limit", P),
    (DataEnd, 451, "4.7.0 Temporary server error. Please try again later. PRX4 [BN6PR1101CA0014.namprd11.prod.outlook.com]", T),
    (MailFrom, 451, "4.7.0 Temporary server error. Please try again later. PRX2", T),
    (DataEnd, 451, "4.3.111 Temporary server error. Please try again later MRH1 [Hostname=AM6PR10MB2278.EURPRD10.PROD.OUTLOOK.COM]", T),
    (RcptTo, 421, "4.3.2 Service not active [AM0PR10CA0001.EURPRD10.PROD.OUTLOOK.COM]", T),
    (Greeting, 421, "4.3.2 Service not available, closing transmission channel", T),
    (DataEnd, 451, "4.4.3 Connection dropped", T),
    (DataEnd, 451, "4.4.2 Connection dropped", T),
    (RcptTo, 452, "4.5.3 Too many recipients", T),
    (DataEnd, 552, "5.3.4 Message size exceeds fixed maximum message size", P),
    (DataEnd, 554, "5.6.211 Invalid MIME Content: Single text value size (40000) exceeded allowed maximum (32768) for the 'Subject' header", P),
    (Ehlo, 500, "5.3.3 Unrecognized command 'GARBAGE'", T),
    (DataEnd, 550, "5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds, which cannot be sent via DATA", P),
    (RcptTo, 550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", P),
    // Text without (or with an unfamiliar) enhanced code: substring rules.
    (Auth, 535, "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", C),
    (DataEnd, 554, "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", P),
    (DataEnd, 554, "5.2.0 stordrv: submissionquotaexceededexception (lowercased)", T),
    (DataEnd, 451, "Temporary server error. Please try again later. PRX5", T),
    (DataEnd, 451, "Temporary server error MRH2", T),
    (DataEnd, 550, "SMTPSEND.BareLinefeedsAreIllegal", P),
    // Fallbacks.
    (Auth, 535, "Authentication unsuccessful", C),
    (Auth, 535, "5.7.8 Username and Password not accepted", C),
    (MailFrom, 550, "5.1.0 Sender denied", P),
    (RcptTo, 550, "5.4.1 Recipient address rejected: Access denied", P),
    (RcptTo, 554, "5.2.2 mailbox full", P),
    (Data, 554, "5.0.0 Transaction failed", P),
    (DataEnd, 550, "5.7.1 Message rejected as spam", P),
    (RcptTo, 450, "4.2.1 Try again later", T),
    (DataEnd, 451, "4.0.0 Something odd", T),
    (DataEnd, 452, "4.3.1 Insufficient system resources", T),
    (MailFrom, 421, "4.4.5 Server busy", T),
    (Greeting, 554, "5.3.2 No SMTP service here", T),
    (Connect, 554, "", T),
    (Ehlo, 501, "5.5.4 Invalid domain name", C),
    (StartTls, 502, "5.5.1 Command not implemented", C),
    (Auth, 504, "Unrecognized authentication type", P),
    (Rset, 503, "5.5.1 Bad sequence of commands", T),
    (Quit, 500, "", T),
    (Auth, 334, "eyJzdGF0dXMiOiI0MDEifQ==", T),
    (DataEnd, 250, "2.0.0 OK", T),
    (DataEnd, 999, "nonsense", T),
    (DataEnd, 0, "", T),
    // A 4xx is never a failure, even with a permanent-looking enhanced code or text.
    (DataEnd, 451, "5.7.60 SMTP; Client does not have permissions to send as this sender", T),
    (DataEnd, 450, "SendAsDenied", T),
];

#[test]
fn catalogue_rows_have_their_documented_class() {
    for &(stage, code, text, expected) in CASES {
        let verdict = classify_reply(stage, code, text);
        assert_eq!(verdict.class, expected, "{stage} {code} {text}");
        assert!(!verdict.reason.is_empty(), "{stage} {code} {text}");
        assert!(!verdict.reason.ends_with('.'), "{stage} {code} {text}");
        assert!(!verdict.fix.ends_with('.'), "{stage} {code} {text}");
    }
}

#[test]
fn configuration_and_catalogue_permanent_verdicts_carry_a_fix() {
    for &(stage, code, text, _) in CASES {
        let verdict = classify_reply(stage, code, text);
        let from_catalogue = RULES
            .iter()
            .any(|rule| rule_matches(rule, stage, code, enhanced_code(text), text));
        let needs_fix = verdict.class == Class::Configuration
            || (verdict.class == Class::Permanent && from_catalogue);
        if needs_fix {
            assert!(!verdict.fix.is_empty(), "no fix for {stage} {code} {text}");
        }
    }
}

/// (stage, code, text, text the fix must contain).
#[rustfmt::skip]
const FIXES: &[(Stage, u16, &str, &str)] = &[
    (Auth, 535, "5.7.3 Authentication unsuccessful [x]", "SMTP.SendAsApp"),
    (Auth, 535, "5.7.3 Authentication unsuccessful [x]", "New-ServicePrincipal -AppId <client_id> -ObjectId <Enterprise-application object id>"),
    (Auth, 535, "5.7.3 Authentication unsuccessful [x]", "Add-MailboxPermission -Identity <mailbox>"),
    (Auth, 535, "5.7.3 Authentication unsuccessful [x]", "https://outlook.office365.com/.default"),
    (Auth, 535, "5.7.3 Authentication unsuccessful [x]", "propagate"),
    (Auth, 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"),
    (Auth, 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"),
    (Auth, 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.", "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"),
    (Auth, 535, "5.7.139 Authentication unsuccessful, basic authentication is disabled.", "relay bug"),
    (DataEnd, 550, "5.7.60 SMTP; Client does not have permissions to send as this sender", "Add-RecipientPermission -Identity <sender> -Trustee <mailbox> -AccessRights SendAs"),
    (DataEnd, 554, "5.2.252 SendAsDenied; a not allowed to send as b", "Add-RecipientPermission -Identity <sender> -Trustee <mailbox> -AccessRights SendAs"),
    (DataEnd, 554, "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", "Add-RecipientPermission"),
    (DataEnd, 432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "≤3"),
    (DataEnd, 430, "4.2.0 STOREDRV; mailbox logon failure; Cannot open mailbox", "FullAccess"),
    (DataEnd, 554, "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", "Sent Items"),
    (DataEnd, 552, "5.3.4 Message size exceeds fixed maximum message size", "MaxSendSize"),
    (MailFrom, 451, "5.7.3 STARTTLS is required to send mail", "smtp_tls"),
];

#[test]
fn fixes_name_the_admin_action() {
    for &(stage, code, text, needle) in FIXES {
        let verdict = classify_reply(stage, code, text);
        assert!(
            verdict.fix.contains(needle),
            "{code} {text}: {}",
            verdict.fix
        );
    }
}

/// (stage, code, text, follow-up, duplicate possible).
#[rustfmt::skip]
const FOLLOW_UPS: &[(Stage, u16, &str, FollowUp, bool)] = &[
    (Auth, 535, "5.7.3 Authentication unsuccessful", FollowUp::RefreshTokenOnce, false),
    (DataEnd, 430, "4.2.0 STOREDRV; mailbox logon failure", FollowUp::EscalateAfterOneHour, false),
    (DataEnd, 432, "4.3.2 Concurrent connections limit exceeded.", FollowUp::ReduceConcurrency, false),
    (DataEnd, 554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", FollowUp::LongBackoff, false),
    (DataEnd, 550, "5.1.90 Your message can't be sent", FollowUp::LongBackoff, false),
    (RcptTo, 550, "5.7.233 Tenant limit", FollowUp::LongBackoff, false),
    (RcptTo, 452, "4.5.3 Too many recipients", FollowUp::SplitRecipients, false),
    (DataEnd, 451, "4.4.3 Connection dropped", FollowUp::Reconnect, true),
    (DataEnd, 451, "4.4.2 Connection dropped", FollowUp::Reconnect, true),
    (Data, 451, "4.4.2 Connection dropped", FollowUp::Reconnect, false),
    (MailFrom, 421, "4.3.2 Service not active", FollowUp::Reconnect, false),
    (DataEnd, 421, "4.4.5 closing", FollowUp::Reconnect, false),
    (Ehlo, 500, "5.3.3 Unrecognized command", FollowUp::Reconnect, false),
    (DataEnd, 451, "4.3.111 Temporary server error MRH1", FollowUp::None, false),
    (DataEnd, 550, "5.7.60 SMTP; Client does not have permissions", FollowUp::None, false),
];

#[test]
fn follow_ups_and_duplicates() {
    for &(stage, code, text, follow_up, duplicate) in FOLLOW_UPS {
        let verdict = classify_reply(stage, code, text);
        assert_eq!(verdict.follow_up, follow_up, "{stage} {code} {text}");
        assert_eq!(
            verdict.duplicate_possible, duplicate,
            "{stage} {code} {text}"
        );
    }
}

#[test]
fn connection_failures() {
    use ConnectionFailure::{Closed, Dns, NotSmtp, Refused, Reset, Timeout};
    use TlsFailure::{CertificateInvalid, HandshakeFailed, ProtocolVersion};
    let tls = ConnectionFailure::Tls;
    let cases: &[(Stage, ConnectionFailure, Class, bool)] = &[
        (Connect, Refused, T, false),
        (Connect, Timeout, T, false),
        (Connect, Dns, T, false),
        (Greeting, Closed, T, false),
        (Data, Reset, T, false),
        (Data, Timeout, T, false),
        (RcptTo, Closed, T, false),
        (MailFrom, NotSmtp, T, false),
        (DataEnd, Reset, T, true),
        (DataEnd, Closed, T, true),
        (DataEnd, Timeout, T, true),
        (DataEnd, tls(HandshakeFailed), T, true),
        (Tls, tls(CertificateInvalid), C, false),
        (Tls, tls(ProtocolVersion), C, false),
        (Tls, tls(HandshakeFailed), T, false),
    ];
    for &(stage, kind, class, duplicate) in cases {
        let verdict = classify_connection(stage, kind);
        assert_eq!(verdict.class, class, "{stage} {kind:?}");
        assert_eq!(verdict.duplicate_possible, duplicate, "{stage} {kind:?}");
        assert_eq!(verdict.follow_up, FollowUp::Reconnect, "{stage} {kind:?}");
        if class == C {
            assert!(!verdict.fix.is_empty(), "{stage} {kind:?}");
        }
    }
    let certificate = classify_connection(Tls, tls(CertificateInvalid));
    assert!(certificate.fix.contains("ca_file") && certificate.fix.contains("smtp_server"));
}

#[test]
fn enhanced_code_edge_cases() {
    let code = |class, subject, detail| {
        Some(EnhancedStatus {
            class,
            subject,
            detail,
        })
    };
    let cases: &[(&str, Option<EnhancedStatus>)] = &[
        ("", None),
        ("Authentication unsuccessful", None),
        ("5.7.139", code(5, 7, 139)),
        ("5.7.139 Authentication unsuccessful", code(5, 7, 139)),
        ("4.3.2", code(4, 3, 2)),
        ("   4.3.2 Service not active", code(4, 3, 2)),
        ("\t2.0.0 OK", code(2, 0, 0)),
        ("5.7.60 SMTP; Client", code(5, 7, 60)),
        ("5.7.3;", code(5, 7, 3)),
        ("5.x.1", None),
        ("5.7", None),
        ("5.7.", None),
        ("5..1", None),
        ("5.7.3.1", None),
        ("5.7.1391", None),
        ("5.1000.1", None),
        ("3.1.1 wrong class", None),
        ("55.1.1", None),
        ("5.7.3abc", None),
        ("x5.7.3", None),
        ("535 5.7.3", None),
        ("٥.٧.٣", None),
    ];
    for &(text, expected) in cases {
        assert_eq!(enhanced_code(text), expected, "{text:?}");
    }
    assert_eq!(code(5, 7, 139).unwrap().to_string(), "5.7.139");
}

#[test]
fn names_in_logs_and_spool_agree() {
    let stages = [
        (Connect, "connect"),
        (Greeting, "greeting"),
        (Ehlo, "ehlo"),
        (StartTls, "starttls"),
        (Tls, "tls"),
        (Auth, "auth"),
        (MailFrom, "mail"),
        (RcptTo, "rcpt"),
        (Data, "data"),
        (DataEnd, "data-end"),
        (Rset, "rset"),
        (Quit, "quit"),
    ];
    for (stage, name) in stages {
        assert_eq!(stage.to_string(), name);
        assert_eq!(
            serde_json::to_string(&stage).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<Stage>(&format!("\"{name}\"")).unwrap(),
            stage
        );
    }
    for (class, name) in [(T, "transient"), (C, "configuration"), (P, "permanent")] {
        assert_eq!(class.to_string(), name);
        assert_eq!(
            serde_json::to_string(&class).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<Class>(&format!("\"{name}\"")).unwrap(),
            class
        );
    }
}

#[test]
fn operator_lines() {
    let verdict = classify_reply(
        Auth,
        535,
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
    );
    assert_eq!(
        verdict.operator_line(),
        "configuration: SMTP AUTH is explicitly disabled for this mailbox. Fix: Set-CASMailbox \
         -Identity <mailbox> -SmtpClientAuthenticationDisabled $false (or $null to follow the \
         tenant setting); allow up to about 1 h to take effect"
    );
    let no_fix = classify_reply(RcptTo, 450, "4.2.1 later");
    assert_eq!(
        no_fix.operator_line(),
        "transient: Exchange deferred the request (4xx)"
    );

    let line = verdict.reply_operator_line(Auth, 535, "5.7.139 Authentication\r\nunsuccessful");
    assert!(
        line.starts_with("configuration at auth: Exchange replied \"535 5.7.139 Authentication unsuccessful\": SMTP AUTH"),
        "{line}"
    );
    let long = verdict.reply_operator_line(Auth, 535, &"x".repeat(10_000));
    assert!(long.len() < 1000 && long.contains('…'), "{long}");

    let after_dot = classify_connection(DataEnd, ConnectionFailure::Reset).operator_line();
    assert!(after_dot.contains("deliver it twice"), "{after_dot}");
}

proptest::proptest! {
    #[test]
    fn never_panics_and_never_fails_a_4xx(stage_index in 0usize..12, code in 0u16..1000, text in "(?s).{0,300}") {
        let stages = [Connect, Greeting, Ehlo, StartTls, Tls, Auth, MailFrom, RcptTo, Data, DataEnd, Rset, Quit];
        let stage = stages[stage_index];
        let verdict = classify_reply(stage, code, &text);
        if (400..500).contains(&code) {
            proptest::prop_assert_ne!(verdict.class, Class::Permanent);
        }
        if !(500..600).contains(&code) {
            proptest::prop_assert_ne!(verdict.class, Class::Permanent);
        }
        let _ = enhanced_code(&text);
        let line = verdict.reply_operator_line(stage, code, &text);
        proptest::prop_assert!(!line.chars().any(char::is_control));
    }
}
