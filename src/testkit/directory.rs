//! The shared tenant state: what an administrator configures in Entra (app registrations,
//! secrets, granted application roles with admin consent, service principals) and in
//! Exchange Online (`New-ServicePrincipal`, `Add-MailboxPermission`, `Add-RecipientPermission`,
//! `Set-CASMailbox` / `Set-TransportConfig -SmtpClientAuthenticationDisabled`).
//!
//! [`Directory`] is a cheap-to-clone handle (`Arc<Mutex<..>>`) held by both emulators, so a
//! test can misconfigure the tenant at run time and the next token request or SMTP AUTH sees
//! it at once (the real service takes 15 min to 2 h to propagate; the kit has no delay).
//!
//! Invariants:
//! - addresses, domains and client ids are compared case-insensitively (stored lowercase);
//! - the directory owns the tenant's token signing key: [`FakeEntra`](super::FakeEntra) signs
//!   with it and [`Directory::token_verifier`] is what Exchange checks signatures against;
//! - secret values never appear in `Debug` output.
//!
//! The Exchange-side administration (`New-ServicePrincipal`, mailbox permissions, SMTP AUTH
//! switches) is in `directory_exchange`; certificate credentials are in
//! `directory_certificates`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::TestkitError;
use super::directory_certificates::RegisteredCertificate;
use super::jwt::{TokenSigner, TokenVerifier};
use super::random::new_guid;

/// The application role Exchange requires for SMTP with client credentials.
pub const SMTP_SEND_AS_APP: &str = "SMTP.SendAsApp";

/// A client secret of an app registration.
#[derive(Clone)]
pub struct ClientSecret {
    /// The secret's id (a GUID) — what admins paste by mistake instead of the value.
    pub secret_id: String,
    /// The secret value.
    pub value: String,
    /// When the secret stops working, if ever.
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecret")
            .field("secret_id", &self.secret_id)
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl ClientSecret {
    /// Whether the secret has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// An app registration plus its service principal in the tenant.
#[derive(Clone, Debug)]
pub struct AppRegistration {
    /// Application (client) id.
    pub client_id: String,
    /// Display name (`app_displayname` claim).
    pub display_name: String,
    /// Object id of the App registration (the value admins wrongly pass to
    /// `New-ServicePrincipal`).
    pub application_object_id: String,
    /// Object id of the Enterprise application (service principal): the token's `oid`.
    pub service_principal_object_id: String,
    /// Client secrets.
    pub secrets: Vec<ClientSecret>,
    /// Certificates uploaded under Certificates & secrets (see `directory_certificates`).
    pub certificates: Vec<RegisteredCertificate>,
    /// Office 365 Exchange Online application roles with admin consent.
    pub exchange_roles: Vec<String>,
    /// Microsoft Graph application roles with admin consent.
    pub graph_roles: Vec<String>,
}

/// A mailbox and its Exchange permissions.
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Primary SMTP address (lowercase).
    pub address: String,
    /// Service principal object ids with FullAccess (`Add-MailboxPermission`).
    pub full_access: BTreeSet<String>,
    /// Addresses this mailbox may send as (`Add-RecipientPermission -Trustee <this>`).
    pub send_as: BTreeSet<String>,
    /// `Set-CASMailbox -SmtpClientAuthenticationDisabled`: `None` follows the tenant,
    /// `Some(false)` enables SMTP AUTH even when the tenant disables it.
    pub smtp_client_authentication_disabled: Option<bool>,
}

/// Whether SMTP AUTH is allowed for a mailbox, and if not, at which level it is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpAuthPolicy {
    /// SMTP AUTH may be used.
    Enabled,
    /// Disabled on the mailbox (`Set-CASMailbox`).
    DisabledForMailbox,
    /// Disabled tenant-wide (`Set-TransportConfig`) with no mailbox override.
    DisabledForTenant,
}

#[derive(Debug)]
pub(super) struct TenantState {
    pub(super) tenant_id: String,
    pub(super) display_name: String,
    pub(super) domains: Vec<String>,
    pub(super) apps: BTreeMap<String, AppRegistration>,
    /// Exchange's service principals (`New-ServicePrincipal`): app id -> object id.
    pub(super) exchange_service_principals: BTreeMap<String, String>,
    pub(super) mailboxes: BTreeMap<String, Mailbox>,
    pub(super) smtp_client_authentication_disabled: bool,
    pub(super) created_at: i64,
    /// Graph side (`directory_graph`): per-app mailbox scopes and unlicensed mailboxes.
    pub(super) graph: super::directory_graph::GraphDirectory,
}

