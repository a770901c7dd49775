//! Fuzzes the command parser (`smtp::proto::command::parse_command`) and the path parser
//! (`address::parse_path`, `Address::parse`) on raw bytes and on input mapped into the SMTP
//! alphabet (verbs, `<`, `>`, `@`, `:`, `=`, spaces, CR, LF, `.`, quotes, UTF-8), as
//! smtp-proto's fuzz target does. Checks: nothing panics; every accepted MAIL, RCPT, EHLO/HELO
//! and AUTH command re-renders to a line that parses to the same command; every accepted
//! address re-parses to itself; every error renders one well-formed 5xx reply line.

#![no_main]

use fuzz_support::smtp_alphabet;
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::vocab::address::{Address, parse_path};
use smtp_oauth_relay::smtp::proto::command::{Command, parse_command};

fn render(command: &Command) -> Option<String> {
    Some(match command {
        Command::Mail(mail) => {
            let mut line = format!(
                "MAIL FROM:<{}>",
                mail.sender.as_ref().map(Address::as_str).unwrap_or("")
            );
            if let Some(size) = mail.declared_size {
                line.push_str(&format!(" SIZE={size}"));
            }
            if mail.eight_bit_mime {
                line.push_str(" BODY=8BITMIME");
            }
            if mail.smtputf8 {
                line.push_str(" SMTPUTF8");
            }
            line
        }
        Command::Rcpt(address) => format!("RCPT TO:<{address}>"),
        Command::Ehlo(name) => format!("EHLO {name}"),
        Command::Helo(name) => format!("HELO {name}"),
        Command::Auth {
            mechanism,
            initial_response,
        } => match initial_response {
            Some(response) => format!("AUTH {mechanism} {response}"),
            None => format!("AUTH {mechanism}"),
        },
        _ => return None,
    })
}

fn check(line: &[u8]) {
    match parse_command(line) {
        Ok(command) => {
            if let Command::Rcpt(address) = &command {
                assert_eq!(Address::parse(address.as_str()).as_ref(), Ok(address));
            }
            if let Command::Mail(mail) = &command
                && let Some(sender) = &mail.sender
            {
                assert_eq!(Address::parse(sender.as_str()).as_ref(), Ok(sender));
            }
            if let Some(rendered) = render(&command) {
                assert_eq!(
                    parse_command(rendered.as_bytes()).as_ref(),
                    Ok(&command),
                    "re-rendered {rendered:?}"
                );
            }
        }
        Err(error) => {
            let reply = error.reply().to_bytes();
            assert!(reply.len() <= 512, "reply of {} bytes", reply.len());
            assert!(reply.starts_with(b"5"));
            assert!(reply.ends_with(b"\r\n"));
            assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(reply.iter().filter(|&&b| b == b'\r').count(), 1);
        }
    }
    if let Ok(text) = std::str::from_utf8(line) {
        for allow_null in [false, true] {
            if let Ok((address, rest)) = parse_path(text, allow_null) {
                assert!(rest.is_empty() || rest.starts_with([' ', '\t']));
                match address {
                    Some(address) => {
                        assert_eq!(Address::parse(address.as_str()), Ok(address.clone()));
                        assert!(address.as_str().len() <= 254);
                        assert!(!address.local_part().is_empty());
                        assert!(!address.domain().is_empty());
                    }
                    None => assert!(allow_null),
                }
            }
        }
        if let Ok(address) = Address::parse(text) {
            assert_eq!(address.as_str(), text);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest);
    } else {
        check(&smtp_alphabet(rest));
    }
});
