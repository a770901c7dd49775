//! Validation of the Microsoft side of an `[[account]]` (the default `provider`): the tenant
//! and app, the credential (a secret inline, from a file or the environment, or a
//! certificate), the cloud presets, the transport (`graph`: the Graph scope and endpoint), the
//! secret's expiry date and the per-mailbox limits Exchange and Graph enforce. Every problem is reported by key path with the fix in the admin's words.

use super::accounts::{AccountIdentity, DeliveryRoute};
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

/// The Entra side of a Microsoft account: tenant, app, credential, cloud, authority, scope
/// (Exchange's, or Graph's with `transport = "graph"`); and its [`DeliveryRoute`].
pub(super) fn identity(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
) -> (Option<AccountIdentity>, DeliveryRoute) {
    for (key, given) in [
        ("service_account_key", raw.service_account_key.is_some()),
        (
            "service_account_key_env",
            raw.service_account_key_env.is_some(),
        ),
    ] {
        if given {
            checker.error(
                format!("{path}.{key}"),
                "only applies with provider = \"google\"",
            );
        }
    }
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
    let credential = credential(checker, path, raw);
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
    let transport = transport_kind(checker, path, raw);
    let graph_endpoint = graph_endpoint(checker, path, raw, cloud, transport);
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
    let identity = (|| {
        Some(AccountIdentity {
            tenant_id: tenant_id?,
            client_id: client_id?,
            credential: credential?,
            authority,
            scope,
        })
    })();
    let route = DeliveryRoute {
        default_smtp_server: cloud.smtp_server,
        transport,
        graph_endpoint,
    };
    (identity, route)
}

/// Exchange Online's per-mailbox limits: sessions (Graph: concurrent requests), messages a
/// minute, recipients per message and per day (exchange-online.md §3, graph.md §4).
pub(super) fn exchange_limits(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
    transport: TransportKind,
) -> (usize, u32, usize, u32) {
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
    (
        max_connections,
        max_messages_per_minute,
        max_recipients_per_message,
        max_recipients_per_day,
    )
}

/// `client_secret_expires`: a date, for a secret only; a warning from 30 days before it.
pub(super) fn secret_expiry(
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
