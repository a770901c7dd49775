//! SMTP command parsing: one command line (without its line ending) in, a typed [`Command`] or
//! a [`CommandError`] that maps to exactly one reply out.
//!
//! Pure, allocation-light, never panics on any input (fuzzed). Verbs are case-insensitive.
//! Only the ESMTP parameters the relay advertises are accepted (`SIZE`, `BODY=7BIT|8BITMIME`,
//! `SMTPUTF8`, and `AUTH=` which RFC 4954 lets any server ignore); anything else gets `555`.

use super::reply::Reply;
use crate::vocab::address::{Address, AddressError, parse_path};

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(Address),
    /// `RCPT TO:<Postmaster>` without a domain, which RFC 5321 §4.5.1 says a server MUST
    /// accept; the session decides which postmaster it means.
    RcptPostmaster,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
    /// `BDAT`: CHUNKING is not advertised, so it is refused (and its payload cannot be skipped
    /// reliably, so the session treats it as a protocol error).
    Bdat,
}

/// `MAIL FROM` with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// `None` is the null reverse-path `<>`.
    pub sender: Option<Address>,
    /// `SIZE=` as declared by the client.
    pub declared_size: Option<u64>,
    /// `BODY=8BITMIME` was given.
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// A command that cannot be executed, with the reply it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command not recognized")]
    Unrecognized,
    #[error("the command line is not valid UTF-8")]
    NotUtf8,
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    #[error("unsupported parameter")]
    UnsupportedParameter(String),
}

impl CommandError {
    /// The one reply for this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unrecognized => Reply::new(500, "5.5.1", "Command not recognized"),
            CommandError::NotUtf8 => {
                Reply::new(500, "5.5.2", "Syntax error: the command is not valid UTF-8")
            }
            CommandError::Syntax(what) => Reply::new(501, "5.5.4", format!("Syntax error: {what}")),
            CommandError::BadSender(err) => {
                Reply::new(501, "5.1.7", format!("Bad sender address syntax: {err}"))
            }
            CommandError::BadRecipient(err) => {
                Reply::new(501, "5.1.3", format!("Bad recipient address syntax: {err}"))
            }
            CommandError::UnsupportedParameter(name) => Reply::new(
                555,
                "5.5.4",
                format!("Unsupported parameter {}", truncate(name, 40)),
            ),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Parse one command line. `line` excludes the terminating CRLF/LF.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    let line = line.trim_end_matches([' ', '\t', '\r']);
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(index) => (
            line.get(..index).unwrap_or(""),
            line.get(index + 1..).unwrap_or(""),
        ),
        None => (line, ""),
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    if verb.len() > 8 {
        return Err(CommandError::Unrecognized);
    }
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => Ok(Command::Ehlo(hello_argument(rest)?)),
        "HELO" => Ok(Command::Helo(hello_argument(rest)?)),
        "MAIL" => parse_mail(rest).map(Command::Mail),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_argument(rest, Command::Data),
        "RSET" => no_argument(rest, Command::Rset),
        "QUIT" => no_argument(rest, Command::Quit),
        "STARTTLS" => no_argument(rest, Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "BDAT" => Ok(Command::Bdat),
        "AUTH" => parse_auth(rest),
        _ => Err(CommandError::Unrecognized),
    }
}

fn no_argument(rest: &str, command: Command) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax("this command takes no argument"))
    }
}

fn hello_argument(rest: &str) -> Result<String, CommandError> {
    let name = rest.split([' ', '\t']).next().unwrap_or("");
    if name.is_empty() {
        return Err(CommandError::Syntax(
            "a domain name or address literal is required",
        ));
    }
    if name.len() > 255 || name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err(CommandError::Syntax("invalid domain name"));
    }
    Ok(name.to_string())
}

/// Strip `keyword:` case-insensitively, tolerating spaces around the colon.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest.get(keyword.len()..)?.trim_start_matches([' ', '\t']);
    after.strip_prefix(':')
}

