//! Validation of the Google side of an `[[account]]` with `provider = "google"`: the service
//! account key (`service_account_key`, or `service_account_key_env` naming a variable that
//! holds the JSON or the file's path), checked for what is wrong with it without printing it;
//! the Microsoft-only keys refused; and Gmail's per-user limits as the account's defaults.
//!
//! Defaults and their sources (support.google.com/a/answer/166852, "Gmail sending limits in
//! Google Workspace", via google-workspace.md §6):
//! - `max_recipients_per_message` = 100: recipients per message sent over SMTP by POP/IMAP
//!   users, smtp.gmail.com included (older versions of the page: 99);
//! - `max_recipients_per_day` = 10,000: total recipients per user per rolling 24 h;
//! - `max_connections` = 3: Google documents no per-user session limit; 3 sessions reused for
//!   many messages stay clear of "454 4.7.0 Too many login attempts" (an inference);
//! - `max_messages_per_day` = 2,000: messages per user per rolling 24 h (trial accounts: 500);
//!   the relay holds what does not fit until the window slides, and should Gmail still answer
//!   `550 5.4.5`, the account pauses until the window allows (nothing bounced);
//! - `max_messages_per_minute` = 0 (no pacing): Gmail documents no per-minute limit.

use super::*;
use crate::oauth::app::ClientCredential;
use crate::oauth::google::GMAIL_SCOPE;
use crate::oauth::google::key::ServiceAccountKey;

/// Gmail's submission server, the default `smtp_server` of a Google account.
pub(super) const GMAIL_SMTP_SERVER: &str = "smtp.gmail.com:587";
/// Recipients per message over SMTP (support.google.com/a/answer/166852).
pub const GMAIL_RECIPIENTS_PER_MESSAGE: usize = 100;
/// Recipients per user per rolling 24 h (support.google.com/a/answer/166852).
pub const GMAIL_RECIPIENTS_PER_DAY: u32 = 10_000;
/// Messages per user per rolling 24 h (support.google.com/a/answer/166852; trial accounts:
/// 500): the default `max_messages_per_day` of a Google account.
pub const GMAIL_MESSAGES_PER_DAY: u32 = 2_000;

