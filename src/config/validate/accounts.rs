//! Validation of one `[[account]]`: the name, the mailbox, the `provider`, the SMTP server and
//! its TLS, the extra roots and the sending identity (`send_as`, `sender_name`); the
//! provider's own side (identity, credential, default limits) is checked by `microsoft` or
//! `google`. Every problem is reported by key path with the fix in the admin's words.

use super::*;
use crate::oauth::app::ClientCredential;
use crate::vocab::provider::Provider;

pub(super) fn account(
    checker: &mut Checker<'_>,
    index: usize,
    raw: &RawAccount,
) -> Option<AccountSettings> {
    let path = format!("account[{index}]");
    let name = checker.required(&format!("{path}.name"), &raw.name);
    let plain_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if let Some(n) = name.as_deref()
        && !plain_name(n)
    {
        checker.error(
            format!("{path}.name"),
            format!("\"{n}\" may use only letters, digits, '-', '_' and '.'"),
        );
    }
    let mailbox = checker
        .required(&format!("{path}.mailbox"), &raw.mailbox)
        .and_then(|text| match Address::parse(&text) {
            Ok(address) => Some(address),
            Err(e) => {
                checker.error(
                    format!("{path}.mailbox"),
                    format!("\"{text}\" is not a mailbox address: {e}"),
                );
                None
            }
        });
    let provider = match raw.provider.as_deref() {
        None => Provider::Microsoft,
        Some(text) => Provider::parse(text).unwrap_or_else(|| {
            checker.error(
                format!("{path}.provider"),
                format!("\"{text}\" must be \"microsoft\" or \"google\""),
            );
            Provider::Microsoft
        }),
    };
    let (identity, route) = match provider {
        Provider::Microsoft => super::microsoft::identity(checker, &path, raw),
        Provider::Google => (
            super::google::identity(checker, &path, raw, mailbox.as_ref()),
            super::google::route(checker, &path, raw),
        ),
    };
    let default_server = route.default_smtp_server;
    let server = raw
        .smtp_server
        .clone()
        .unwrap_or_else(|| default_server.into());
    let host_port = match server.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some((
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
            )),
            _ => None,
        },
        _ => None,
    };
    if host_port.is_none() {
        checker.error(
            format!("{path}.smtp_server"),
            format!("\"{server}\" must be host:port, e.g. {default_server}"),
        );
    }
    let smtp_tls = match raw.smtp_tls.as_deref().unwrap_or("starttls") {
        "starttls" => Some(UpstreamTls::Starttls),
        "implicit" => Some(UpstreamTls::Implicit),
        "none" => Some(UpstreamTls::None),
        other => {
            checker.error(
                format!("{path}.smtp_tls"),
                format!("\"{other}\" must be \"starttls\", \"implicit\" or \"none\""),
            );
            None
        }
    };
    if smtp_tls == Some(UpstreamTls::None) {
        checker.warnings.push(format!(
            "{path}.smtp_tls = \"none\": the access token crosses the network in clear; only for a local test server"
        ));
    }
    if let (Some((_, 465)), Some(UpstreamTls::Starttls), Provider::Microsoft) =
        (&host_port, smtp_tls, provider)
    {
        checker.warnings.push(format!(
            "{path}.smtp_server: port 465 is not supported by Exchange Online for client submission; use 587"
        ));
    }
    if let (Some((_, 465)), Some(UpstreamTls::Starttls), Provider::Google) =
        (&host_port, smtp_tls, provider)
    {
        checker.warnings.push(format!(
            "{path}.smtp_server: port 465 of smtp.gmail.com speaks TLS from the first byte: set smtp_tls = \"implicit\", or use port 587 with STARTTLS"
        ));
    }
    let mut extra_roots = Vec::new();
    if let Some(ca_file) = &raw.ca_file {
        match crate::tls::load_certificates(&checker.resolve(ca_file)) {
            Ok(certs) => extra_roots = certs,
            Err(e) => checker.error(format!("{path}.ca_file"), e),
        }
    }
    let (
        max_connections,
        max_messages_per_minute,
        max_recipients_per_message,
        max_recipients_per_day,
    ) = match provider {
        Provider::Microsoft => {
            super::microsoft::exchange_limits(checker, &path, raw, route.transport)
        }
        Provider::Google => super::google::gmail_limits(checker, &path, raw),
    };
    let max_messages_per_day = raw.max_messages_per_day.unwrap_or(match provider {
        // Exchange Online documents no daily message count, only recipients (and 30 a minute).
        Provider::Microsoft => 0,
        Provider::Google => super::google::GMAIL_MESSAGES_PER_DAY,
    });
    if provider == Provider::Google && max_messages_per_day > super::google::GMAIL_MESSAGES_PER_DAY
    {
        checker.warnings.push(format!(
            "{path}.max_messages_per_day = {max_messages_per_day}: Gmail allows {} messages per user per day, then refuses with 550 5.4.5 for up to 24 hours",
            super::google::GMAIL_MESSAGES_PER_DAY
        ));
    }
    let renew_before = raw
        .renew_before
        .unwrap_or(crate::oauth::token::DEFAULT_RENEW_BEFORE);
    let (send_as, sender_name) = sending_identity(checker, &path, raw);
    let (smtp_host, smtp_port) = host_port?;
    let identity = identity?;
    Some(AccountSettings {
        name: name?,
        mailbox: mailbox?,
        provider,
        tenant_id: identity.tenant_id,
        client_id: identity.client_id,
        credential: identity.credential,
        authority: identity.authority,
        scope: identity.scope,
        smtp_host,
        smtp_port,
        smtp_tls: smtp_tls?,
        transport: route.transport,
        graph_endpoint: route.graph_endpoint,
        extra_roots,
        max_connections,
        max_messages_per_minute,
        max_recipients_per_message,
        max_recipients_per_day,
        max_messages_per_day,
        renew_before,
        mailbox_budget: crate::config::instances::MailboxBudget {
            sessions: max_connections,
            messages_per_minute: max_messages_per_minute,
            recipients_per_day: max_recipients_per_day,
            messages_per_day: max_messages_per_day,
        },
        client_secret_expires: super::microsoft::secret_expiry(checker, &path, raw),
        send_as,
        sender_name,
    })
}

