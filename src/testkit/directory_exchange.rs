//! Exchange Online administration of the shared [`Directory`]: what an admin does in
//! Exchange Online PowerShell — `New-ServicePrincipal`, mailbox creation,
//! `Add-MailboxPermission` (FullAccess), `Add-RecipientPermission` (SendAs),
//! `Set-CASMailbox` / `Set-TransportConfig -SmtpClientAuthenticationDisabled`.
//!
//! Invariants: as in [`directory`](super::directory) — lowercase keys, effects visible to the
//! next SMTP AUTH at once; FullAccess is granted to the app's service principal object id,
//! which is what the token's `oid` must match.

use std::collections::BTreeSet;

use super::TestkitError;
use super::directory::{Directory, Mailbox};

impl Directory {
    /// `New-ServicePrincipal -AppId <client id> -ObjectId <Enterprise app object id>`.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn new_service_principal(&self, client_id: &str) -> Result<(), TestkitError> {
        let object_id = self.with_app(client_id, |app| app.service_principal_object_id.clone())?;
        self.register_service_principal_object_id(client_id, &object_id);
        Ok(())
    }

    /// The classic mistake: `New-ServicePrincipal` with the App registration's object id
    /// instead of the Enterprise application's (Exchange then answers `535 5.7.3`).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn new_service_principal_with_app_object_id(
        &self,
        client_id: &str,
    ) -> Result<(), TestkitError> {
        let object_id = self.with_app(client_id, |app| app.application_object_id.clone())?;
        self.register_service_principal_object_id(client_id, &object_id);
        Ok(())
    }

    /// Registers an Exchange service principal with an arbitrary object id.
    pub fn register_service_principal_object_id(&self, client_id: &str, object_id: &str) {
        self.lock().exchange_service_principals.insert(
            client_id.to_ascii_lowercase(),
            object_id.to_ascii_lowercase(),
        );
    }

    /// `Remove-ServicePrincipal`.
    pub fn remove_service_principal(&self, client_id: &str) {
        self.lock()
            .exchange_service_principals
            .remove(&client_id.to_ascii_lowercase());
    }

    /// Creates a mailbox (no permissions, SMTP AUTH following the tenant setting).
    pub fn add_mailbox(&self, address: &str) {
        let address = address.to_ascii_lowercase();
        self.lock()
            .mailboxes
            .entry(address.clone())
            .or_insert_with(|| Mailbox {
                address,
                full_access: BTreeSet::new(),
                send_as: BTreeSet::new(),
                smtp_client_authentication_disabled: None,
            });
    }

    /// Deletes a mailbox (`user=` then names an unknown mailbox).
    pub fn remove_mailbox(&self, address: &str) {
        self.lock().mailboxes.remove(&address.to_ascii_lowercase());
    }

    /// `Add-MailboxPermission -Identity <mailbox> -User <app's SP> -AccessRights FullAccess`.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`] or [`TestkitError::UnknownMailbox`].
    pub fn add_mailbox_permission(
        &self,
        mailbox: &str,
        client_id: &str,
    ) -> Result<(), TestkitError> {
        let object_id = self.with_app(client_id, |app| app.service_principal_object_id.clone())?;
        self.with_mailbox(mailbox, |m| {
            m.full_access.insert(object_id);
        })
    }

    /// `Remove-MailboxPermission ... -AccessRights FullAccess`.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`] or [`TestkitError::UnknownMailbox`].
    pub fn remove_mailbox_permission(
        &self,
        mailbox: &str,
        client_id: &str,
    ) -> Result<(), TestkitError> {
        let object_id = self.with_app(client_id, |app| app.service_principal_object_id.clone())?;
        self.with_mailbox(mailbox, |m| {
            m.full_access.remove(&object_id);
        })
    }

    /// `Add-RecipientPermission -Identity <sender> -Trustee <mailbox> -AccessRights SendAs`.
    ///
    /// # Errors
    /// [`TestkitError::UnknownMailbox`] if `trustee_mailbox` does not exist.
    pub fn grant_send_as(&self, trustee_mailbox: &str, sender: &str) -> Result<(), TestkitError> {
        let sender = sender.to_ascii_lowercase();
        self.with_mailbox(trustee_mailbox, |m| {
            m.send_as.insert(sender);
        })
    }

    /// Removes a SendAs grant.
    ///
    /// # Errors
    /// [`TestkitError::UnknownMailbox`].
    pub fn revoke_send_as(&self, trustee_mailbox: &str, sender: &str) -> Result<(), TestkitError> {
        let sender = sender.to_ascii_lowercase();
        self.with_mailbox(trustee_mailbox, |m| {
            m.send_as.remove(&sender);
        })
    }

    /// `Set-CASMailbox -SmtpClientAuthenticationDisabled` (`None` = `$null`).
    ///
    /// # Errors
    /// [`TestkitError::UnknownMailbox`].
    pub fn set_mailbox_smtp_auth_disabled(
        &self,
        mailbox: &str,
        disabled: Option<bool>,
    ) -> Result<(), TestkitError> {
        self.with_mailbox(mailbox, |m| {
            m.smtp_client_authentication_disabled = disabled
        })
    }

    /// `Set-TransportConfig -SmtpClientAuthenticationDisabled`.
    pub fn set_tenant_smtp_auth_disabled(&self, disabled: bool) {
        self.lock().smtp_client_authentication_disabled = disabled;
    }
}
