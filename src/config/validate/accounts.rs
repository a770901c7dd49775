//! Validation of one `[[account]]`: the mailbox, the tenant and app, the credential (a
//! secret inline, from a file or the environment, or a certificate), the cloud presets and
//! the per-mailbox limits Exchange enforces. Every problem is reported by key path with the
//! fix in the admin's words.

use super::graph::{graph_endpoint, transport_kind};
use super::*;
use crate::config::{GRAPH_MAX_CONCURRENT_REQUESTS, TransportKind};
use crate::named_file::{NAMED_FILE_LIMIT, read_limited_text};
use crate::oauth::app::ClientCredential;

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

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
    let tenant_id = checker.required(&format!("{path}.tenant_id"), &raw.tenant_id);
    if let Some(tenant) = &tenant_id {
        let lower = tenant.to_ascii_lowercase();
        if let Some(fix) = super::placeholders::tenant_id(tenant) {
            checker.error(format!("{path}.tenant_id"), fix);
        } else if ["common", "organizations", "consumers"].contains(&lower.as_str()) {
            checker.error(
                format!("{path}.tenant_id"),
                format!("\"{tenant}\" cannot be used with client credentials (AADSTS9001023): use the tenant ID GUID or a verified domain like contoso.onmicrosoft.com"),
            );
        } else if !(is_guid(tenant)
            || (tenant.contains('.') && Address::parse(&format!("x@{tenant}")).is_ok()))
        {
            checker.error(
                format!("{path}.tenant_id"),
                format!("\"{tenant}\" is neither a tenant ID GUID nor a domain name (Entra admin center → Overview → Tenant ID)"),
            );
        }
    }
    let client_id = checker.required(&format!("{path}.client_id"), &raw.client_id);
    if let Some(fix) = client_id
        .as_deref()
        .and_then(super::placeholders::client_id)
    {
        checker.error(format!("{path}.client_id"), fix);
    } else if let Some(client) = &client_id
        && !is_guid(client)
    {
        checker.error(
            format!("{path}.client_id"),
            format!("\"{client}\" is not a GUID: copy the Application (client) ID from the app registration's Overview page"),
        );
    }
    let credential = credential(checker, &path, raw);
    let cloud_name = raw.cloud.as_deref().unwrap_or("global");
    let cloud = CLOUDS
        .iter()
        .find(|c| c.name == cloud_name)
        .copied()
        .unwrap_or_else(|| {
            let names: Vec<&str> = CLOUDS.iter().map(|c| c.name).collect();
            checker.error(
                format!("{path}.cloud"),
                format!("\"{cloud_name}\" must be one of {}", names.join(", ")),
            );
            CLOUDS[0]
        });
    let authority = raw
        .authority
        .clone()
        .unwrap_or_else(|| cloud.authority.into())
        .trim_end_matches('/')
        .to_string();
    if !authority.starts_with("https://") {
        checker.error(
            format!("{path}.authority"),
            format!(
                "\"{authority}\" must be an https:// URL like {}",
                cloud.authority
            ),
        );
    }
    let transport = transport_kind(checker, &path, raw);
    let graph_endpoint = graph_endpoint(checker, &path, raw, cloud, transport);
    // A Graph account's token is for the cloud's Graph root, whatever `graph_endpoint` says
    // (a proxy or an emulator still checks Graph's audience).
    let graph_scope = format!("{}/.default", cloud.graph_endpoint);
    let default_scope = match transport {
        TransportKind::Smtp => cloud.scope.to_string(),
        TransportKind::Graph => graph_scope.clone(),
    };
    let scope = raw.scope.clone().unwrap_or_else(|| default_scope.clone());
    if !scope.ends_with("/.default") {
        checker.error(
            format!("{path}.scope"),
            format!("\"{scope}\" must end with /.default for client credentials (AADSTS1002012), e.g. {default_scope}"),
        );
    }
    if transport == TransportKind::Graph {
        if !scope.contains("graph") {
            checker.warnings.push(format!(
                "{path}.scope = \"{scope}\" does not ask for a Microsoft Graph token; transport = \"graph\" needs {graph_scope}"
            ));
        }
    } else if scope.contains("graph.microsoft") {
        checker.warnings.push(format!(
            "{path}.scope = \"{scope}\" asks for a Microsoft Graph token; SMTP needs the Exchange Online one ({})",
            cloud.scope
        ));
    }
    let server = raw
        .smtp_server
        .clone()
        .unwrap_or_else(|| cloud.smtp_server.into());
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
            format!("\"{server}\" must be host:port, e.g. {}", cloud.smtp_server),
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
    if let (Some((_, 465)), Some(UpstreamTls::Starttls)) = (&host_port, smtp_tls) {
        checker.warnings.push(format!(
            "{path}.smtp_server: port 465 is not supported by Exchange Online for client submission; use 587"
        ));
    }
    let mut extra_roots = Vec::new();
    if let Some(ca_file) = &raw.ca_file {
        match crate::tls::load_certificates(&checker.resolve(ca_file)) {
            Ok(certs) => extra_roots = certs,
            Err(e) => checker.error(format!("{path}.ca_file"), e),
        }
    }
    let max_connections = if transport == TransportKind::Graph {
        let requests = raw.max_connections.unwrap_or(GRAPH_MAX_CONCURRENT_REQUESTS);
        if requests > GRAPH_MAX_CONCURRENT_REQUESTS {
            checker.warnings.push(format!(
                "{path}.max_connections = {requests}: Graph allows {GRAPH_MAX_CONCURRENT_REQUESTS} concurrent requests per mailbox (429 beyond); the relay uses {GRAPH_MAX_CONCURRENT_REQUESTS}"
            ));
        }
        requests.clamp(1, GRAPH_MAX_CONCURRENT_REQUESTS)
    } else {
        raw.max_connections.unwrap_or(3)
    };
    if transport == TransportKind::Smtp && !(1..=3).contains(&max_connections) {
        checker.error(
            format!("{path}.max_connections"),
            "must be 1, 2 or 3: Exchange Online allows 3 concurrent SMTP sessions per mailbox (432 4.3.2 beyond)",
        );
    }
    let max_messages_per_minute = raw.max_messages_per_minute.unwrap_or(30);
    if max_messages_per_minute > 30 {
        checker.warnings.push(format!(
            "{path}.max_messages_per_minute = {max_messages_per_minute}: Exchange Online throttles above 30 messages a minute per mailbox"
        ));
    }
    let max_recipients_per_message = raw.max_recipients_per_message.unwrap_or(500);
    if !(1..=1000).contains(&max_recipients_per_message) {
        checker.error(
            format!("{path}.max_recipients_per_message"),
            "must be between 1 and 1000 (Exchange Online allows 500 by default, 1000 at most)",
        );
    }
    let max_recipients_per_day = raw.max_recipients_per_day.unwrap_or(10_000);
    let renew_before = raw
        .renew_before
        .unwrap_or(crate::oauth::token::DEFAULT_RENEW_BEFORE);
    let (send_as, sender_name) = sending_identity(checker, &path, raw);
    let (smtp_host, smtp_port) = host_port?;
    Some(AccountSettings {
        name: name?,
        mailbox: mailbox?,
        tenant_id: tenant_id?,
        client_id: client_id?,
        credential: credential?,
        authority,
        scope,
        smtp_host,
        smtp_port,
        smtp_tls: smtp_tls?,
        transport,
        graph_endpoint,
        extra_roots,
        max_connections,
        max_messages_per_minute,
        max_recipients_per_message,
        max_recipients_per_day,
        renew_before,
        mailbox_budget: crate::config::instances::MailboxBudget {
            sessions: max_connections,
            messages_per_minute: max_messages_per_minute,
            recipients_per_day: max_recipients_per_day,
        },
        client_secret_expires: secret_expiry(checker, &path, raw),
        send_as,
        sender_name,
    })
}

