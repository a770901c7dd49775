//! Credentials with an expiry date: a client secret (`client_secret_expires`, the date Entra
//! shows beside it) or a certificate (its `notAfter`). One type, [`CredentialExpiry`], for what
//! `check`, the daily log warning ([`watch_credential_expiry`]), `/metrics` and the status page
//! say about either.
//!
//! Invariants: nothing here holds or prints a secret's value (only its configured date); from
//! [`EXPIRY_WARNING_WINDOW`] before the date the warning is logged once a day (an error once the
//! date has passed), and an expiring credential never makes the relay unready (it is not an
//! outage yet).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::app::ClientCredential;
use super::entra::certificate::ClientCertificate;

pub use super::entra::certificate::EXPIRY_WARNING_WINDOW;

const SECONDS_PER_DAY: i64 = 86_400;

/// What a secret's warning tells the administrator to do.
const ROTATE_SECRET: &str = "create a new client secret (Entra admin center → App registrations → the app → \
     Certificates & secrets → New client secret), put its Value in client_secret (or the \
     client_secret_file), set client_secret_expires to its new date, reload the relay \
     (SIGHUP), then delete the old secret";

/// Which kind of credential expires (the `kind` label of the expiry metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Secret,
    Certificate,
}

impl CredentialKind {
    /// `secret` or `certificate`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Secret => "secret",
            CredentialKind::Certificate => "certificate",
        }
    }
}

/// A credential and the moment it stops working.
#[derive(Debug, Clone)]
pub struct CredentialExpiry {
    pub kind: CredentialKind,
    pub expires_at: SystemTime,
    certificate: Option<Arc<ClientCertificate>>,
}

impl CredentialExpiry {
    /// A client secret that stops working at `expires_at`.
    pub fn secret(expires_at: SystemTime) -> CredentialExpiry {
        CredentialExpiry {
            kind: CredentialKind::Secret,
            expires_at,
            certificate: None,
        }
    }

    /// The expiry of `credential`: a certificate's own, a secret's configured date
    /// (`secret_expires`); `None` for a secret without a date.
    pub fn of(
        credential: &ClientCredential,
        secret_expires: Option<SystemTime>,
    ) -> Option<CredentialExpiry> {
        match credential {
            ClientCredential::Secret(_) => secret_expires.map(CredentialExpiry::secret),
            // A service account key's expiry (if an organisation policy sets one) is not in
            // the key file.
            ClientCredential::ServiceAccount { .. } => None,
            ClientCredential::Certificate { certificate, .. } => Some(CredentialExpiry {
                kind: CredentialKind::Certificate,
                expires_at: certificate.not_after(),
                certificate: Some(Arc::clone(certificate)),
            }),
        }
    }

    /// Whole days left at `now` (rounded down; negative once expired).
    pub fn days_left(&self, now: SystemTime) -> i64 {
        seconds_between(now, self.expires_at).div_euclid(SECONDS_PER_DAY)
    }

    /// Whether the credential no longer works at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// The expiry as unix seconds (the metric's value).
    pub fn unix_seconds(&self) -> i64 {
        seconds_between(UNIX_EPOCH, self.expires_at)
    }

    /// `2027-06-30` (UTC).
    pub fn date(&self) -> String {
        let text = humantime::format_rfc3339_seconds(self.expires_at).to_string();
        text.get(..10).unwrap_or(&text).to_string()
    }

    /// One line for `check` and the status page: what the credential is and when it expires.
    pub fn summary(&self, now: SystemTime) -> String {
        let what = match (&self.certificate, self.kind) {
            (Some(certificate), _) => {
                format!(
                    "the client certificate {}",
                    certificate.sha1_thumbprint_hex()
                )
            }
            (None, _) => "the client secret".to_string(),
        };
        let date = self.date();
        match self.days_left(now) {
            _ if self.is_expired(now) => format!("{what} expired on {date}"),
            0 => format!("{what} expires on {date} (in less than a day)"),
            1 => format!("{what} expires on {date} (in 1 day)"),
            days => format!("{what} expires on {date} (in {days} days)"),
        }
    }

    /// From [`EXPIRY_WARNING_WINDOW`] before the expiry on, a one-line message naming the
    /// credential, the date and what to do; `None` before that. Log it as a warning, or as an
    /// error when [`CredentialExpiry::is_expired`] (every token request then fails).
    pub fn warning(&self, now: SystemTime) -> Option<String> {
        if let Some(certificate) = &self.certificate {
            return certificate.expiry_warning(now);
        }
        let window = i64::try_from(EXPIRY_WARNING_WINDOW.as_secs()).unwrap_or(i64::MAX);
        if seconds_between(now, self.expires_at) > window {
            return None;
        }
        let summary = self.summary(now);
        Some(if self.is_expired(now) {
            format!(
                "{summary}: Entra refuses it (AADSTS7000222), so no token can be fetched and mail stays queued; {ROTATE_SECRET}"
            )
        } else {
            format!(
                "{summary}; after that no token can be fetched (AADSTS7000222): {ROTATE_SECRET}"
            )
        })
    }
}

