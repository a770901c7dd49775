//! The certificate credential of an Entra app registration: a [`ClientCertificate`] loaded from
//! one PEM file (the app's certificate and its RSA private key), checked at load, with its
//! thumbprints and validity. `assertion` signs client assertions with it (exchange-online.md
//! §1.3), which replace `client_secret` in the token request.
//!
//! # Creating and uploading the certificate (for the administrator)
//!
//! Entra only needs the public certificate; the relay keeps the private key. A self-signed
//! RSA 2048 certificate valid for two years is enough:
//!
//! ```text
//! openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem \
//!     -days 730 -subj "/CN=smtp-oauth-relay"
//! cat cert.pem key.pem > relay-app.pem      # the relay's client_certificate file
//! chmod 600 relay-app.pem
//! ```
//!
//! In the Entra admin center open App registrations → the relay's app → Certificates &
//! secrets → Certificates → Upload certificate, and upload `cert.pem` (the public part only,
//! never `key.pem` or `relay-app.pem`). The portal then lists the certificate's SHA-1
//! thumbprint in uppercase hex, the same text [`ClientCertificate::sha1_thumbprint_hex`]
//! returns, so the two can be compared. Before the certificate expires, create and upload a
//! new one and replace the file; [`ClientCertificate::expiry_warning`] says so from 30 days
//! ahead.
//!
//! Invariants:
//! - a [`ClientCertificate`] only exists when its private key is an RSA key (2048 bits or
//!   more) that belongs to the file's first certificate: loading signs a probe with the key
//!   and verifies it with the certificate's public key;
//! - the private key never leaves this module: it is not stored as text, has no accessor
//!   (only `ClientCertificate::sign` uses it), and `Debug` shows only the subject, the
//!   thumbprint and the validity; error texts never quote the file's content.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use time::macros::format_description;
use x509_parser::public_key::PublicKey;

/// From how long before the certificate's expiry [`ClientCertificate::expiry_warning`] warns.
pub const EXPIRY_WARNING_WINDOW: Duration = Duration::from_secs(30 * 86_400);

const SECONDS_PER_DAY: i64 = 86_400;
const CREATE_HINT: &str = "create one with: openssl req -x509 -newkey rsa:2048 -nodes \
     -keyout key.pem -out cert.pem -days 730 -subj \"/CN=smtp-oauth-relay\"";
const RENEW_HINT: &str = "create a new certificate, upload its public part in the app \
     registration (Entra admin center → App registrations → the app → Certificates & secrets), \
     then replace the client_certificate file with the new certificate and key";

