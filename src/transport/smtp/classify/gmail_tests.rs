//! Table tests for Gmail's catalogue: every reply class of google-workspace.md §7 with its
//! literal text, the fallbacks, and that Exchange's table is untouched by it.

use super::*;
use Class::{Configuration as C, Permanent as P, Transient as T};
use Stage::*;

/// (stage, code, text after the code, class, follow-up, a piece of the reason or fix).
#[rustfmt::skip]
const CASES: &[(Stage, u16, &str, Class, FollowUp, &str)] = &[
    (Auth, 535, "5.7.8 Username and Password not accepted. For more information, go to 5.7.8 https://support.google.com/mail/?p=BadCredentials a1-20020a17 - gsmtp", C, FollowUp::RefreshTokenOnce, "Domain-wide delegation"),
    (Auth, 535, "5.7.1 Username and Password not accepted. Learn more at 5.7.1 https://support.google.com/mail/?p=BadCredentials", C, FollowUp::RefreshTokenOnce, "https://mail.google.com/"),
    (Auth, 534, "5.7.9 Application-specific password required.", C, FollowUp::None, "smtp.gmail.com:587"),
    (Auth, 534, "5.7.14 Please log in via your web browser and then try again.", C, FollowUp::None, "password login"),
    (Auth, 454, "4.7.0 Cannot authenticate due to temporary system problem. Try again later. x - gsmtp", T, FollowUp::None, "temporary system problem"),
    (Auth, 454, "4.7.0 Too many login attempts, please try again later. x - gsmtp", T, FollowUp::None, "max_connections"),
    (Greeting, 421, "4.7.0 Try again later, closing connection. x - gsmtp", T, FollowUp::Reconnect, "closing"),
    (DataEnd, 421, "4.7.0 Try again later, closing connection. x - gsmtp", T, FollowUp::Reconnect, "closing"),
    (MailFrom, 421, "4.3.0 Temporary System Problem.  Try again later (10). x - gsmtp", T, FollowUp::Reconnect, "closing"),
    (Greeting, 421, "4.4.5 Server busy, try again later. x - gsmtp", T, FollowUp::Reconnect, "closing"),
    (RcptTo, 421, "4.7.0 TLS required for RCPT domain, closing connection. x - gsmtp", C, FollowUp::None, "starttls"),
    (MailFrom, 421, "4.7.0 [1.2.3.4] Our system has detected an unusual rate of unsolicited mail originating from your IP address. x - gsmtp", T, FollowUp::EscalateAfterOneHour, "unsolicited"),
    (RcptTo, 450, "4.2.1 The user you are trying to contact is receiving mail too quickly. x - gsmtp", T, FollowUp::None, "too quickly"),
    (DataEnd, 451, "4.3.0 Mail server temporarily rejected message. x - gsmtp", T, FollowUp::None, "deferred"),
    (DataEnd, 451, "4.4.2 Timeout - closing connection. x - gsmtp", T, FollowUp::None, "deferred"),
    (DataEnd, 451, "4.5.0 SMTP protocol violation, see RFC 2821 x - gsmtp", C, FollowUp::None, "relay bug"),
    (RcptTo, 452, "4.2.2 The email account that you tried to reach is over quota. x - gsmtp", T, FollowUp::None, "over quota"),
    (RcptTo, 452, "4.5.3 Your message has too many recipients. For more information regarding Google's sending limits, go to https://support.google.com/mail/?p=TooManyRecipientsError x - gsmtp", T, FollowUp::SplitRecipients, "100"),
    (StartTls, 454, "4.5.0 SMTP protocol violation, no commands allowed to pipeline after STARTTLS, x - gsmtp", C, FollowUp::None, "relay bug"),
    (Auth, 530, "5.7.0 Must issue a STARTTLS command first. x - gsmtp", C, FollowUp::None, "smtp_tls"),
    (MailFrom, 530, "5.7.0 Authentication Required. For more information, go to 5.7.0  https://support.google.com/mail/?p=WantAuthError x - gsmtp", C, FollowUp::None, "Authentication Required"),
    (MailFrom, 550, "5.4.5 Daily user sending limit exceeded. For more information on Gmail 5.4.5 sending limits go to 5.4.5  https://support.google.com/a/answer/166852 ?p=DailyLimitExceeded x - gsmtp", T, FollowUp::LongBackoff, "nothing is bounced"),
    (DataEnd, 550, "5.4.5 Daily user sending quota exceeded. x - gsmtp", T, FollowUp::LongBackoff, "pauses"),
    (DataEnd, 552, "5.7.0 This message was blocked because its content presents a potential 5.7.0 security issue. Please visit 5.7.0  https://support.google.com/mail/?p=BlockedMessage to review our 5.7.0 message content and attachment content guidelines. x - gsmtp", P, FollowUp::None, "attachment"),
    (DataEnd, 552, "5.3.4 Your message exceeded Google's message size limits. For more information, visit https://support.google.com/mail/?p=MaxSizeError x - gsmtp", P, FollowUp::None, "25 MB"),
    (DataEnd, 550, "5.7.1 This message violates example.com email policy. - gcdp x - gsmtp", P, FollowUp::None, "Compliance"),
    (DataEnd, 550, "5.7.1 [1.2.3.4] Our system has detected that this message is likely unsolicited mail. x - gsmtp", P, FollowUp::None, "by policy"),
    (RcptTo, 550, "5.7.1 Relaying denied. x - gsmtp", P, FollowUp::None, "relaying denied"),
    // Fallbacks.
    (Ehlo, 501, "5.5.4 HELO/EHLO argument invalid x - gsmtp", C, FollowUp::None, "smtp.gmail.com:587"),
    (MailFrom, 553, "5.1.7 The sender address <x> is not a valid RFC-5321 address. x - gsmtp", P, FollowUp::None, "send-as"),
    (RcptTo, 550, "5.1.1 The email account that you tried to reach does not exist. x - gsmtp", P, FollowUp::None, "recipient"),
    (DataEnd, 554, "5.6.0 Message exceeded 50 hops x - gsmtp", P, FollowUp::None, "refused the message"),
    (Rset, 502, "5.5.1 Unrecognized command. x - gsmtp", T, FollowUp::Reconnect, "out of step"),
];

