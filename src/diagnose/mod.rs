//! `check` and `send-test`: diagnose the whole chain of each account, step by step, and say
//! what to change where when a step fails. For a Google account (`google`) the credential
//! step is the service account key, the token step decodes Google's refusals with the
//! domain-wide delegation checklist, there are no token claims to read, and the fixes name
//! Gmail's server.
//!
//! Steps: token request (decoded AADSTS error on failure), the token's claims (audience,
//! `SMTP.SendAsApp`, tenant, app), TCP and STARTTLS to the SMTP host, TLS (version,
//! certificate), `AUTH XOAUTH2` (the exchange-online.md §0 checklist on `535 5.7.3`, the exact
//! `Set-CASMailbox` line on `5.7.139`), and a `MAIL FROM` probe followed by `RSET` (nothing is
//! sent). `check --from ADDR` first says which account the relay would choose for ADDR (its
//! mailbox or `send_as`, [`accounts_for_sender`]) and probes `MAIL FROM:<ADDR>` with it.
//! Exchange checks SendAs only at the end of DATA, so the probe cannot prove that right;
//! `send-test --from ADDR` does, by sending. Authentication and the probe use the relay's own SMTP transport
//! (`transport::smtp`), so `check` tests the path mail takes; a second transport brings its
//! own steps here: `graph` for `transport = "graph"`. No secret or token is printed.

pub mod tls_probe;

mod connection;
mod google;
mod graph;
mod sender_route;

use connection::connection_steps;

pub use sender_route::{accounts_for_sender, check_sender};

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::AccountSettings;
use crate::metrics::Metrics;
use crate::oauth::app::ClientCredential;
use crate::oauth::claims;
use crate::oauth::token::{AccessToken, TokenError, TokenProvider};
use crate::transport::smtp::{SmtpFailure, SmtpSession, SmtpTransport};
use crate::vocab::address::Address;
use crate::vocab::provider::Provider;

/// One step of the diagnosis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: &'static str,
    /// `ok`, `failed` or `skipped`.
    pub status: &'static str,
    pub detail: String,
    /// What to change, where, when the step failed.
    pub fix: Vec<String>,
}

impl Step {
    fn ok(step: &'static str, detail: impl Into<String>) -> Step {
        Step {
            step,
            status: "ok",
            detail: detail.into(),
            fix: Vec::new(),
        }
    }

    fn failed(step: &'static str, detail: impl Into<String>, fix: Vec<String>) -> Step {
        Step {
            step,
            status: "failed",
            detail: detail.into(),
            fix,
        }
    }

    fn skipped(step: &'static str, detail: impl Into<String>) -> Step {
        Step {
            step,
            status: "skipped",
            detail: detail.into(),
            fix: Vec::new(),
        }
    }
}

/// The diagnosis of one account.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountReport {
    pub account: String,
    /// `microsoft` or `google`.
    pub provider: &'static str,
    pub mailbox: String,
    pub smtp_server: String,
    pub ok: bool,
    pub steps: Vec<Step>,
}

/// Run every step for `account`.
pub async fn check_account(account: &AccountSettings, hostname: &str) -> AccountReport {
    check_account_as(account, hostname, None).await
}

/// Run every step for `account`, probing `MAIL FROM:<sender>` (default: the mailbox).
pub(super) async fn check_account_as(
    account: &AccountSettings,
    hostname: &str,
    sender: Option<&Address>,
) -> AccountReport {
    if account.transport == crate::config::TransportKind::Graph {
        return graph::check_graph_account(account, sender).await;
    }
    let google = account.provider == Provider::Google;
    let mut steps = vec![if google {
        google::key_step(account)
    } else {
        credential_step(account, SystemTime::now())
    }];
    let token = token_step(account, &mut steps).await;
    let decoded = token
        .as_ref()
        .filter(|_| !google)
        .and_then(|t| claims::decode(t.secret().expose()));
    match (&token, &decoded) {
        (None, _) => steps.push(Step::skipped("token claims", "no token")),
        (Some(_), None) if google => steps.push(google::claims_step()),
        (Some(_), None) => steps.push(Step::skipped(
            "token claims",
            "the token is not a readable JWT (that is allowed; nothing to check)",
        )),
        (Some(_), Some(claims)) => steps.push(claims_step(account, claims)),
    }
    let probe = tls_probe::probe(
        &account.smtp_host,
        account.smtp_port,
        account.smtp_tls,
        &account.extra_roots,
        hostname,
    )
    .await;
    let reachable = connection_steps(account, &probe, &mut steps);
    let session = match (&token, reachable) {
        (Some(token), true) => {
            auth_step(account, hostname, token, decoded.as_ref(), &mut steps).await
        }
        (None, _) => {
            steps.push(Step::skipped("auth", "no token"));
            None
        }
        (_, false) => {
            steps.push(Step::skipped(
                "auth",
                "the server was not reachable over TLS",
            ));
            None
        }
    };
    match session {
        Some(mut session) => {
            steps.push(sender_step(account, sender, &mut session).await);
            session.quit().await;
        }
        None => steps.push(Step::skipped("sender probe", "not authenticated")),
    }
    AccountReport {
        account: account.name.clone(),
        provider: account.provider.name(),
        mailbox: account.mailbox.to_string(),
        smtp_server: format!("{}:{}", account.smtp_host, account.smtp_port),
        ok: steps.iter().all(|s| s.status != "failed"),
        steps,
    }
}