/// An app registration's certificate and its RSA private key, ready to sign client assertions.
pub struct ClientCertificate {
    der: Vec<u8>,
    key: RsaKeyPair,
    rng: SystemRandom,
    sha1: [u8; 20],
    sha256: [u8; 32],
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.subject)
            .field("sha1_thumbprint", &self.sha1_thumbprint_hex())
            .field("not_after", &utc_text(self.not_after))
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl ClientCertificate {
    /// Reads a PEM file holding the certificate (the first `CERTIFICATE` block) and its
    /// private key; see [`ClientCertificate::from_pem`].
    ///
    /// # Errors
    /// The file cannot be read (it must be a regular file of at most
    /// [`NAMED_FILE_LIMIT`](crate::named_file::NAMED_FILE_LIMIT) bytes), or
    /// [`ClientCertificate::from_pem`]'s errors prefixed with the path.
    pub fn load(path: &Path) -> Result<ClientCertificate, String> {
        let text = crate::named_file::read_limited_text(path, crate::named_file::NAMED_FILE_LIMIT)?;
        ClientCertificate::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses PEM text holding the certificate (the first `CERTIFICATE` block is the app's
    /// certificate; later ones are ignored) and its RSA private key (PKCS#8 `PRIVATE KEY` or
    /// PKCS#1 `RSA PRIVATE KEY`, without passphrase).
    ///
    /// # Errors
    /// An administrator-readable reason: no certificate, no private key, an encrypted or
    /// non-RSA key, a key shorter than 2048 bits, or a key that does not belong to the
    /// certificate.
    pub fn from_pem(pem: &str) -> Result<ClientCertificate, String> {
        let der = first_certificate(pem)?;
        let key = private_key(pem)?;
        let (x509_public_key, subject, not_before, not_after) = certificate_fields(&der)?;
        check_key_matches(&key, &x509_public_key)?;
        let mut sha1 = [0u8; 20];
        sha1.copy_from_slice(digest(&SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref());
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest(&SHA256, &der).as_ref());
        Ok(ClientCertificate {
            der,
            key,
            rng: SystemRandom::new(),
            sha1,
            sha256,
            subject,
            not_before,
            not_after,
        })
    }

    /// The certificate (DER), e.g. to compare with what is registered.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-1 of the certificate's DER (the `x5t` header, decoded).
    pub fn sha1_thumbprint(&self) -> [u8; 20] {
        self.sha1
    }

    /// SHA-256 of the certificate's DER (the `x5t#S256` header, decoded).
    pub fn sha256_thumbprint(&self) -> [u8; 32] {
        self.sha256
    }

    /// The SHA-1 thumbprint as uppercase hex: what the Entra portal lists as "Thumbprint".
    pub fn sha1_thumbprint_hex(&self) -> String {
        crate::vocab::hex::upper(&self.sha1)
    }

    /// The SHA-256 thumbprint as uppercase hex.
    pub fn sha256_thumbprint_hex(&self) -> String {
        crate::vocab::hex::upper(&self.sha256)
    }

    /// The certificate's subject, e.g. `CN=smtp-oauth-relay`, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Start of the certificate's validity (`notBefore`).
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the certificate's validity (`notAfter`).
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whole days until `notAfter` (rounded down; negative once expired).
    pub fn days_until_expiry(&self, now: SystemTime) -> i64 {
        seconds_until(now, self.not_after).div_euclid(SECONDS_PER_DAY)
    }

    /// Whether the certificate has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// A one-line message from [`EXPIRY_WARNING_WINDOW`] before `notAfter` on, naming the
    /// thumbprint, the expiry date and what to do; `None` before that. Log it as a warning, or
    /// as an error when [`ClientCertificate::is_expired`] (every token request then fails).
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let name = format!(
            "the client certificate {} ({})",
            self.sha1_thumbprint_hex(),
            self.subject
        );
        let date = utc_text(self.not_after);
        if self.is_expired(now) {
            return Some(format!(
                "{name} expired on {date}: Entra refuses assertions signed with it \
                 (AADSTS700027 or AADSTS50012), so no token can be fetched and mail stays \
                 queued; {RENEW_HINT}"
            ));
        }
        let remaining = seconds_until(now, self.not_after);
        let window = i64::try_from(EXPIRY_WARNING_WINDOW.as_secs()).unwrap_or(i64::MAX);
        if remaining > window {
            return None;
        }
        let when = match self.days_until_expiry(now) {
            0 => "in less than a day".to_owned(),
            1 => "in 1 day".to_owned(),
            days => format!("in {days} days"),
        };
        Some(format!(
            "{name} expires on {date} ({when}); after that no token can be fetched \
             (AADSTS700027): {RENEW_HINT}"
        ))
    }

    /// Signs `message` with the private key (`padding`: PSS or PKCS#1 v1.5, SHA-256). The key
    /// itself never leaves this module; this is the only use of it besides the load check.
    ///
    /// # Errors
    /// The system random generator or RSA signing failed.
    pub(super) fn sign(
        &self,
        padding: &'static dyn ring::signature::RsaEncoding,
        message: &[u8],
    ) -> Result<Vec<u8>, String> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(padding, &self.rng, message, &mut signature)
            .map_err(|_| "signing with the private key failed".to_owned())?;
        Ok(signature)
    }
}

/// The first `CERTIFICATE` block.
fn first_certificate(pem: &str) -> Result<Vec<u8>, String> {
    match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(cert)) => Ok(cert.as_ref().to_vec()),
        Some(Err(e)) => Err(format!(
            "the certificate is not valid PEM: {}",
            pem_error(&e)
        )),
        None => Err(format!(
            "the file has no certificate: it must hold the app's certificate \
             (-----BEGIN CERTIFICATE-----) followed by its private key; {CREATE_HINT}"
        )),
    }
}