/// The keys that belong to Microsoft accounts only.
fn microsoft_only_keys(raw: &RawAccount) -> [(&'static str, bool); 11] {
    [
        ("tenant_id", raw.tenant_id.is_some()),
        ("client_id", raw.client_id.is_some()),
        ("client_secret", raw.client_secret.is_some()),
        ("client_secret_file", raw.client_secret_file.is_some()),
        ("client_secret_env", raw.client_secret_env.is_some()),
        ("client_certificate", raw.client_certificate.is_some()),
        (
            "client_assertion_algorithm",
            raw.client_assertion_algorithm.is_some(),
        ),
        ("authority", raw.authority.is_some()),
        ("cloud", raw.cloud.is_some()),
        ("client_secret_expires", raw.client_secret_expires.is_some()),
        ("graph_endpoint", raw.graph_endpoint.is_some()),
    ]
}

/// How a Google account's mail leaves: SMTP to Gmail (there is no Graph for Google), so a
/// `transport` other than `"smtp"` is an error.
pub(super) fn route(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
) -> accounts::DeliveryRoute {
    if let Some(transport) = raw.transport.as_deref()
        && transport != "smtp"
    {
        checker.error(
            format!("{path}.transport"),
            format!("\"{transport}\" does not apply with provider = \"google\": Google accounts deliver over SMTP to Gmail (remove transport, or set it to \"smtp\")"),
        );
    }
    accounts::DeliveryRoute {
        default_smtp_server: GMAIL_SMTP_SERVER,
        transport: crate::config::TransportKind::Smtp,
        graph_endpoint: crate::config::DEFAULT_GRAPH_ENDPOINT.to_string(),
    }
}

/// The service account key and the subject (`mailbox`), as the account's identity.
pub(super) fn identity(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
    mailbox: Option<&Address>,
) -> Option<accounts::AccountIdentity> {
    for (key, given) in microsoft_only_keys(raw) {
        if given {
            checker.error(
                format!("{path}.{key}"),
                "only applies to Microsoft accounts; a Google account needs mailbox and service_account_key (or service_account_key_env)",
            );
        }
    }
    let scope = raw.scope.clone().unwrap_or_else(|| GMAIL_SCOPE.to_owned());
    if scope != GMAIL_SCOPE {
        checker.error(
            format!("{path}.scope"),
            format!("must be {GMAIL_SCOPE}: Gmail's SMTP accepts no other scope (gmail.send works only for the Gmail API)"),
        );
    }
    let key = match (&raw.service_account_key, &raw.service_account_key_env) {
        (None, None) => {
            checker.error(
                format!("{path}.service_account_key"),
                "is required for provider = \"google\" (or service_account_key_env): the service account's JSON key file",
            );
            None
        }
        (Some(_), Some(_)) => {
            checker.error(
                format!("{path}.service_account_key"),
                "give only one of service_account_key and service_account_key_env",
            );
            None
        }
        (Some(file), None) => {
            let file = checker.resolve(file);
            match ServiceAccountKey::load(&file) {
                Ok(key) => {
                    if let Some(mode) = readable_by_others(&file) {
                        checker.warnings.push(format!(
                            "{path}.service_account_key: {} can be read by other users (mode {mode:o}), and the key can send as any user of the domain: chmod 600 it (owned by the relay's user)",
                            file.display()
                        ));
                    }
                    Some(key)
                }
                Err(e) => {
                    checker.error(
                        format!("{path}.service_account_key"),
                        format!("{} {e}", file.display()),
                    );
                    None
                }
            }
        }
        (None, Some(var)) => key_from_env(checker, path, var),
    }?;
    if let Some(mailbox) = mailbox
        && mailbox.as_str().eq_ignore_ascii_case(&key.client_email)
    {
        checker.error(
            format!("{path}.mailbox"),
            "is the service account's own address: set it to the Workspace user the relay sends as (Google answers \"Invalid email or User ID\" otherwise)",
        );
        return None;
    }
    let subject = mailbox?.to_string();
    Some(accounts::AccountIdentity {
        tenant_id: String::new(),
        client_id: key.client_id.clone(),
        credential: ClientCredential::ServiceAccount {
            key: Arc::new(key),
            subject,
        },
        authority: String::new(),
        scope,
    })
}

/// The file's permission bits when users other than its owner may read it.
fn readable_by_others(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// `service_account_key_env`: the variable holds the key's JSON or the path of the key file.
fn key_from_env(checker: &mut Checker<'_>, path: &str, var: &str) -> Option<ServiceAccountKey> {
    let key = format!("{path}.service_account_key_env");
    let Ok(value) = std::env::var(var) else {
        checker.error(key, format!("the environment variable {var} is not set"));
        return None;
    };
    let loaded = if value.trim_start().starts_with('{') {
        ServiceAccountKey::from_json(&value).map_err(|e| format!("the value of {var} {e}"))
    } else {
        let file = checker.resolve(Path::new(value.trim()));
        ServiceAccountKey::load(&file)
            .map_err(|e| format!("{var} names {}, which {e}", file.display()))
    };
    loaded.map_err(|e| checker.error(key, e)).ok()
}

/// Gmail's limits: (sessions, messages a minute, recipients per message, recipients a day).
pub(super) fn gmail_limits(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
) -> (usize, u32, usize, u32) {
    let max_connections = raw.max_connections.unwrap_or(3);
    if !(1..=10).contains(&max_connections) {
        checker.error(
            format!("{path}.max_connections"),
            "must be between 1 and 10: Gmail answers many parallel logins with 454 4.7.0 Too many login attempts",
        );
    }
    let max_recipients_per_message = raw
        .max_recipients_per_message
        .unwrap_or(GMAIL_RECIPIENTS_PER_MESSAGE);
    if !(1..=GMAIL_RECIPIENTS_PER_MESSAGE).contains(&max_recipients_per_message) {
        checker.error(
            format!("{path}.max_recipients_per_message"),
            "must be between 1 and 100: Gmail takes at most 100 recipients per message over SMTP (452 4.5.3 beyond)",
        );
    }
    let max_recipients_per_day = raw
        .max_recipients_per_day
        .unwrap_or(GMAIL_RECIPIENTS_PER_DAY);
    if max_recipients_per_day > GMAIL_RECIPIENTS_PER_DAY {
        checker.warnings.push(format!(
            "{path}.max_recipients_per_day = {max_recipients_per_day}: Gmail allows {GMAIL_RECIPIENTS_PER_DAY} recipients per user per day, then refuses with 550 5.4.5 for up to 24 hours"
        ));
    }
    let max_messages_per_minute = raw.max_messages_per_minute.unwrap_or(0);
    (
        max_connections,
        max_messages_per_minute,
        max_recipients_per_message,
        max_recipients_per_day,
    )
}