/// How long the account's credential has left: a certificate's `notAfter`, a secret's
/// `client_secret_expires`, or a plain note that no date is configured for the secret.
/// Expired fails (no token can be fetched); expiring soon is still ok (mail flows).
fn credential_step(account: &AccountSettings, now: SystemTime) -> Step {
    match account.credential_expiry() {
        None => Step::skipped(
            "credential",
            "no expiry date is configured for the client secret: add client_secret_expires = \"YYYY-MM-DD\" from the Entra portal's Certificates & secrets page (the Expires column beside the secret), so the relay warns 30 days before it stops working",
        ),
        Some(expiry) if expiry.is_expired(now) => Step::failed(
            "credential",
            expiry.summary(now),
            vec![expiry.warning(now).unwrap_or_default()],
        ),
        Some(expiry) => {
            let days = expiry.days_left(now);
            let mut detail = format!("{}; {days} days left", expiry.summary(now));
            if let Some(warning) = expiry.warning(now) {
                detail = format!("{detail}. {warning}");
            }
            Step::ok("credential", detail)
        }
    }
}

async fn token_step(account: &AccountSettings, steps: &mut Vec<Step>) -> Option<AccessToken> {
    let provider = match TokenProvider::new(&account.client_app(), Arc::new(Metrics::new())) {
        Ok(provider) => provider,
        Err(e) => {
            steps.push(Step::failed("token", e, vec!["check ca_file".into()]));
            return None;
        }
    };
    let credential = match &account.credential {
        ClientCredential::Secret(_) => "client secret".to_string(),
        ClientCredential::Certificate {
            certificate,
            algorithm,
        } => format!(
            "certificate {} ({}, expires in {} days)",
            certificate.sha1_thumbprint_hex(),
            algorithm.jws_name(),
            certificate.days_until_expiry(SystemTime::now())
        ),
        ClientCredential::ServiceAccount { key, subject } => format!(
            "service account {} (client ID {}, key {}) acting for {subject}",
            key.client_email,
            key.client_id,
            key.private_key_id.get(..8).unwrap_or("-")
        ),
    };
    match provider.token().await {
        Ok(token) => {
            let minutes = token
                .expires_at
                .duration_since(SystemTime::now())
                .map_or(0, |d| d.as_secs() / 60);
            steps.push(Step::ok(
                "token",
                format!(
                    "obtained from {} with the {credential}; valid for {minutes} min",
                    account.token_endpoint()
                ),
            ));
            Some(token)
        }
        Err(error) => {
            let fix = match &error {
                TokenError::RefusedByGoogle(refusal)
                    if matches!(
                        refusal.error(),
                        Some("unauthorized_client" | "access_denied")
                    ) =>
                {
                    google::delegation_checklist(account)
                }
                TokenError::Unreachable(_) => vec![format!(
                    "make sure this host can reach {} over HTTPS (DNS, firewall, proxy: HTTPS_PROXY)",
                    account.token_endpoint()
                )],
                other => vec![other.fix().to_string()],
            };
            steps.push(Step::failed(
                "token",
                format!("{error} (credential: {credential})"),
                fix,
            ));
            None
        }
    }
}

fn claims_step(account: &AccountSettings, decoded: &claims::TokenClaims) -> Step {
    let detail = format!(
        "aud {}, roles [{}], tid {}, appid {}, oid {} (the service principal's object id)",
        decoded.aud.as_deref().unwrap_or("-"),
        decoded.roles.join(", "),
        decoded.tid.as_deref().unwrap_or("-"),
        decoded.app_id.as_deref().unwrap_or("-"),
        decoded.oid.as_deref().unwrap_or("-"),
    );
    let problems = claims::problems(
        decoded,
        &account.client_id,
        &account.tenant_id,
        &account.scope,
    );
    if problems.is_empty() {
        Step::ok("token claims", detail)
    } else {
        let what: Vec<String> = problems.iter().map(|p| p.what.clone()).collect();
        Step::failed(
            "token claims",
            format!("{}; {detail}", what.join("; ")),
            problems.into_iter().map(|p| p.fix).collect(),
        )
    }
}