/// How the account's mail leaves, as its provider decides: the default of `smtp_server`, the
/// transport (Graph only for Microsoft) and the Graph base URL (used with Graph only).
pub(super) struct DeliveryRoute {
    pub default_smtp_server: &'static str,
    pub transport: crate::config::TransportKind,
    pub graph_endpoint: String,
}

/// Who the account's tokens are for and how they are obtained, whatever the provider.
pub(super) struct AccountIdentity {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: ClientCredential,
    pub authority: String,
    pub scope: String,
}

/// The longest `sender_name` accepted: a display name, not a paragraph.
const MAX_SENDER_NAME_CHARS: usize = 200;

/// `send_as` (exact addresses and `*@domain` patterns; `*` alone is refused: an account
/// that may send as anyone cannot be told apart from any other) and `sender_name`.
fn sending_identity(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
) -> (Vec<SenderPattern>, Option<String>) {
    let mut send_as = Vec::new();
    for (index, text) in raw.send_as.iter().flatten().enumerate() {
        match SenderPattern::parse(text) {
            Some(SenderPattern::Any) | None => checker.error(
                format!("{path}.send_as[{index}]"),
                format!("\"{text}\" must be an address (info@contoso.com) or *@domain (*@sales.contoso.com)"),
            ),
            Some(pattern) => send_as.push(pattern),
        }
    }
    let sender_name = raw.sender_name.as_ref().and_then(|name| {
        if name.trim().is_empty() {
            checker.error(
                format!("{path}.sender_name"),
                "is empty: leave it out for no display name",
            );
            return None;
        }
        if name.chars().any(char::is_control) {
            checker.error(
                format!("{path}.sender_name"),
                "may not contain line breaks or other control characters",
            );
            return None;
        }
        if name.chars().count() > MAX_SENDER_NAME_CHARS {
            checker.error(
                format!("{path}.sender_name"),
                format!("is longer than {MAX_SENDER_NAME_CHARS} characters"),
            );
            return None;
        }
        Some(name.trim().to_string())
    });
    (send_as, sender_name)
}
