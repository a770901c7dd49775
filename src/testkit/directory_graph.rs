//! Microsoft Graph administration of the shared [`Directory`]: what an Exchange administrator
//! does to restrict an app to some mailboxes (RBAC for Applications:
//! `New-ManagementScope` + `New-ManagementRoleAssignment -App … -CustomResourceScope …`, or the
//! legacy `New-ApplicationAccessPolicy -AccessRight RestrictAccess`), and the state of a
//! mailbox that Graph cannot serve (no Exchange Online licence, on-premises, soft-deleted:
//! `MailboxNotEnabledForRESTAPI`). Read by [`FakeGraph`](super::FakeGraph).
//!
//! Invariants: keys are lowercase; an app without a scope reaches every mailbox of the tenant
//! (the tenant-wide Entra grant), an app with a scope reaches exactly the listed mailboxes
//! (as when the tenant-wide grant was removed, graph.md §6); changes apply to the next
//! request at once (the real service takes up to an hour).

use std::collections::{BTreeMap, BTreeSet};

use super::TestkitError;
use super::directory::Directory;

/// The Graph-specific part of the tenant state.
#[derive(Debug, Default)]
pub(crate) struct GraphDirectory {
    /// App client id -> the mailboxes its Graph roles are scoped to.
    scopes: BTreeMap<String, BTreeSet<String>>,
    /// Mailboxes Graph answers `MailboxNotEnabledForRESTAPI` for.
    not_enabled_for_rest: BTreeSet<String>,
}

impl Directory {
    /// Restricts app `client_id` to `mailboxes` for Graph (RBAC for Applications scope);
    /// `None` removes the restriction (the app reaches every mailbox again).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn set_graph_mailbox_scope(
        &self,
        client_id: &str,
        mailboxes: Option<&[&str]>,
    ) -> Result<(), TestkitError> {
        let client_id = self.with_app(client_id, |app| app.client_id.clone())?;
        let mut state = self.lock();
        match mailboxes {
            Some(list) => {
                let set = list.iter().map(|m| m.to_ascii_lowercase()).collect();
                state.graph.scopes.insert(client_id, set);
            }
            None => {
                state.graph.scopes.remove(&client_id);
            }
        }
        Ok(())
    }

    /// Whether app `client_id` may act on `mailbox` through Graph under its scope.
    pub fn graph_mailbox_in_scope(&self, client_id: &str, mailbox: &str) -> bool {
        self.lock()
            .graph
            .scopes
            .get(&client_id.to_ascii_lowercase())
            .is_none_or(|set| set.contains(&mailbox.to_ascii_lowercase()))
    }

    /// Marks `mailbox` as not reachable through the REST API (no Exchange Online licence,
    /// hosted on-premises, inactive): Graph answers `MailboxNotEnabledForRESTAPI`.
    ///
    /// # Errors
    /// [`TestkitError::UnknownMailbox`].
    pub fn set_mailbox_rest_enabled(
        &self,
        mailbox: &str,
        enabled: bool,
    ) -> Result<(), TestkitError> {
        let address = self.with_mailbox(mailbox, |m| m.address.clone())?;
        let mut state = self.lock();
        if enabled {
            state.graph.not_enabled_for_rest.remove(&address);
        } else {
            state.graph.not_enabled_for_rest.insert(address);
        }
        Ok(())
    }

    /// Whether Graph can serve `mailbox` (see [`Directory::set_mailbox_rest_enabled`]).
    pub fn mailbox_rest_enabled(&self, mailbox: &str) -> bool {
        !self
            .lock()
            .graph
            .not_enabled_for_rest
            .contains(&mailbox.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_rest_flags() {
        let dir = Directory::contoso_with_app("app", "s", "relay@contoso.com").unwrap();
        dir.add_mailbox("other@contoso.com");
        assert!(dir.graph_mailbox_in_scope("APP", "other@contoso.com"));
        dir.set_graph_mailbox_scope("app", Some(&["Relay@Contoso.com"]))
            .unwrap();
        assert!(dir.graph_mailbox_in_scope("app", "relay@contoso.com"));
        assert!(!dir.graph_mailbox_in_scope("app", "other@contoso.com"));
        assert!(dir.graph_mailbox_in_scope("another-app", "other@contoso.com"));
        dir.set_graph_mailbox_scope("app", None).unwrap();
        assert!(dir.graph_mailbox_in_scope("app", "other@contoso.com"));
        assert!(dir.set_graph_mailbox_scope("nope", None).is_err());

        assert!(dir.mailbox_rest_enabled("relay@contoso.com"));
        dir.set_mailbox_rest_enabled("RELAY@contoso.com", false)
            .unwrap();
        assert!(!dir.mailbox_rest_enabled("relay@contoso.com"));
        dir.set_mailbox_rest_enabled("relay@contoso.com", true)
            .unwrap();
        assert!(dir.mailbox_rest_enabled("relay@contoso.com"));
        assert!(
            dir.set_mailbox_rest_enabled("ghost@contoso.com", false)
                .is_err()
        );
    }
}
