//! Table tests for the session state machine: command sequences in, reply codes out.

use super::*;
use crate::policy::{Principal, SenderPattern};
use crate::vocab::tls_mode::TlsMode;
use base64::Engine;

fn settings(tls_mode: TlsMode, allow_auth_without_tls: bool) -> Arc<SessionSettings> {
    Arc::new(SessionSettings {
        hostname: "relay.test".into(),
        tls_mode,
        allow_auth_without_tls,
        max_message_size: 1000,
        max_recipients: 3,
        max_errors: 10,
        max_auth_failures: 3,
        disk_reserve: Arc::new(crate::spool::DiskReserve::new("/never-sampled")),
    })
}

fn grant(principal: Principal) -> Arc<Grant> {
    Arc::new(Grant {
        principal,
        account: "m365".into(),
        account_mailbox: crate::vocab::address::Address::parse("relay@contoso.com").unwrap(),
        allowed_senders: vec![SenderPattern::parse("*@contoso.com").unwrap()],
        sender_rewrite: crate::policy::SenderRewrite::Never,
        sender_name: None,
        routes: vec![],
    })
}

fn peer() -> SocketAddr {
    "192.0.2.10:40000".parse().unwrap()
}

fn network_session() -> Session {
    let net = grant(Principal::Network("192.0.2.0/24".parse().unwrap()));
    Session::new(settings(TlsMode::None, false), peer(), Some(net), false)
}

fn anonymous_session(tls_mode: TlsMode, allow: bool) -> Session {
    Session::new(settings(tls_mode, allow), peer(), None, false)
}

