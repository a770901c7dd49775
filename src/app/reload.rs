//! Hot reload (SIGHUP): a new, already validated configuration applied to the running relay.
//!
//! Invariants: a reload is all or nothing. One that changes what cannot change at run time
//! (listener addresses or TLS modes, the state directory, the admin address and limits) is
//! refused whole, and every account is prepared before anything is swapped, so a failure
//! leaves the old configuration running. Settings are swapped, not mutated: a session keeps
//! the snapshot it started with; accounts hand over as [`super::accounts`] describes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::accounts::{Occasion, prepare_account, start_account};
use super::start::{admin_rules, delivery_shared, inbound_context, throttle_settings};
use super::{AdminLimits, Relay};
use crate::config::Config;
use crate::vocab::tls_mode::TlsMode;

impl Relay {
    /// Apply a new, already validated configuration: users, networks, accounts, listener
    /// certificates and options, limits, queue settings. Sessions in progress keep the old
    /// settings; new sessions and the next deliveries use the new ones.
    ///
    /// # Errors
    /// A description of what cannot change without a restart; nothing was applied.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        self.reloadable(&config)?;
        // Prepare every account first, so a failure leaves everything as it was.
        let delivery_shared = delivery_shared(&config, &self.shared);
        let mut accounts = self.accounts.lock().await;
        let mut prepared = HashMap::new();
        let mut token_providers = crate::oauth::registry::TokenProviders::default();
        {
            let previous_providers = self
                .token_providers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for account in &config.accounts {
                let ready = prepare_account(
                    account,
                    &mut token_providers,
                    &previous_providers,
                    &self.shared.metrics,
                    &config.relay.hostname,
                )
                .map_err(|e| e.to_string())?;
                prepared.insert(account.name.clone(), ready);
            }
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        if let (Some(access), Some(bound)) = (&self.admin_access, self.admin) {
            access.store(Arc::new(admin_rules(bound, &config)));
        }
        // Inbound: new sessions get the new users, networks, certificates and limits.
        self.shared
            .auth_throttle
            .reconfigure(throttle_settings(&config.limits));
        self.shared.connection_limits.resize(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        );
        self.shared
            .spool
            .reserve()
            .set_setting(config.limits.min_free_space);
        for runtime in &self.listeners {
            if let Some(listener) = config
                .listeners
                .iter()
                .find(|l| l.address == runtime.configured)
            {
                runtime
                    .context
                    .store(Arc::new(inbound_context(&config, listener, &self.shared)));
            }
        }
        // Outbound: every account's workers are replaced once the old ones have finished.
        let mut next = HashMap::new();
        for account in &config.accounts {
            let Some(ready) = prepared.remove(&account.name) else {
                continue;
            };
            let previous = accounts.remove(&account.name);
            let runtime = start_account(
                account,
                ready,
                &self.shared,
                &delivery_shared,
                &self.cancel,
                previous,
                Occasion::Reload,
            )
            .await;
            next.insert(account.name.clone(), runtime);
        }
        for (name, removed) in accounts.drain() {
            removed.cancel.cancel();
            removed.workers.close();
            tracing::warn!(account = %name, queued = self.shared.queue.account(&name).map_or(0, |q| q.len()), "account removed from the configuration; its queued messages stay in the spool");
        }
        *accounts = next;
        *self
            .token_providers
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = token_providers;
        self.shared.deliveries.store(Arc::new(
            accounts.values().map(|a| Arc::clone(&a.delivery)).collect(),
        ));
        let (users, networks) = config.policy.counts();
        tracing::info!(
            accounts = config.accounts.len(),
            users,
            networks,
            "configuration reloaded"
        );
        Ok(())
    }

    /// Refuse a configuration that changes what needs a restart.
    fn reloadable(&self, config: &Config) -> Result<(), String> {
        let mut problems = Vec::new();
        if config.relay.state_dir != self.state_dir {
            problems.push("relay.state_dir changed".to_string());
        }
        if config.admin.address != self.admin_configured {
            problems.push("admin.address changed".to_string());
        }
        if AdminLimits::of(config) != self.admin_limits {
            problems.push("admin.max_connections or admin.request_timeout changed".to_string());
        }
        let old: Vec<(SocketAddr, TlsMode)> = self
            .listeners
            .iter()
            .map(|l| (l.configured, l.tls))
            .collect();
        let new: Vec<(SocketAddr, TlsMode)> = config
            .listeners
            .iter()
            .map(|l| (l.address, l.tls))
            .collect();
        if old.len() != new.len() || old.iter().any(|l| !new.contains(l)) {
            problems.push("the listeners' addresses or TLS modes changed".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}; restart the relay to apply that",
                problems.join(", ")
            ))
        }
    }
}