/// `client_secret_expires`: a date, for a secret only; a warning from 30 days before it.
fn secret_expiry(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
) -> Option<std::time::SystemTime> {
    let text = raw.client_secret_expires.as_deref()?;
    let key = format!("{path}.client_secret_expires");
    if raw.client_certificate.is_some() {
        checker.error(
            key,
            "only applies to a client secret (the relay reads a certificate's expiry from the certificate itself)",
        );
        return None;
    }
    match crate::oauth::expiry::parse_date(text) {
        Ok(at) => {
            let expiry = crate::oauth::expiry::CredentialExpiry::secret(at);
            if let Some(warning) = expiry.warning(std::time::SystemTime::now()) {
                checker.warnings.push(format!("{key}: {warning}"));
            }
            Some(at)
        }
        Err(error) => {
            checker.error(
                key,
                format!("{error}: copy the date from the Expires column beside the secret (Entra admin center → App registrations → the app → Certificates & secrets)"),
            );
            None
        }
    }
}

fn credential(checker: &mut Checker<'_>, path: &str, raw: &RawAccount) -> Option<ClientCredential> {
    let given = [
        raw.client_secret.is_some(),
        raw.client_secret_file.is_some(),
        raw.client_secret_env.is_some(),
        raw.client_certificate.is_some(),
    ]
    .iter()
    .filter(|&&given| given)
    .count();
    if given == 0 {
        checker.error(
            format!("{path}.client_secret"),
            "is required (or client_secret_file, client_secret_env, client_certificate)",
        );
        return None;
    }
    if given > 1 {
        checker.error(
            format!("{path}.client_secret"),
            "give only one of client_secret, client_secret_file, client_secret_env, client_certificate",
        );
        return None;
    }
    if let Some(file) = &raw.client_certificate {
        let algorithm = match raw.client_assertion_algorithm.as_deref().unwrap_or("ps256") {
            "ps256" => AssertionAlgorithm::Ps256,
            "rs256" => AssertionAlgorithm::Rs256,
            other => {
                checker.error(
                    format!("{path}.client_assertion_algorithm"),
                    format!(
                        "\"{other}\" must be \"ps256\" (with x5t#S256) or \"rs256\" (with x5t)"
                    ),
                );
                return None;
            }
        };
        let file = checker.resolve(file);
        return match ClientCertificate::load(&file) {
            Ok(certificate) => {
                if let Some(warning) = certificate.expiry_warning(std::time::SystemTime::now()) {
                    checker
                        .warnings
                        .push(format!("{path}.client_certificate: {warning}"));
                }
                Some(ClientCredential::Certificate {
                    certificate: Arc::new(certificate),
                    algorithm,
                })
            }
            Err(e) => {
                checker.error(format!("{path}.client_certificate"), e);
                None
            }
        };
    }
    if raw.client_assertion_algorithm.is_some() {
        checker.error(
            format!("{path}.client_assertion_algorithm"),
            "only applies with client_certificate",
        );
    }
    let (key, secret) = if let Some(secret) = &raw.client_secret {
        ("client_secret", secret.expose().to_string())
    } else if let Some(file) = &raw.client_secret_file {
        let file = checker.resolve(file);
        match read_limited_text(&file, NAMED_FILE_LIMIT) {
            Ok(text) => (
                "client_secret_file",
                text.trim_end_matches(['\r', '\n']).to_string(),
            ),
            Err(e) => {
                checker.error(format!("{path}.client_secret_file"), e);
                return None;
            }
        }
    } else if let Some(var) = &raw.client_secret_env {
        match std::env::var(var) {
            Ok(value) => ("client_secret_env", value),
            Err(_) => {
                checker.error(
                    format!("{path}.client_secret_env"),
                    format!("the environment variable {var} is not set"),
                );
                return None;
            }
        }
    } else {
        return None;
    };
    if secret.trim().is_empty() {
        checker.error(format!("{path}.{key}"), "the client secret is empty");
        return None;
    }
    if let Some(fix) = super::placeholders::client_secret(&secret) {
        checker.error(format!("{path}.{key}"), fix);
        return None;
    }
    if is_guid(secret.trim()) {
        checker.warnings.push(format!(
            "{path}.{key}: the secret looks like a GUID, which is usually the secret's ID; Entra wants its Value (AADSTS7000215 otherwise)"
        ));
    }
    // Entra secret values never contain white space: around it, it is a paste mistake.
    let secret = if secret.trim() != secret {
        checker.warnings.push(format!(
            "{path}.{key}: white space around the secret was removed (Entra secret values have none)"
        ));
        secret.trim().to_string()
    } else {
        secret
    };
    if secret.contains(char::is_whitespace) {
        checker.warnings.push(format!(
            "{path}.{key}: the secret contains white space; Entra secret values have none, so it was probably pasted wrongly (AADSTS7000215 otherwise)"
        ));
    }
    Some(ClientCredential::Secret(Secret::new(secret)))
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
