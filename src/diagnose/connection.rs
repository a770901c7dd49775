//! The connection and TLS steps of `check`: TCP, greeting, STARTTLS (or implicit TLS), the
//! TLS version and certificate, and whether AUTH XOAUTH2 is offered, each failure with the fix
//! naming the account's provider's server (Exchange Online or Gmail).

use super::{Step, google, tls_probe};
use crate::config::AccountSettings;
use crate::vocab::provider::Provider;

/// The connection and TLS steps; true when AUTH can be tried.
pub(super) fn connection_steps(
    account: &AccountSettings,
    probe: &Result<tls_probe::TlsReport, tls_probe::ProbeError>,
    steps: &mut Vec<Step>,
) -> bool {
    let server = format!("{}:{}", account.smtp_host, account.smtp_port);
    match probe {
        Err(error) if matches!(error.stage, "connect" | "greeting" | "ehlo" | "starttls") => {
            steps.push(Step::failed(
                "connection",
                format!("{server}: {error}"),
                vec![format!(
                    "check smtp_server ({server}), DNS, and that outbound TCP port {} is open; {} uses {} with STARTTLS",
                    account.smtp_port,
                    account.provider.mail_service(),
                    default_server(account)
                )],
            ));
            steps.push(Step::skipped("tls", "no connection"));
            false
        }
        Err(error) => {
            let detail = error.to_string();
            let plain_server = account.smtp_tls == crate::config::UpstreamTls::Implicit
                && (detail.contains("InvalidContentType") || detail.contains("corrupt message"));
            if plain_server {
                steps.push(Step::ok("connection", format!("{server} answers")));
                steps.push(Step::failed(
                    "tls",
                    detail,
                    vec![format!(
                        "smtp_tls = \"implicit\" starts TLS at once (port 465 style), but {server} speaks plain SMTP first: use smtp_tls = \"starttls\" ({}: {})",
                        account.provider.mail_service(),
                        default_server(account)
                    )],
                ));
                return false;
            }
            steps.push(Step::ok(
                "connection",
                format!("{server} answers and offers STARTTLS"),
            ));
            steps.push(Step::failed(
                "tls",
                detail,
                vec![
                    format!(
                        "check that smtp_server names the host the certificate is for ({})",
                        account.smtp_host
                    ),
                    "behind a TLS-inspecting proxy, put the proxy's root certificate in ca_file"
                        .into(),
                ],
            ));
            false
        }
        Ok(report) if account.smtp_tls == crate::config::UpstreamTls::None => {
            steps.push(Step::ok(
                "connection",
                format!(
                    "{server}: {}",
                    crate::vocab::text::one_line_excerpt(&report.greeting, 120)
                ),
            ));
            steps.push(Step::failed(
                "tls",
                "smtp_tls = \"none\": no TLS, so the access token would cross the network in clear",
                vec![format!("set smtp_tls = \"starttls\": {} requires it (\"none\" is for local tests only)", account.provider.mail_service())],
            ));
            // AUTH is still tried, to tell the rest of the story.
            true
        }
        Ok(report) => {
            steps.push(Step::ok(
                "connection",
                format!(
                    "{server}: {}",
                    crate::vocab::text::one_line_excerpt(&report.greeting, 120)
                ),
            ));
            let days = report.certificate_not_after.map(tls_probe::days_left);
            let detail = format!(
                "{} {}, certificate {} valid for {} more days; AUTH offered: {}",
                report.tls_version,
                report.cipher,
                report.certificate_subject,
                days.map_or("?".into(), |d| d.to_string()),
                if report.auth_mechanisms.is_empty() {
                    "none".into()
                } else {
                    report.auth_mechanisms.join(" ")
                }
            );
            if !report.auth_mechanisms.iter().any(|m| m == "XOAUTH2") {
                steps.push(Step::failed(
                    "tls",
                    detail,
                    vec![format!(
                        "the server does not offer AUTH XOAUTH2 after STARTTLS: is smtp_server a {} submission endpoint ({})?",
                        account.provider.mail_service(),
                        default_server(account)
                    )],
                ));
                return false;
            }
            steps.push(Step::ok("tls", detail));
            true
        }
    }
}

/// The SMTP server of `account`'s provider, as the fixes name it.
fn default_server(account: &AccountSettings) -> &'static str {
    match account.provider {
        Provider::Microsoft => "smtp.office365.com:587",
        Provider::Google => google::GMAIL_SERVER,
    }
}