/// `YYYY-MM-DD` (the date Entra shows beside a secret) as its first second, UTC.
///
/// # Errors
/// A sentence saying what is wrong with `text`.
pub fn parse_date(text: &str) -> Result<SystemTime, String> {
    let invalid = || format!("\"{text}\" is not a date like 2027-06-30 (YYYY-MM-DD)");
    let parts: Vec<&str> = text.trim().split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(invalid());
    };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return Err(invalid());
    }
    let year: i32 = year.parse().map_err(|_| invalid())?;
    let month: u8 = month.parse().map_err(|_| invalid())?;
    let day: u8 = day.parse().map_err(|_| invalid())?;
    let month = time::Month::try_from(month).map_err(|_| invalid())?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| invalid())?;
    let seconds = date.midnight().assume_utc().unix_timestamp();
    let seconds = u64::try_from(seconds).map_err(|_| invalid())?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// `to - from` in whole seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Log, daily, how long the account's credential has left, from [`EXPIRY_WARNING_WINDOW`]
/// before it expires (an error once it has expired); nothing for a credential without a date.
/// Ends with `cancel`.
pub async fn watch_credential_expiry(
    account: String,
    expiry: Option<CredentialExpiry>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let Some(expiry) = expiry else {
        return;
    };
    loop {
        let now = SystemTime::now();
        if let Some(warning) = expiry.warning(now) {
            let kind = expiry.kind.as_str();
            if expiry.is_expired(now) {
                tracing::error!(%account, credential = kind, "{warning}");
            } else {
                tracing::warn!(%account, credential = kind, days_left = expiry.days_left(now), "{warning}");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vocab::secret::Secret;

    fn secret_expiring(at: SystemTime) -> CredentialExpiry {
        CredentialExpiry::of(&ClientCredential::Secret(Secret::new("s")), Some(at)).unwrap()
    }

    #[test]
    fn dates_parse_as_the_first_second_utc() {
        let cases: &[(&str, Option<u64>)] = &[
            ("2027-06-30", Some(1_814_313_600)),
            ("1970-01-01", Some(0)),
            (" 2024-02-29 ", Some(1_709_164_800)),
            ("2023-02-29", None),
            ("2027-6-30", None),
            ("30.06.2027", None),
            ("2027-06-30T00:00:00Z", None),
            ("", None),
        ];
        for (text, expected) in cases {
            let parsed = parse_date(text)
                .ok()
                .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
            assert_eq!(parsed, *expected, "{text}");
        }
        assert!(parse_date("2027-13-01").unwrap_err().contains("YYYY-MM-DD"));
    }

    #[test]
    fn a_certificate_brings_its_own_date_and_warning() {
        let generated = crate::testkit::TestClientCertificate::generate(
            "smtp-oauth-relay",
            Duration::from_secs(10 * 86_400),
        )
        .unwrap();
        let certificate = Arc::new(ClientCertificate::from_pem(&generated.combined_pem()).unwrap());
        let credential = ClientCredential::Certificate {
            certificate: Arc::clone(&certificate),
            algorithm: crate::oauth::entra::assertion::AssertionAlgorithm::Ps256,
        };
        // A secret's date does not apply to a certificate.
        let expiry = CredentialExpiry::of(&credential, Some(UNIX_EPOCH)).unwrap();
        assert_eq!(expiry.kind.as_str(), "certificate");
        assert_eq!(expiry.expires_at, certificate.not_after());
        let now = SystemTime::now();
        assert_eq!(expiry.days_left(now), certificate.days_until_expiry(now));
        assert_eq!(expiry.warning(now), certificate.expiry_warning(now));
        assert!(expiry.warning(now).is_some());
        assert!(
            expiry
                .summary(now)
                .contains(&certificate.sha1_thumbprint_hex()),
            "{}",
            expiry.summary(now)
        );
    }

    #[test]
    fn a_secret_without_a_date_has_no_expiry() {
        assert!(CredentialExpiry::of(&ClientCredential::Secret(Secret::new("s")), None).is_none());
    }

    #[test]
    fn a_secret_warns_from_30_days_before_and_errs_once_past() {
        let at = parse_date("2027-06-30").unwrap();
        let day = Duration::from_secs(86_400);
        let expiry = secret_expiring(at);
        assert_eq!(expiry.kind.as_str(), "secret");
        assert_eq!(expiry.unix_seconds(), 1_814_313_600);
        assert_eq!(expiry.date(), "2027-06-30");
        assert_eq!(expiry.warning(at - day * 31), None);
        assert_eq!(expiry.days_left(at - day * 31), 31);
        let warning = expiry.warning(at - day * 10).unwrap();
        assert!(
            warning.contains("expires on 2027-06-30 (in 10 days)")
                && warning.contains("AADSTS7000222")
                && warning.contains("SIGHUP"),
            "{warning}"
        );
        assert!(!expiry.is_expired(at - Duration::from_secs(1)));
        assert!(expiry.is_expired(at));
        let past = expiry.warning(at + day * 2).unwrap();
        assert!(past.contains("expired on 2027-06-30"), "{past}");
        assert_eq!(expiry.days_left(at + day * 2), -2);
        assert!(!format!("{expiry:?}").contains("\"s\""));
    }
}
