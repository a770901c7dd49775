//! The steps of `check` and `send-test` that differ for a Google account
//! (`provider = "google"`): the service account key (who it is, which client ID the Admin
//! console must list, the token URI), why there are no token claims to read (Google's access
//! tokens are opaque: the scope is proven by AUTH XOAUTH2), the domain-wide delegation
//! checklist filled in with the account's values when Gmail or Google refuses, and the
//! texts that name Gmail's server.
//!
//! Invariant: nothing here prints the private key or a token; the key is named by its
//! client email, client ID and the first 8 characters of its key ID.

use super::Step;
use crate::config::AccountSettings;
use crate::oauth::app::ClientCredential;
use crate::oauth::google::GMAIL_SCOPE;
use crate::oauth::google::refusal::DELEGATION_PATH;

/// Gmail's submission server, as the connection fixes name it.
pub(super) const GMAIL_SERVER: &str = "smtp.gmail.com:587";

/// The key file step: which service account, which client ID, which token endpoint.
pub(super) fn key_step(account: &AccountSettings) -> Step {
    match &account.credential {
        ClientCredential::ServiceAccount { key, subject } => Step::ok(
            "service account key",
            format!(
                "service account {} (project {}, client ID {}, key {}…), acting for {subject} through domain-wide delegation; tokens from {}; Google keeps no expiry in the key file",
                key.client_email,
                if key.project_id.is_empty() {
                    "-"
                } else {
                    &key.project_id
                },
                key.client_id,
                key.private_key_id.get(..8).unwrap_or("-"),
                key.token_uri
            ),
        ),
        _ => Step::failed(
            "service account key",
            "the account is a Google account without a service account key",
            vec!["set service_account_key to the JSON key file".into()],
        ),
    }
}

/// The token step's follow-up for Google: nothing to decode.
pub(super) fn claims_step() -> Step {
    Step::skipped(
        "token claims",
        format!(
            "Google's access tokens are opaque (not JWTs); that the scope {GMAIL_SCOPE} was granted for the mailbox is proven by AUTH XOAUTH2 below"
        ),
    )
}

/// What an administrator checks when Google or Gmail refuses the account, with its values.
pub(super) fn delegation_checklist(account: &AccountSettings) -> Vec<String> {
    vec![
        format!(
            "a super administrator authorises client ID {} with the scope {GMAIL_SCOPE} in {DELEGATION_PATH} (the numeric client ID, not the client email; the scope exactly, gmail.send is not enough for SMTP)",
            account.client_id
        ),
        format!(
            "mailbox = \"{}\" must be the primary address of an active Workspace user with Gmail turned on (not a group, an alias or the service account's address)",
            account.mailbox
        ),
        "delegation changes take minutes, sometimes up to 24 hours, to apply; the relay keeps mail queued meanwhile".into(),
    ]
}

/// The probe's note on a send-as address other than the mailbox.
pub(super) fn sender_probe_note(account: &AccountSettings, address: &str) -> String {
    format!(
        "This proves the token, AUTH as {} and that Gmail takes the address at MAIL FROM; Gmail rewrites From: to the mailbox unless {address} is one of its \"Send mail as\" addresses (Gmail → Settings → Accounts): `send-test --from {address} --to YOU` shows what recipients see",
        account.mailbox
    )
}