fn parse_mail(rest: &str) -> Result<MailFrom, CommandError> {
    let path =
        strip_keyword(rest, "FROM").ok_or(CommandError::Syntax("expected MAIL FROM:<address>"))?;
    let (sender, params) = parse_path(path, true).map_err(CommandError::BadSender)?;
    let mut mail = MailFrom {
        sender,
        declared_size: None,
        eight_bit_mime: false,
        smtputf8: false,
    };
    let mut seen: Vec<String> = Vec::new();
    for param in params.split([' ', '\t']).filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (param, None),
        };
        let key = key.to_ascii_uppercase();
        if seen.contains(&key) {
            return Err(CommandError::Syntax("a MAIL parameter is given twice"));
        }
        seen.push(key.clone());
        match (key.as_str(), value) {
            // All digits but more than 64 bits hold is simply too large (552 at MAIL).
            ("SIZE", Some(value))
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) =>
            {
                mail.declared_size = Some(value.parse::<u64>().unwrap_or(u64::MAX));
            }
            ("SIZE", Some(_)) => {
                return Err(CommandError::Syntax("SIZE takes a number of octets"));
            }
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("8BITMIME") => {
                mail.eight_bit_mime = true
            }
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("7BIT") => {}
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            ("AUTH", Some(_)) => {}
            _ => return Err(CommandError::UnsupportedParameter(param.to_string())),
        }
    }
    Ok(mail)
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let path =
        strip_keyword(rest, "TO").ok_or(CommandError::Syntax("expected RCPT TO:<address>"))?;
    if path.trim().eq_ignore_ascii_case("<postmaster>") {
        return Ok(Command::RcptPostmaster);
    }
    let (recipient, params) = parse_path(path, false).map_err(CommandError::BadRecipient)?;
    if let Some(param) = params.split([' ', '\t']).find(|p| !p.is_empty()) {
        return Err(CommandError::UnsupportedParameter(param.to_string()));
    }
    recipient
        .map(Command::Rcpt)
        .ok_or(CommandError::BadRecipient(AddressError::Empty))
}