/// Shared, mutable tenant configuration; clones share the same state.
#[derive(Clone)]
pub struct Directory {
    state: Arc<Mutex<TenantState>>,
    signer: Arc<TokenSigner>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// An empty tenant with a random GUID and `primary_domain` as its only domain.
    ///
    /// # Errors
    /// Fails if the token signing key cannot be generated.
    pub fn new(primary_domain: &str) -> Result<Directory, TestkitError> {
        let display_name = primary_domain
            .split('.')
            .next()
            .unwrap_or(primary_domain)
            .to_owned();
        Ok(Directory {
            state: Arc::new(Mutex::new(TenantState {
                tenant_id: new_guid(),
                display_name,
                domains: vec![primary_domain.to_ascii_lowercase()],
                apps: BTreeMap::new(),
                exchange_service_principals: BTreeMap::new(),
                mailboxes: BTreeMap::new(),
                smtp_client_authentication_disabled: false,
                created_at: 1_600_000_000,
                graph: super::directory_graph::GraphDirectory::default(),
            })),
            signer: Arc::new(TokenSigner::new()?),
        })
    }

    /// A healthy tenant `contoso.onmicrosoft.com` (also owning `contoso.com` and the mailbox's
    /// domain) where app `client_id` with secret `secret` has `SMTP.SendAsApp` with admin
    /// consent, its service principal is registered in Exchange, and it has FullAccess on
    /// `mailbox`, for which SMTP AUTH is enabled.
    ///
    /// # Errors
    /// Fails if the token signing key cannot be generated.
    pub fn contoso_with_app(
        client_id: &str,
        secret: &str,
        mailbox: &str,
    ) -> Result<Directory, TestkitError> {
        let directory = Directory::new("contoso.onmicrosoft.com")?;
        directory.add_domain("contoso.com");
        if let Some((_, domain)) = mailbox.rsplit_once('@') {
            directory.add_domain(domain);
        }
        directory.register_app(client_id, "SMTP OAuth Relay");
        directory.add_client_secret(client_id, secret, None)?;
        directory.grant_exchange_role(client_id, SMTP_SEND_AS_APP)?;
        directory.new_service_principal(client_id)?;
        directory.add_mailbox(mailbox);
        directory.add_mailbox_permission(mailbox, client_id)?;
        Ok(directory)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, TenantState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn with_app<T>(
        &self,
        client_id: &str,
        f: impl FnOnce(&mut AppRegistration) -> T,
    ) -> Result<T, TestkitError> {
        let mut state = self.lock();
        state
            .apps
            .get_mut(&client_id.to_ascii_lowercase())
            .map(f)
            .ok_or_else(|| TestkitError::UnknownApp(client_id.to_owned()))
    }

    pub(super) fn with_mailbox<T>(
        &self,
        address: &str,
        f: impl FnOnce(&mut Mailbox) -> T,
    ) -> Result<T, TestkitError> {
        let mut state = self.lock();
        state
            .mailboxes
            .get_mut(&address.to_ascii_lowercase())
            .map(f)
            .ok_or_else(|| TestkitError::UnknownMailbox(address.to_owned()))
    }

    // ----- reading -------------------------------------------------------------------------

    /// The tenant id (GUID).
    pub fn tenant_id(&self) -> String {
        self.lock().tenant_id.clone()
    }

    /// The tenant's display name (first label of the primary domain).
    pub fn tenant_display_name(&self) -> String {
        self.lock().display_name.clone()
    }

    /// The verified domains, primary (`*.onmicrosoft.com`) first.
    pub fn domains(&self) -> Vec<String> {
        self.lock().domains.clone()
    }

    /// Whether `tenant` (GUID or domain, any case) names this tenant.
    pub fn resolves_tenant(&self, tenant: &str) -> bool {
        let tenant = tenant.to_ascii_lowercase();
        let state = self.lock();
        state.tenant_id == tenant || state.domains.contains(&tenant)
    }

    /// Tenant creation time (Unix seconds), for the `xms_tcdt` claim.
    pub fn tenant_created_at(&self) -> i64 {
        self.lock().created_at
    }

    /// A copy of the app registration, if any.
    pub fn app(&self, client_id: &str) -> Option<AppRegistration> {
        self.lock()
            .apps
            .get(&client_id.to_ascii_lowercase())
            .cloned()
    }

    /// A copy of the mailbox, if any.
    pub fn mailbox(&self, address: &str) -> Option<Mailbox> {
        self.lock()
            .mailboxes
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    /// The object id Exchange has registered for app `client_id` (`Get-ServicePrincipal`).
    pub fn exchange_service_principal(&self, client_id: &str) -> Option<String> {
        self.lock()
            .exchange_service_principals
            .get(&client_id.to_ascii_lowercase())
            .cloned()
    }

    /// Whether SMTP AUTH is allowed for `mailbox` (mailbox override first, then tenant).
    pub fn smtp_auth_policy(&self, mailbox: &str) -> SmtpAuthPolicy {
        let state = self.lock();
        let mailbox_setting = state
            .mailboxes
            .get(&mailbox.to_ascii_lowercase())
            .and_then(|m| m.smtp_client_authentication_disabled);
        match mailbox_setting {
            Some(true) => SmtpAuthPolicy::DisabledForMailbox,
            Some(false) => SmtpAuthPolicy::Enabled,
            None if state.smtp_client_authentication_disabled => SmtpAuthPolicy::DisabledForTenant,
            None => SmtpAuthPolicy::Enabled,
        }
    }

    /// Whether the authenticated `mailbox` may send with `sender` as MAIL FROM / From:
    /// itself, or an address it holds SendAs on.
    pub fn may_send_as(&self, mailbox: &str, sender: &str) -> bool {
        let mailbox = mailbox.to_ascii_lowercase();
        let sender = sender.to_ascii_lowercase();
        mailbox == sender
            || self
                .lock()
                .mailboxes
                .get(&mailbox)
                .is_some_and(|m| m.send_as.contains(&sender))
    }

    /// The tenant's token signing key.
    pub fn token_signer(&self) -> Arc<TokenSigner> {
        Arc::clone(&self.signer)
    }

    /// A verifier for tokens issued by this tenant.
    pub fn token_verifier(&self) -> TokenVerifier {
        self.signer.verifier()
    }

    // ----- Entra administration -------------------------------------------------------------

    /// Adds a verified domain.
    pub fn add_domain(&self, domain: &str) {
        let domain = domain.to_ascii_lowercase();
        let mut state = self.lock();
        if !state.domains.contains(&domain) {
            state.domains.push(domain);
        }
    }

    /// Registers an app (no secret, no roles) with fresh object ids; replaces any app with the
    /// same client id. Returns a copy.
    pub fn register_app(&self, client_id: &str, display_name: &str) -> AppRegistration {
        let app = AppRegistration {
            client_id: client_id.to_ascii_lowercase(),
            display_name: display_name.to_owned(),
            application_object_id: new_guid(),
            service_principal_object_id: new_guid(),
            secrets: Vec::new(),
            certificates: Vec::new(),
            exchange_roles: Vec::new(),
            graph_roles: Vec::new(),
        };
        self.lock().apps.insert(app.client_id.clone(), app.clone());
        app
    }

    /// Deletes the app registration (token requests then fail with AADSTS700016).
    pub fn delete_app(&self, client_id: &str) {
        self.lock().apps.remove(&client_id.to_ascii_lowercase());
    }

    /// Adds a client secret; returns its secret id.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn add_client_secret(
        &self,
        client_id: &str,
        value: &str,
        expires_at: Option<SystemTime>,
    ) -> Result<String, TestkitError> {
        let secret = ClientSecret {
            secret_id: new_guid(),
            value: value.to_owned(),
            expires_at,
        };
        let id = secret.secret_id.clone();
        self.with_app(client_id, |app| app.secrets.push(secret))?;
        Ok(id)
    }

    /// Replaces all secrets by one new value ("the admin rotated the secret").
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn replace_client_secret(
        &self,
        client_id: &str,
        value: &str,
    ) -> Result<String, TestkitError> {
        self.with_app(client_id, |app| app.secrets.clear())?;
        self.add_client_secret(client_id, value, None)
    }

    /// Makes every secret of the app expired (token requests then fail with AADSTS7000222).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn expire_client_secrets(&self, client_id: &str) -> Result<(), TestkitError> {
        let past = SystemTime::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.with_app(client_id, |app| {
            for secret in &mut app.secrets {
                secret.expires_at = Some(past);
            }
        })
    }