/// The §0 checklist of exchange-online.md, filled in with this account's values.
fn checklist(account: &AccountSettings, decoded: Option<&claims::TokenClaims>) -> Vec<String> {
    let oid = decoded
        .and_then(|c| c.oid.clone())
        .unwrap_or_else(|| "<Enterprise application object id>".into());
    let mailbox = &account.mailbox;
    vec![
        "the token must carry SMTP.SendAsApp (see \"token claims\"): API permission Office 365 Exchange Online → Application → SMTP.SendAsApp, with admin consent".into(),
        format!(
            "Exchange must know the app: New-ServicePrincipal -AppId {} -ObjectId {oid} (the Enterprise application's object id, not the App registration's)",
            account.client_id
        ),
        format!("the app must have FullAccess on the mailbox: Add-MailboxPermission -Identity {mailbox} -User {oid} -AccessRights FullAccess"),
        format!("mailbox = \"{mailbox}\" must be the mailbox those permissions name (its primary address, no typo)"),
        "changes take 15 to 60 minutes (sometimes 2 hours) to apply; the relay keeps mail queued meanwhile".into(),
    ]
}

async fn auth_step(
    account: &AccountSettings,
    hostname: &str,
    token: &AccessToken,
    decoded: Option<&claims::TokenClaims>,
    steps: &mut Vec<Step>,
) -> Option<SmtpSession> {
    let upstream = match SmtpTransport::new(account, hostname) {
        Ok(upstream) => upstream,
        Err(e) => {
            steps.push(Step::failed("auth", e, vec!["check ca_file".into()]));
            return None;
        }
    };
    match upstream.open(token).await {
        Ok(session) => {
            steps.push(Step::ok(
                "auth",
                format!("AUTH XOAUTH2 as {} accepted", account.mailbox),
            ));
            Some(session)
        }
        Err(failure) => {
            steps.push(auth_failure(account, &failure, decoded));
            None
        }
    }
}

fn auth_failure(
    account: &AccountSettings,
    failure: &SmtpFailure,
    decoded: Option<&claims::TokenClaims>,
) -> Step {
    let verdict = failure.verdict();
    let text = failure.to_string();
    let fix = if account.provider == Provider::Google {
        if failure.reply_code() == Some(535) {
            google::delegation_checklist(account)
        } else if verdict.fix.is_empty() {
            Vec::new()
        } else {
            vec![verdict.fix.to_string()]
        }
    } else if text.contains("5.7.139") {
        vec![
            format!("Set-CASMailbox -Identity {} -SmtpClientAuthenticationDisabled $false", account.mailbox),
            "if SMTP AUTH is off for the whole tenant and you want it on for all: Set-TransportConfig -SmtpClientAuthenticationDisabled $false".into(),
            "then wait: changes take 15 to 60 minutes to apply, sometimes up to two hours".into(),
        ]
    } else if text.contains("5.7.3") {
        checklist(account, decoded)
    } else if verdict.fix.is_empty() {
        Vec::new()
    } else {
        vec![verdict.fix.to_string()]
    };
    Step::failed("auth", format!("{text} ({})", verdict.reason), fix)
}

async fn sender_step(
    account: &AccountSettings,
    sender: Option<&Address>,
    session: &mut SmtpSession,
) -> Step {
    let address = sender.unwrap_or(&account.mailbox);
    let is_mailbox = account.mailbox.eq_ignore_case(address.as_str());
    match session.probe_sender(address).await {
        Ok(reply) if is_mailbox && account.provider == Provider::Google => Step::ok(
            "sender probe",
            format!(
                "MAIL FROM:<{address}> → {reply}; RSET, nothing was sent (send-test proves the whole way by sending one message)"
            ),
        ),
        Ok(reply) if is_mailbox => Step::ok(
            "sender probe",
            format!(
                "MAIL FROM:<{address}> → {reply}; RSET, nothing was sent (SendAs rights are only checked when a message is sent: use send-test)"
            ),
        ),
        Ok(reply) if account.provider == Provider::Google => Step::ok(
            "sender probe",
            format!(
                "MAIL FROM:<{address}> → {reply}; RSET, nothing was sent. {}",
                google::sender_probe_note(account, address.as_str())
            ),
        ),
        Ok(reply) => Step::ok(
            "sender probe",
            format!(
                "MAIL FROM:<{address}> → {reply}; RSET, nothing was sent. This proves the token, AUTH as {} and that Exchange takes the address at MAIL FROM; it cannot prove SendAs: Exchange checks that only at the end of DATA (554 5.2.252 SendAsDenied when missing). `send-test --from {address} --to YOU` proves the rest by sending one message",
                account.mailbox
            ),
        ),
        Err(failure) => {
            let verdict = failure.verdict();
            Step::failed(
                "sender probe",
                failure.to_string(),
                vec![
                    verdict
                        .fix
                        .replace("<mailbox>", account.mailbox.as_str())
                        .replace("<sender>", address.as_str()),
                ],
            )
        }
    }
}

/// The test message of `send-test`.
pub fn test_message(from: &Address, to: &Address, hostname: &str, provider: Provider) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    let random: [u8; 8] = crate::vocab::random::unique_bytes();
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: smtp-oauth-relay test message\r\nDate: {}\r\n\
         Message-ID: <test.{}@{hostname}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         This is a test message sent by smtp-oauth-relay on {hostname} with `send-test`.\r\n\
         It went straight to {} (not through the queue).\r\n",
        crate::message::rfc5322_date(now),
        crate::vocab::hex::lower(&random),
        provider.mail_service(),
    )
    .into_bytes()
}
