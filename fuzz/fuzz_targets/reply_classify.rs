//! Fuzzes the pure reply-handling code: `smtp::proto::reply::Reply` rendering,
//! `transport::smtp::classify::{classify_reply, enhanced_code}` on Exchange replies, and
//! `oauth::entra::aadsts::EntraRefusal::from_response` and
//! `oauth::google::refusal::GoogleRefusal::from_response` on token-endpoint answers, and Gmail's
//! catalogue (`classify_reply_for(Provider::Google, …)`). Checks: nothing
//! panics; a rendered reply line is at most 512 octets with its CRLF and has no bare CR or LF;
//! an enhanced code found is in range and parses back from its rendering; the operator
//! messages built from remote text are one line.

#![no_main]

use fuzz_support::has_bare_cr_or_lf;
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::oauth::google::refusal::GoogleRefusal;
use smtp_oauth_relay::transport::smtp::classify::{classify_reply, classify_reply_for};
use smtp_oauth_relay::vocab::provider::Provider;
use smtp_oauth_relay::vocab::enhanced_status::enhanced_code;
use smtp_oauth_relay::vocab::verdict::Stage;
use smtp_oauth_relay::oauth::entra::aadsts::EntraRefusal;
use smtp_oauth_relay::smtp::proto::reply::Reply;

const STAGES: [Stage; 12] = [
    Stage::Connect,
    Stage::Greeting,
    Stage::Ehlo,
    Stage::StartTls,
    Stage::Tls,
    Stage::Auth,
    Stage::MailFrom,
    Stage::RcptTo,
    Stage::Data,
    Stage::DataEnd,
    Stage::Rset,
    Stage::Quit,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let code = u16::from_le_bytes([data[0], data[1]]);
    let stage = STAGES[usize::from(data[2]) % STAGES.len()];
    let text = String::from_utf8_lossy(&data[3..]).into_owned();

    // Reply rendering.
    let reply = Reply::new(code % 1000, "5.5.1", text.clone());
    let multi = Reply::bare(
        code % 1000,
        text.split('|').map(|s| s.to_string().into()).collect(),
    );
    for bytes in [reply.to_bytes(), multi.to_bytes()] {
        assert!(!has_bare_cr_or_lf(&bytes), "bare CR/LF in a reply");
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            assert!(line.len() <= 512, "reply line of {} octets", line.len());
            assert!(line.ends_with(b"\r\n"));
            assert!(line.len() >= 6);
            assert!(line[..3].iter().all(u8::is_ascii_digit));
        }
        assert!(std::str::from_utf8(&bytes).is_ok());
    }

    // Classification of an upstream reply.
    let verdict = classify_reply(stage, code, &text);
    let line = verdict.reply_operator_line(stage, code, &text);
    assert!(
        !line.contains(['\r', '\n']),
        "operator line with a line break: {line:?}"
    );
    let _ = verdict.operator_line();
    // Gmail's catalogue: total too, and never permanent for a 4xx.
    let gmail = classify_reply_for(Provider::Google, stage, code, &text);
    let gmail_line = gmail.reply_operator_line(stage, code, &text);
    assert!(!gmail_line.contains(['\r', '\n']), "operator line with a line break");
    if (400..500).contains(&code) {
        assert_ne!(gmail.class.as_str(), "permanent", "a 4xx became permanent");
    }
    if let Some(status) = enhanced_code(&text) {
        assert!(matches!(status.class, 2 | 4 | 5));
        assert!(status.subject <= 999 && status.detail <= 999);
        let rendered = status.to_string();
        assert_eq!(
            enhanced_code(&rendered),
            Some(status),
            "{rendered} from {text:?}"
        );
    }

    // Token-endpoint answers.
    let failure = EntraRefusal::from_response(code, &text);
    let message = failure.operator_message();
    assert!(
        !message.contains(['\r', '\n']),
        "operator message with a line break"
    );
    let _ = failure.retry();
    let _ = failure.explanation();
    let _ = failure.code();
    let google = GoogleRefusal::from_response(code, &text);
    assert!(
        !google.operator_message().contains(['\r', '\n']),
        "operator message with a line break"
    );
    let _ = (google.fix(), google.is_configuration(), google.explanation());
});