/// The first private key block, as an RSA key pair.
fn private_key(pem: &str) -> Result<RsaKeyPair, String> {
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || pem.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(
            "the private key is protected by a passphrase; the relay needs it \
                    unencrypted: openssl pkey -in key.pem -out key-plain.pem (then keep the \
                    file readable by the relay only)"
                .to_owned(),
        );
    }
    let key = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(
                "the file has no private key: append the key that was created with \
                        the certificate (cat cert.pem key.pem > relay-app.pem)"
                    .to_owned(),
            );
        }
        Err(e) => {
            return Err(format!(
                "the private key is not valid PEM: {}",
                pem_error(&e)
            ));
        }
    };
    let parsed = match &key {
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(der) => match pkcs8_key_type(der.secret_pkcs8_der()) {
            Pkcs8KeyType::Rsa => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            Pkcs8KeyType::RsaPss => {
                return Err(
                    "the private key is an RSA-PSS-only key, which cannot be used \
                            here; create a plain RSA key (openssl req -newkey rsa:2048 ...)"
                        .to_owned(),
                );
            }
            Pkcs8KeyType::Other(kind) => return Err(non_rsa_key(kind)),
        },
        PrivateKeyDer::Sec1(_) => return Err(non_rsa_key("an EC (elliptic curve) key")),
        _ => return Err(non_rsa_key("not an RSA key")),
    };
    parsed.map_err(|e| match e.to_string().as_str() {
        "TooSmall" => "the RSA private key is shorter than 2048 bits; create a 2048-bit (or \
                       larger) key and certificate"
            .to_owned(),
        "TooLarge" => "the RSA private key is longer than 8192 bits; create a 2048-bit key \
                       and certificate"
            .to_owned(),
        reason => format!("the RSA private key is not usable ({reason}); {CREATE_HINT}"),
    })
}

fn non_rsa_key(kind: &str) -> String {
    format!(
        "the private key is {kind}, but app certificates for the relay must be RSA \
         (Entra signs and checks client assertions with RSA); {CREATE_HINT}"
    )
}

enum Pkcs8KeyType {
    Rsa,
    RsaPss,
    Other(&'static str),
}

/// The key algorithm of a PKCS#8 `PrivateKeyInfo`, from its AlgorithmIdentifier OID (which
/// comes right after the version, within the first bytes).
fn pkcs8_key_type(der: &[u8]) -> Pkcs8KeyType {
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const RSA_PSS: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a,
    ];
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const ED448: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x71];
    let head = der.get(..32).unwrap_or(der);
    let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
    if has(RSA) {
        Pkcs8KeyType::Rsa
    } else if has(RSA_PSS) {
        Pkcs8KeyType::RsaPss
    } else if has(EC) {
        Pkcs8KeyType::Other("an EC (elliptic curve) key")
    } else if has(ED25519) || has(ED448) {
        Pkcs8KeyType::Other("an EdDSA key")
    } else {
        Pkcs8KeyType::Other("not an RSA key")
    }
}

/// Public key (RSAPublicKey DER), subject, notBefore and notAfter of a certificate.
fn certificate_fields(der: &[u8]) -> Result<(Vec<u8>, String, SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate cannot be read as X.509: {e}"))?;
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(_)) => {}
        Ok(PublicKey::EC(_)) => {
            return Err(format!(
                "the certificate has an EC (elliptic curve) public key, but app certificates \
                 for the relay must be RSA; {CREATE_HINT}"
            ));
        }
        _ => {
            return Err(format!(
                "the certificate's public key is not an RSA key; {CREATE_HINT}"
            ));
        }
    }
    let validity = cert.validity();
    Ok((
        spki.subject_public_key.data.to_vec(),
        cert.subject().to_string(),
        system_time(validity.not_before.timestamp()),
        system_time(validity.not_after.timestamp()),
    ))
}

/// Signs a probe with the key and verifies it with the certificate's public key.
fn check_key_matches(key: &RsaKeyPair, certificate_key: &[u8]) -> Result<(), String> {
    const PROBE: &[u8] = b"smtp-oauth-relay key check";
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PSS_SHA256, &SystemRandom::new(), PROBE, &mut signature)
        .map_err(|_| "signing with the private key failed".to_owned())?;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, certificate_key)
        .verify(PROBE, &signature)
        .map_err(|_| {
            "the private key does not belong to the certificate (the first certificate in the \
             file): put the certificate and the key that was created with it into the file"
                .to_owned()
        })
}

/// PEM errors without any of the file's content.
fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a -----BEGIN block has no -----END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a block is not valid base64".into(),
        _ => "the PEM structure is invalid".into(),
    }
}

fn system_time(unix: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix.unsigned_abs());
    let time = if unix >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

/// Signed seconds from `from` to `to`.
fn seconds_until(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => i64::try_from(behind.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `2027-11-28 23:41 UTC`.
fn utc_text(at: SystemTime) -> String {
    let unix = seconds_until(UNIX_EPOCH, at);
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("{unix} (Unix time)"))
}

#[cfg(test)]
mod tests;
