//! Fuzzes the spool envelope format (`spool::format::{decode, encode}`) three ways: raw bytes
//! into `decode`; an arbitrary JSON line wrapped in a correct magic line and checksum (so the
//! fuzzer gets past the checksum into the JSON and field checks); and envelopes built from
//! fuzzer data. Checks: `decode` never panics; whatever decodes re-encodes to bytes that decode
//! to the same envelope (encode∘decode round-trips, and encoding is deterministic); a built
//! envelope decodes back to itself exactly when its id is valid and it has a recipient; any
//! truncation of an encoded envelope is refused. A fourth mode fuzzes whole entry files
//! (`split_entry`): raw bytes never panic, and content with a correct trailer splits back into
//! that content and envelope, while any shortening of the file is refused.

#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::vocab::address::Address;
use smtp_oauth_relay::spool::format::{decode, encode, encode_trailer, split_entry};
use smtp_oauth_relay::vocab::hex;
use smtp_oauth_relay::vocab::envelope::{ClientInfo, Envelope, LastAttempt, is_valid_id};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::lower(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn wrap(json: &str) -> Vec<u8> {
    format!(
        "smtp-oauth-relay envelope 1\n{json}\nsha256 {}\n",
        sha256_hex(json.as_bytes())
    )
    .into_bytes()
}

fn round_trip(envelope: &Envelope) {
    let encoded = encode(envelope).expect("encode");
    assert_eq!(
        encode(envelope).expect("encode"),
        encoded,
        "encoding is not deterministic"
    );
    assert_eq!(decode(&encoded).as_ref(), Ok(envelope), "encode∘decode");
    for len in [0, encoded.len() / 2, encoded.len().saturating_sub(1)] {
        assert!(
            decode(&encoded[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
}

fn address(u: &mut Unstructured<'_>) -> Option<Address> {
    let text = <&str>::arbitrary(u).ok()?;
    Address::parse(text)
        .ok()
        .or_else(|| Address::parse(&format!("{}@example.com", text.len())).ok())
}

fn built(u: &mut Unstructured<'_>) -> Option<Envelope> {
    let id = if bool::arbitrary(u).ok()? {
        format!("{:016X}", u64::arbitrary(u).ok()?)
    } else {
        String::arbitrary(u).ok()?
    };
    let recipient_count = u.int_in_range(0..=3).ok()?;
    let mut recipients = Vec::new();
    for _ in 0..recipient_count {
        recipients.push(address(u)?);
    }
    let sender = if bool::arbitrary(u).ok()? {
        Some(address(u)?)
    } else {
        None
    };
    let last_attempt = if bool::arbitrary(u).ok()? {
        Some(LastAttempt {
            at: u64::arbitrary(u).ok()?,
            class: String::arbitrary(u).ok()?,
            stage: String::arbitrary(u).ok()?,
            reply: String::arbitrary(u).ok()?,
            hint: String::arbitrary(u).ok()?,
        })
    } else {
        None
    };
    Some(Envelope {
        id,
        account: String::arbitrary(u).ok()?,
        sender,
        recipients,
        received_at: u64::arbitrary(u).ok()?,
        body_len: u64::arbitrary(u).ok()?,
        body_sha256: String::arbitrary(u).ok()?,
        eight_bit: bool::arbitrary(u).ok()?,
        smtputf8: bool::arbitrary(u).ok()?,
        client: ClientInfo {
            peer: String::arbitrary(u).ok()?,
            helo: Option::<String>::arbitrary(u).ok()?,
            principal: String::arbitrary(u).ok()?,
        },
        attempts: u32::arbitrary(u).ok()?,
        next_attempt: u64::arbitrary(u).ok()?,
        last_attempt,
        delivered: {
            let count = u8::arbitrary(u).ok()? % 3;
            let mut delivered = Vec::new();
            for _ in 0..count {
                delivered.push(address(u)?);
            }
            delivered
        },
        failures: Vec::new(),
        is_bounce: bool::arbitrary(u).ok()?,
        uncertain_attempts: u32::arbitrary(u).ok()?,
        requeued_at: Option::<u64>::arbitrary(u).ok()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(envelope) = decode(rest) {
                round_trip(&envelope);
            }
        }
        1 => {
            let Ok(json) = std::str::from_utf8(rest) else {
                return;
            };
            if json.contains('\n') {
                return;
            }
            if let Ok(envelope) = decode(&wrap(json)) {
                assert!(is_valid_id(&envelope.id));
                assert!(!envelope.recipients.is_empty());
                round_trip(&envelope);
            }
        }
        3 => {
            if let Ok((envelope, content)) = split_entry(rest) {
                assert_eq!(content.len() as u64, envelope.body_len);
            }
            // The first half is content, the rest builds the envelope that describes it.
            let (content, seed) = rest.split_at(rest.len() / 2);
            let mut u = Unstructured::new(seed);
            let Some(mut envelope) = built(&mut u) else {
                return;
            };
            envelope.body_len = content.len() as u64;
            let Ok(trailer) = encode_trailer(&envelope) else {
                return;
            };
            let mut file = content.to_vec();
            file.extend_from_slice(&trailer);
            match split_entry(&file) {
                Ok((decoded, split)) => {
                    assert_eq!(decoded, envelope);
                    assert_eq!(split, content);
                }
                Err(_) => assert!(
                    !is_valid_id(&envelope.id) || envelope.recipients.is_empty(),
                    "a valid entry file refused"
                ),
            }
            for len in [0, file.len() / 2, file.len().saturating_sub(1)] {
                // (Content may itself be an entry file, so only "the same entry" is wrong.)
                let shortened = split_entry(&file[..len]);
                assert!(
                    !shortened.is_ok_and(|(e, c)| e == envelope && c == content),
                    "shortened entry accepted"
                );
            }
        }
        _ => {
            let mut u = Unstructured::new(rest);
            let Some(envelope) = built(&mut u) else {
                return;
            };
            let encoded = encode(&envelope).expect("encode");
            let valid = is_valid_id(&envelope.id) && !envelope.recipients.is_empty();
            match decode(&encoded) {
                Ok(decoded) => {
                    assert!(valid, "invalid envelope accepted: {envelope:?}");
                    assert_eq!(decoded, envelope);
                    round_trip(&decoded);
                }
                Err(error) => assert!(!valid, "valid envelope refused: {error}"),
            }
        }
    }
});