#[test]
fn every_gmail_reply_class_has_its_verdict_and_fix() {
    for (stage, code, text, class, follow_up, piece) in CASES {
        let verdict = classify_reply_for(Provider::Google, *stage, *code, text);
        assert_eq!(verdict.class, *class, "{code} {text}");
        assert_eq!(verdict.follow_up, *follow_up, "{code} {text}");
        let line = verdict.operator_line().to_ascii_lowercase();
        assert!(
            line.contains(&piece.to_ascii_lowercase()),
            "{code} {text}: {line}"
        );
        assert!(
            !line.contains("office365") && !line.contains("exchange"),
            "{line}"
        );
    }
}

#[test]
fn gmail_failures_are_stamped_by_the_transport_and_exchange_keeps_its_table() {
    let reply = |provider| SmtpFailure {
        stage: Stage::MailFrom,
        kind: SmtpFailureKind::Reply {
            code: 550,
            text: "5.4.5 Daily user sending limit exceeded.".to_owned(),
        },
        provider,
    };
    assert_eq!(
        reply(Provider::Google).verdict().follow_up,
        FollowUp::LongBackoff
    );
    // Under Exchange's catalogue, an unknown 550 at MAIL refuses the sender (permanent).
    assert_eq!(reply(Provider::Microsoft).verdict().class, Class::Permanent);
    let exchange = classify_reply(Stage::Auth, 535, "5.7.3 Authentication unsuccessful");
    assert!(exchange.fix.contains("SMTP.SendAsApp"), "{}", exchange.fix);
    let gmail = classify_reply_for(
        Provider::Google,
        Stage::Auth,
        535,
        "5.7.3 Authentication unsuccessful",
    );
    assert!(
        gmail.fix.contains("Domain-wide delegation"),
        "{}",
        gmail.fix
    );
}

#[test]
fn broken_connections_and_local_stops_name_gmails_server() {
    use crate::vocab::verdict::TlsFailure;
    let failure = |stage, kind| SmtpFailure {
        stage,
        kind,
        provider: Provider::Google,
    };
    let connection = |failure: ConnectionFailure| SmtpFailureKind::Connection {
        failure,
        detail: String::new(),
    };
    for kind in [
        ConnectionFailure::Refused,
        ConnectionFailure::NotSmtp,
        ConnectionFailure::Tls(TlsFailure::CertificateInvalid),
        ConnectionFailure::Tls(TlsFailure::HandshakeFailed),
    ] {
        let verdict = failure(Stage::Connect, connection(kind)).verdict();
        assert!(
            verdict.fix.contains("smtp.gmail.com"),
            "{kind:?}: {}",
            verdict.fix
        );
        assert_eq!(verdict.follow_up, FollowUp::Reconnect);
    }
    let lost = failure(Stage::DataEnd, connection(ConnectionFailure::Reset)).verdict();
    assert!(lost.duplicate_possible);
    let local = failure(Stage::Auth, SmtpFailureKind::Local("no XOAUTH2".into())).verdict();
    assert_eq!(local.class, Class::Configuration);
    assert!(local.fix.contains("smtp.gmail.com:587"), "{}", local.fix);
}