fn parse_auth(rest: &str) -> Result<Command, CommandError> {
    let mut parts = rest.split([' ', '\t']).filter(|p| !p.is_empty());
    let mechanism = parts
        .next()
        .ok_or(CommandError::Syntax("AUTH needs a mechanism"))?
        .to_ascii_uppercase();
    let initial_response = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(CommandError::Syntax(
            "AUTH takes a mechanism and at most one initial response",
        ));
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(sender: &str) -> Command {
        Command::Mail(MailFrom {
            sender: Some(Address::parse(sender).unwrap()),
            declared_size: None,
            eight_bit_mime: false,
            smtputf8: false,
        })
    }

    #[test]
    fn commands_table() {
        let cases: Vec<(&[u8], Result<Command, CommandError>)> = vec![
            (b"EHLO printer.lan", Ok(Command::Ehlo("printer.lan".into()))),
            (b"ehlo [192.0.2.7]", Ok(Command::Ehlo("[192.0.2.7]".into()))),
            (b"HELO x", Ok(Command::Helo("x".into()))),
            (
                b"EHLO",
                Err(CommandError::Syntax(
                    "a domain name or address literal is required",
                )),
            ),
            (b"MAIL FROM:<a@b.example>", Ok(mail("a@b.example"))),
            (b"mail from: <a@b.example>", Ok(mail("a@b.example"))),
            (b"MAIL FROM : <a@b.example>", Ok(mail("a@b.example"))),
            (b"MAIL FROM:a@b.example", Ok(mail("a@b.example"))),
            (b"MAIL FROM:<a@b.example> AUTH=<>", Ok(mail("a@b.example"))),
            (
                b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8",
                Ok(Command::Mail(MailFrom {
                    sender: Some(Address::parse("a@b.example").unwrap()),
                    declared_size: Some(1000),
                    eight_bit_mime: true,
                    smtputf8: true,
                })),
            ),
            (
                b"MAIL FROM:<>",
                Ok(Command::Mail(MailFrom {
                    sender: None,
                    declared_size: None,
                    eight_bit_mime: false,
                    smtputf8: false,
                })),
            ),
            (
                b"MAIL FROM:<a@b.example> SIZE=x",
                Err(CommandError::Syntax("SIZE takes a number of octets")),
            ),
            (
                b"MAIL FROM:<a@b.example> SIZE=99999999999999999999",
                Ok(Command::Mail(MailFrom {
                    sender: Some(Address::parse("a@b.example").unwrap()),
                    declared_size: Some(u64::MAX),
                    eight_bit_mime: false,
                    smtputf8: false,
                })),
            ),
            (
                b"MAIL FROM:<a@b.example> SIZE=1 size=2",
                Err(CommandError::Syntax("a MAIL parameter is given twice")),
            ),
            (
                b"MAIL FROM:<a@b.example> BODY=8BITMIME BODY=7BIT",
                Err(CommandError::Syntax("a MAIL parameter is given twice")),
            ),
            (
                b"MAIL FROM:<a@b.example> SIZE=-1",
                Err(CommandError::Syntax("SIZE takes a number of octets")),
            ),
            (
                b"MAIL FROM:<a@b.example> RET=FULL",
                Err(CommandError::UnsupportedParameter("RET=FULL".into())),
            ),
            (
                b"MAIL FROM:<a@b.example> BODY=BINARYMIME",
                Err(CommandError::UnsupportedParameter("BODY=BINARYMIME".into())),
            ),
            (
                b"MAIL TO:<a@b.example>",
                Err(CommandError::Syntax("expected MAIL FROM:<address>")),
            ),
            (
                b"MAIL FROM:<a b>",
                Err(CommandError::BadSender(AddressError::MissingDomain)),
            ),
            (
                b"MAIL FROM:<a b@c.example>",
                Err(CommandError::BadSender(AddressError::BadCharacter)),
            ),
            (b"RCPT TO:<Postmaster>", Ok(Command::RcptPostmaster)),
            (b"rcpt to: <postmaster>", Ok(Command::RcptPostmaster)),
            (
                b"RCPT TO:<c@d.example>",
                Ok(Command::Rcpt(Address::parse("c@d.example").unwrap())),
            ),
            (
                b"rcpt to:c@d.example",
                Ok(Command::Rcpt(Address::parse("c@d.example").unwrap())),
            ),
            (
                b"RCPT TO:<>",
                Err(CommandError::BadRecipient(AddressError::Empty)),
            ),
            (
                b"RCPT TO:<c@d.example> NOTIFY=NEVER",
                Err(CommandError::UnsupportedParameter("NOTIFY=NEVER".into())),
            ),
            (b"DATA", Ok(Command::Data)),
            (b"data  ", Ok(Command::Data)),
            (
                b"DATA now",
                Err(CommandError::Syntax("this command takes no argument")),
            ),
            (b"RSET", Ok(Command::Rset)),
            (b"NOOP anything", Ok(Command::Noop)),
            (b"QUIT", Ok(Command::Quit)),
            (b"VRFY root", Ok(Command::Vrfy)),
            (b"HELP", Ok(Command::Help)),
            (b"STARTTLS", Ok(Command::StartTls)),
            (
                b"AUTH PLAIN",
                Ok(Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: None,
                }),
            ),
            (
                b"auth login dXNlcg==",
                Ok(Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial_response: Some("dXNlcg==".into()),
                }),
            ),
            (b"AUTH", Err(CommandError::Syntax("AUTH needs a mechanism"))),
            (b"GET / HTTP/1.1", Err(CommandError::Unrecognized)),
            (b"", Err(CommandError::Unrecognized)),
            (b"\xff\xfe", Err(CommandError::NotUtf8)),
            (b"XXXXXXXXXXXXXXXX", Err(CommandError::Unrecognized)),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_command(line),
                expected,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn every_error_has_an_enhanced_code() {
        let errors = [
            CommandError::Unrecognized,
            CommandError::NotUtf8,
            CommandError::Syntax("x"),
            CommandError::BadSender(AddressError::Empty),
            CommandError::BadRecipient(AddressError::Empty),
            CommandError::UnsupportedParameter("X=1".into()),
        ];
        for error in errors {
            let bytes = error.reply().to_bytes();
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with('5'), "{text}");
            assert!(text.get(4..6) == Some("5."), "{text}");
        }
    }
}