/// Feed lines; return the reply codes (0 when there was no reply).
fn codes(session: &mut Session, lines: &[&str]) -> Vec<u16> {
    lines
        .iter()
        .map(|line| {
            session
                .handle_line(line.as_bytes())
                .reply
                .map_or(0, |r| r.code())
        })
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn trusted_network_full_transaction() {
    let mut session = network_session();
    assert_eq!(
        codes(
            &mut session,
            &[
                "EHLO printer",
                "MAIL FROM:<scan@contoso.com>",
                "RCPT TO:<a@x.example>"
            ]
        ),
        vec![250, 250, 250]
    );
    let step = session.handle_line(b"DATA");
    assert_eq!(step.reply.unwrap().code(), 354);
    let Action::ReceiveData(request) = step.action else {
        panic!("expected ReceiveData")
    };
    assert_eq!(request.account, "m365");
    assert_eq!(request.protocol, "ESMTP");
    assert_eq!(request.recipients.len(), 1);
    let done = session.data_finished(DataOutcome::Queued("ABC".into()));
    let reply = done.reply.unwrap();
    assert_eq!(reply.to_bytes(), b"250 2.0.0 Ok: queued as ABC\r\n");
    // The transaction is over: a new one can start.
    assert_eq!(
        codes(&mut session, &["MAIL FROM:<scan@contoso.com>"]),
        vec![250]
    );
}

#[test]
fn untrusted_client_cannot_send_anywhere() {
    let mut session = anonymous_session(TlsMode::None, false);
    assert_eq!(
        codes(
            &mut session,
            &[
                "EHLO x",
                "MAIL FROM:<a@contoso.com>",
                "RCPT TO:<b@x.example>",
                "DATA"
            ]
        ),
        vec![250, 530, 503, 503]
    );
}

#[test]
fn policy_refusals_are_reported_for_the_log_and_protocol_errors_are_not() {
    let mut anonymous = anonymous_session(TlsMode::None, false);
    anonymous.handle_line(b"EHLO x");
    let refusal = anonymous
        .handle_line(b"MAIL FROM:<a@contoso.com>")
        .refusal
        .expect("530 is reported");
    assert_eq!(refusal.reason, "not authenticated");
    assert!(refusal.detail.contains("<a@contoso.com>"), "{refusal:?}");

    let mut trusted = network_session();
    let refusal = trusted
        .handle_line(b"MAIL FROM:<ceo@fabrikam.example>")
        .refusal
        .expect("550 5.7.1 is reported");
    assert_eq!(refusal.reason, "sender not allowed");
    assert!(
        refusal.detail.contains("<ceo@fabrikam.example>")
            && refusal.detail.contains("192.0.2.0/24")
            && refusal.detail.contains("m365"),
        "names the sender, the network and the account: {refusal:?}"
    );
    for line in [
        "MAIL FROM:<scan@contoso.com>",
        "MAIL FROM:<x@contoso.com>",
        "BDAT 1",
        "RCPT",
    ] {
        assert_eq!(trusted.handle_line(line.as_bytes()).refusal, None, "{line}");
    }
}

#[test]
fn sender_outside_the_grant_is_refused() {
    let mut session = network_session();
    let step = session.handle_line(b"MAIL FROM:<ceo@fabrikam.example>");
    let reply = step.reply.unwrap();
    assert_eq!(reply.code(), 550);
    assert!(reply.text().starts_with("5.7.1 "));
    // The null sender (bounces from a trusted mail server) is accepted.
    assert_eq!(codes(&mut session, &["MAIL FROM:<>"]), vec![250]);
}

#[test]
fn auth_is_not_offered_or_accepted_in_clear_by_default() {
    let mut session = anonymous_session(TlsMode::Starttls, false);
    let ehlo = session.handle_line(b"EHLO x").reply.unwrap().text();
    assert!(ehlo.contains("STARTTLS"));
    assert!(!ehlo.contains("AUTH"));
    assert_eq!(codes(&mut session, &["AUTH PLAIN"]), vec![538]);
    assert_eq!(codes(&mut session, &["STARTTLS"]), vec![220]);
    session.tls_established();
    let ehlo = session.handle_line(b"EHLO x").reply.unwrap().text();
    assert!(!ehlo.contains("STARTTLS"));
    assert!(ehlo.contains("AUTH PLAIN LOGIN"));
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let mut session = anonymous_session(TlsMode::None, true);
    let response = b64(b"\0printer\0pw");
    let step = session.handle_line(format!("AUTH PLAIN {response}").as_bytes());
    let Action::VerifyPassword { username, password } = step.action else {
        panic!("expected VerifyPassword")
    };
    assert_eq!((username.as_str(), password.expose()), ("printer", "pw"));
    let ok = session.auth_finished(Some(grant(Principal::User("printer".into()))));
    assert_eq!(
        ok.reply.unwrap().to_bytes(),
        b"235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(codes(&mut session, &["AUTH PLAIN"]), vec![503]);

    let mut session = anonymous_session(TlsMode::None, true);
    assert_eq!(codes(&mut session, &["AUTH PLAIN"]), vec![334]);
    assert!(session.expects_auth_response());
    let step = session.handle_line(response.as_bytes());
    assert!(matches!(step.action, Action::VerifyPassword { .. }));
}

#[test]
fn auth_login_with_prompts_and_with_username_as_initial_response() {
    let mut session = anonymous_session(TlsMode::None, true);
    let step = session.handle_line(b"AUTH LOGIN");
    assert_eq!(step.reply.unwrap().to_bytes(), b"334 VXNlcm5hbWU6\r\n");
    let step = session.handle_line(b64(b"printer").as_bytes());
    assert_eq!(step.reply.unwrap().to_bytes(), b"334 UGFzc3dvcmQ6\r\n");
    let step = session.handle_line(b64(b"pw").as_bytes());
    assert!(
        matches!(step.action, Action::VerifyPassword { ref username, .. } if username == "printer")
    );

    let mut session = anonymous_session(TlsMode::None, true);
    let step = session.handle_line(format!("AUTH LOGIN {}", b64(b"printer")).as_bytes());
    assert_eq!(step.reply.unwrap().to_bytes(), b"334 UGFzc3dvcmQ6\r\n");
}

#[test]
fn auth_failures_and_cancel() {
    let mut session = anonymous_session(TlsMode::None, true);
    assert_eq!(codes(&mut session, &["AUTH LOGIN", "*"]), vec![334, 501]);
    assert_eq!(codes(&mut session, &["AUTH PLAIN !!!"]), vec![501]);
    assert_eq!(codes(&mut session, &["AUTH CRAM-MD5"]), vec![504]);
    session.handle_line(format!("AUTH PLAIN {}", b64(b"\0u\0p")).as_bytes());
    assert_eq!(session.auth_finished(None).reply.unwrap().code(), 535);
    session.handle_line(format!("AUTH PLAIN {}", b64(b"\0u\0p")).as_bytes());
    assert_eq!(session.auth_finished(None).reply.unwrap().code(), 535);
    session.handle_line(format!("AUTH PLAIN {}", b64(b"\0u\0p")).as_bytes());
    let last = session.auth_finished(None);
    assert_eq!(last.reply.unwrap().code(), 421);
    assert!(matches!(last.action, Action::Close));
}

#[test]
fn sequencing_errors_have_enhanced_codes_and_the_session_goes_on() {
    let mut session = network_session();
    let lines = [
        "RCPT TO:<a@x.example>",
        "DATA",
        "FOO",
        "MAIL FROM:<a b>",
        "MAIL FROM:<a@contoso.com>",
        "MAIL FROM:<a@contoso.com>",
        "DATA",
        "EXPN x",
        "STARTTLS",
        "NOOP",
    ];
    for line in lines {
        let reply = session.handle_line(line.as_bytes()).reply.unwrap();
        let text = String::from_utf8(reply.to_bytes()).unwrap();
        let enhanced = text.get(4..5).unwrap();
        assert!(
            enhanced == text.get(0..1).unwrap(),
            "{line}: reply {text:?} has no matching enhanced code"
        );
    }
}

#[test]
fn recipient_limit_and_declared_size() {
    let mut session = network_session();
    assert_eq!(
        codes(
            &mut session,
            &[
                "MAIL FROM:<a@contoso.com>",
                "RCPT TO:<1@x.example>",
                "RCPT TO:<2@x.example>",
                "RCPT TO:<3@x.example>",
                "RCPT TO:<4@x.example>",
                "RSET",
                "MAIL FROM:<a@contoso.com> SIZE=1001",
                "MAIL FROM:<a@contoso.com> SIZE=1000",
            ]
        ),
        vec![250, 250, 250, 250, 452, 250, 552, 250]
    );
}

#[test]
fn too_many_errors_close_the_connection() {
    let mut session = network_session();
    for _ in 0..10 {
        assert_eq!(session.handle_line(b"BOGUS").reply.unwrap().code(), 500);
    }
    let step = session.handle_line(b"BOGUS");
    assert_eq!(step.reply.unwrap().code(), 421);
    assert!(matches!(step.action, Action::Close));
}

#[test]
fn starttls_resets_state() {
    let mut session = Session::new(
        settings(TlsMode::Starttls, false),
        peer(),
        Some(grant(Principal::Network("192.0.2.0/24".parse().unwrap()))),
        false,
    );
    assert_eq!(
        codes(&mut session, &["EHLO x", "MAIL FROM:<a@contoso.com>"]),
        vec![250, 250]
    );
    assert_eq!(codes(&mut session, &["STARTTLS"]), vec![220]);
    session.tls_established();
    assert_eq!(codes(&mut session, &["RCPT TO:<b@x.example>"]), vec![503]);
    assert_eq!(codes(&mut session, &["STARTTLS"]), vec![503]);
}

#[test]
fn data_outcomes_map_to_the_documented_replies() {
    let cases = [
        (DataOutcome::TooLarge, "552 5.3.4"),
        (DataOutcome::HeaderTooLarge, "552 5.3.4"),
        (DataOutcome::StorageFull, "452 4.3.1"),
        (DataOutcome::StorageFailed, "451 4.3.0"),
        (DataOutcome::StorageTimeout, "451 4.3.0"),
    ];
    for (outcome, prefix) in cases {
        let mut session = network_session();
        let text =
            String::from_utf8(session.data_finished(outcome).reply.unwrap().to_bytes()).unwrap();
        assert!(text.starts_with(prefix), "{text}");
    }
}

#[test]
fn protocol_names_follow_rfc3848() {
    let mut session = network_session();
    codes(
        &mut session,
        &[
            "HELO x",
            "MAIL FROM:<a@contoso.com>",
            "RCPT TO:<b@x.example>",
        ],
    );
    let Action::ReceiveData(request) = session.handle_line(b"DATA").action else {
        panic!()
    };
    assert_eq!(request.protocol, "SMTP");
}

#[test]
fn a_recipient_named_twice_is_kept_once() {
    let mut session = network_session();
    assert_eq!(
        codes(
            &mut session,
            &[
                "EHLO printer",
                "MAIL FROM:<scan@contoso.com>",
                "RCPT TO:<a@x.example>",
                "RCPT TO:<A@X.example>",
                "RCPT TO:<b@x.example>",
                "RCPT TO:<a@x.example>",
            ]
        ),
        vec![250, 250, 250, 250, 250, 250]
    );
    let Action::ReceiveData(request) = session.handle_line(b"DATA").action else {
        panic!("expected ReceiveData")
    };
    let recipients: Vec<&str> = request.recipients.iter().map(|r| r.as_str()).collect();
    assert_eq!(recipients, ["a@x.example", "b@x.example"]);
}

#[test]
fn help_lists_only_what_this_listener_offers() {
    let help = |mut session: Session| {
        session
            .handle_line(b"HELP")
            .reply
            .unwrap()
            .text()
            .to_string()
    };
    let plain = help(anonymous_session(TlsMode::None, false));
    assert!(
        !plain.contains("STARTTLS") && !plain.contains("AUTH"),
        "{plain}"
    );
    let starttls = help(anonymous_session(TlsMode::Starttls, false));
    assert!(
        starttls.contains("STARTTLS") && !starttls.contains("AUTH"),
        "{starttls}"
    );
    let clear_auth = help(anonymous_session(TlsMode::None, true));
    assert!(clear_auth.contains("AUTH"), "{clear_auth}");
}

#[test]
fn the_unqualified_postmaster_is_the_postmaster_of_the_account_domain() {
    let mut session = network_session();
    assert_eq!(
        codes(
            &mut session,
            &[
                "EHLO printer",
                "MAIL FROM:<scan@contoso.com>",
                "RCPT TO:<Postmaster>",
            ]
        ),
        vec![250, 250, 250]
    );
    let Action::ReceiveData(request) = session.handle_line(b"DATA").action else {
        panic!("expected ReceiveData")
    };
    assert_eq!(request.recipients[0].as_str(), "postmaster@contoso.com");
    // Without MAIL it is the usual sequencing error.
    let mut fresh = network_session();
    assert_eq!(
        codes(&mut fresh, &["EHLO x", "RCPT TO:<postmaster>"]),
        vec![250, 503]
    );
}

#[test]
fn mail_gets_452_4_3_1_below_the_disk_reserve_and_again_250_once_space_returns() {
    use crate::config::free_space::MinFreeSpace;
    const MIB: u64 = 1024 * 1024;
    let reserve = Arc::new(crate::spool::DiskReserve::new("/spool"));
    reserve.set_setting(MinFreeSpace::Bytes(4 * MIB));
    let mut with_reserve = (*settings(TlsMode::None, false)).clone();
    with_reserve.disk_reserve = Arc::clone(&reserve);
    with_reserve.max_message_size = 10 * MIB;
    let with_reserve = Arc::new(with_reserve);
    let net = grant(Principal::Network("192.0.2.0/24".parse().unwrap()));
    let mut session = Session::new(Arc::clone(&with_reserve), peer(), Some(net), false);
    let mut stranger = Session::new(with_reserve, peer(), None, false);
    assert_eq!(codes(&mut session, &["EHLO app"]), vec![250]);
    assert_eq!(codes(&mut stranger, &["EHLO x"]), vec![250]);

    reserve.record(8 * MIB, 100 * MIB);
    assert_eq!(
        codes(&mut session, &["MAIL FROM:<a@contoso.com>", "RSET"]),
        vec![250, 250]
    );
    // A declared size that would take the spool below the reserve (RFC 1870 §6.1).
    let reply = session
        .handle_line(format!("MAIL FROM:<a@contoso.com> SIZE={}", 5 * MIB).as_bytes())
        .reply
        .unwrap();
    assert_eq!(reply.code(), 452, "{reply:?}");

    reserve.record(3 * MIB, 100 * MIB);
    let step = session.handle_line(b"MAIL FROM:<a@contoso.com>");
    let text = String::from_utf8(step.reply.unwrap().to_bytes()).unwrap();
    assert!(
        text.starts_with("452 4.3.1 Insufficient system storage"),
        "{text}"
    );
    assert!(
        step.refusal.is_none(),
        "logged once by the reserve, not per MAIL"
    );
    // No transaction was started, and a stranger still learns nothing but 530.
    assert_eq!(codes(&mut session, &["RCPT TO:<b@x.example>"]), vec![503]);
    assert_eq!(
        codes(&mut stranger, &["MAIL FROM:<a@contoso.com>"]),
        vec![530]
    );

    // 452s are not errors: many of them never close the session (max_errors is 10).
    for _ in 0..20 {
        assert_eq!(
            codes(&mut session, &["MAIL FROM:<a@contoso.com>"]),
            vec![452]
        );
    }
    reserve.record(8 * MIB, 100 * MIB);
    assert_eq!(
        codes(
            &mut session,
            &["MAIL FROM:<a@contoso.com>", "RCPT TO:<b@x.example>"]
        ),
        vec![250, 250]
    );
}

#[test]
fn mail_chooses_the_account_by_envelope_sender() {
    use crate::policy::{AccountRoute, SenderRewrite};
    let route = |account: &str, mailbox: &str, send_as: &[&str]| AccountRoute {
        account: account.into(),
        mailbox: crate::vocab::address::Address::parse(mailbox).unwrap(),
        send_as: send_as
            .iter()
            .map(|p| SenderPattern::parse(p).unwrap())
            .collect(),
        sender_name: None,
    };
    // (sender_rewrite, MAIL FROM, reply code, the account and sender handed to DATA)
    let cases = [
        (
            SenderRewrite::Never,
            "alerts@contoso.com",
            250,
            "alerts",
            "alerts@contoso.com",
        ),
        (
            SenderRewrite::Never,
            "billing@contoso.com",
            250,
            "invoices",
            "billing@contoso.com",
        ),
        (
            SenderRewrite::Never,
            "other@contoso.com",
            250,
            "m365",
            "other@contoso.com",
        ),
        // "always" sends as the chosen account's mailbox, not the default's.
        (
            SenderRewrite::Always,
            "billing@contoso.com",
            250,
            "invoices",
            "invoices@contoso.com",
        ),
        (SenderRewrite::Never, "x@printers.lan", 550, "", ""),
        (
            SenderRewrite::WhenNotAllowed,
            "x@printers.lan",
            250,
            "m365",
            "relay@contoso.com",
        ),
    ];
    for (rewrite, sender, code, account, effective) in cases {
        let mut grant = (*grant(Principal::Network("192.0.2.0/24".parse().unwrap()))).clone();
        grant.sender_rewrite = rewrite;
        grant.routes = vec![
            route("m365", "relay@contoso.com", &[]),
            route("invoices", "invoices@contoso.com", &["billing@contoso.com"]),
            route("alerts", "alerts@contoso.com", &[]),
        ];
        let mut session = Session::new(
            settings(TlsMode::None, false),
            peer(),
            Some(Arc::new(grant)),
            false,
        );
        let mail = format!("MAIL FROM:<{sender}>");
        let replies = codes(&mut session, &["EHLO printer", &mail]);
        assert_eq!(replies, vec![250, code], "{rewrite:?} {sender}");
        if code != 250 {
            continue;
        }
        assert_eq!(codes(&mut session, &["RCPT TO:<a@x.example>"]), vec![250]);
        let Action::ReceiveData(request) = session.handle_line(b"DATA").action else {
            panic!("expected ReceiveData")
        };
        assert_eq!(request.account, account, "{rewrite:?} {sender}");
        assert_eq!(
            request.sender.map(|s| s.to_string()).as_deref(),
            Some(effective),
            "{rewrite:?} {sender}"
        );
        assert_eq!(
            request.grant.account, "m365",
            "the client's whole grant goes along"
        );
    }
}