    /// Grants an Exchange application role with admin consent (e.g. `SMTP.SendAsApp`).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn grant_exchange_role(&self, client_id: &str, role: &str) -> Result<(), TestkitError> {
        self.with_app(client_id, |app| {
            if !app.exchange_roles.iter().any(|r| r == role) {
                app.exchange_roles.push(role.to_owned());
            }
        })
    }

    /// Sets the consented Exchange roles (e.g. `["IMAP.AccessAsApp"]` for the wrong permission).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn set_exchange_roles(&self, client_id: &str, roles: &[&str]) -> Result<(), TestkitError> {
        self.with_app(client_id, |app| {
            app.exchange_roles = roles.iter().map(|r| (*r).to_owned()).collect();
        })
    }

    /// Sets the consented Microsoft Graph roles (e.g. `["Mail.Send"]`).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn set_graph_roles(&self, client_id: &str, roles: &[&str]) -> Result<(), TestkitError> {
        self.with_app(client_id, |app| {
            app.graph_roles = roles.iter().map(|r| (*r).to_owned()).collect();
        })
    }

    /// Revokes admin consent: tokens are still issued, but without a `roles` claim.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn revoke_admin_consent(&self, client_id: &str) -> Result<(), TestkitError> {
        self.with_app(client_id, |app| {
            app.exchange_roles.clear();
            app.graph_roles.clear();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_setup_and_misconfiguration_setters() {
        let dir = Directory::contoso_with_app("APP-ID", "s3cret", "Relay@Contoso.com").unwrap();
        assert!(dir.resolves_tenant("CONTOSO.onmicrosoft.com"));
        assert!(dir.resolves_tenant(&dir.tenant_id().to_uppercase()));
        assert!(!dir.resolves_tenant("fabrikam.com"));
        let app = dir.app("app-id").unwrap();
        assert_eq!(app.exchange_roles, vec![SMTP_SEND_AS_APP.to_owned()]);
        assert_eq!(
            dir.exchange_service_principal("app-id").as_deref(),
            Some(app.service_principal_object_id.as_str())
        );
        let mailbox = dir.mailbox("relay@contoso.com").unwrap();
        assert!(
            mailbox
                .full_access
                .contains(&app.service_principal_object_id)
        );
        assert_eq!(
            dir.smtp_auth_policy("relay@contoso.com"),
            SmtpAuthPolicy::Enabled
        );
        assert!(format!("{:?}", app.secrets).contains("<redacted>"));
        assert!(!format!("{dir:?}").contains("s3cret"));

        dir.set_tenant_smtp_auth_disabled(true);
        assert_eq!(
            dir.smtp_auth_policy("relay@contoso.com"),
            SmtpAuthPolicy::DisabledForTenant
        );
        dir.set_mailbox_smtp_auth_disabled("relay@contoso.com", Some(false))
            .unwrap();
        assert_eq!(
            dir.smtp_auth_policy("relay@contoso.com"),
            SmtpAuthPolicy::Enabled
        );
        dir.set_mailbox_smtp_auth_disabled("relay@contoso.com", Some(true))
            .unwrap();
        assert_eq!(
            dir.smtp_auth_policy("relay@contoso.com"),
            SmtpAuthPolicy::DisabledForMailbox
        );

        assert!(!dir.may_send_as("relay@contoso.com", "ceo@contoso.com"));
        dir.grant_send_as("relay@contoso.com", "CEO@contoso.com")
            .unwrap();
        assert!(dir.may_send_as("RELAY@contoso.com", "ceo@contoso.com"));

        dir.expire_client_secrets("app-id").unwrap();
        assert!(dir.app("app-id").unwrap().secrets[0].is_expired(SystemTime::now()));
        dir.revoke_admin_consent("app-id").unwrap();
        assert!(dir.app("app-id").unwrap().exchange_roles.is_empty());
        assert!(matches!(
            dir.grant_exchange_role("nope", "x"),
            Err(TestkitError::UnknownApp(_))
        ));
    }
}
