//! One account's delivery: prepared (token provider and upstream session built: the part that
//! can fail), then started as a new generation of workers that takes over from the previous
//! one. The relay's start and every reload start accounts through the same two functions.
//!
//! Invariants: a generation's workers start only after every older generation of the account
//! has finished its message (the hand-over runs in the new generation's own tracker, so quick
//! successive reloads wait in line), so Exchange never sees more sessions per mailbox than
//! configured; the queue, the 24-hour recipient budget and the account's health (failing
//! since, last delivery) carry over to the new generation. Tokens are per app, not per
//! account: accounts with the same endpoint, client, credential and scope share one provider
//! ([`crate::oauth::registry`]), and a reload keeps it (with its cached token) while that
//! identity is unchanged.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AccountRuntime, Shared, StartError};
use crate::config::AccountSettings;
use crate::delivery::worker::{AccountDelivery, DeliveryShared, spawn_workers};
use crate::metrics::Metrics;
use crate::oauth::registry::TokenProviders;
use crate::oauth::token::TokenProvider;
use crate::transport::Transport;

/// What an account needs before it can start, built before anything changes so that a
/// failure leaves the running relay as it was.
pub(super) struct PreparedAccount {
    tokens: Arc<TokenProvider>,
    upstream: Transport,
}

/// When an account starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Occasion {
    /// With the relay: its queue holds what the spool recovered, each entry due when its
    /// envelope says.
    Start,
    /// On a reload (replacing the previous generation when the account ran before): the
    /// account's backlog is retried at once (the reload is often the fix), and an account
    /// added back schedules its entries still in the spool.
    Reload,
}

/// Find the account's token provider in `providers` (the set being built for this
/// configuration: shared with the other accounts of the same app), taking it over from
/// `previous_providers` with its cached token when the app's identity is unchanged, and build
/// the account's upstream session settings.
///
/// # Errors
/// [`StartError::Account`] when either cannot be built (e.g. an unreadable extra root).
pub(super) fn prepare_account(
    account: &AccountSettings,
    providers: &mut TokenProviders,
    previous_providers: &TokenProviders,
    metrics: &Arc<Metrics>,
    hostname: &str,
) -> Result<PreparedAccount, StartError> {
    let failed = |message: String| StartError::Account {
        account: account.name.clone(),
        message,
    };
    let tokens: Arc<TokenProvider> = providers
        .provider(&account.client_app(), previous_providers, metrics)
        .map_err(failed)?;
    let upstream = Transport::new(account, hostname).map_err(failed)?;
    Ok(PreparedAccount { tokens, upstream })
}

/// Start a generation of the account's workers (and its credential-expiry watch), under a
/// child of `relay_cancel`. A `previous` generation is cancelled, its recipient budget carried
/// over, and the new one starts when it has finished; see [`Occasion`] for what else a reload
/// does.
pub(super) async fn start_account(
    account: &AccountSettings,
    prepared: PreparedAccount,
    shared: &Shared,
    delivery_shared: &Arc<DeliveryShared>,
    relay_cancel: &CancellationToken,
    previous: Option<AccountRuntime>,
    occasion: Occasion,
) -> AccountRuntime {
    let reloading = occasion == Occasion::Reload;
    let PreparedAccount { tokens, upstream } = prepared;
    let (queue, new_account) = shared.queue.add_account(&account.name);
    let queue_for_retry = Arc::clone(&queue);
    let mut delivery = AccountDelivery::new(
        Arc::new(account.clone()),
        queue,
        tokens,
        upstream,
        Arc::clone(delivery_shared),
    )
    .await;
    if let Some(old) = &previous {
        // Keep counting against the same 24-hour window.
        delivery.budget = Arc::clone(&old.delivery.budget);
        delivery.budget.set_limit(account.max_recipients_per_day);
        delivery.health = Arc::clone(&old.delivery.health);
    }
    let delivery = Arc::new(delivery);
    let runtime = AccountRuntime {
        delivery: Arc::clone(&delivery),
        cancel: relay_cancel.child_token(),
        workers: TaskTracker::new(),
    };
    let (cancel, workers) = (runtime.cancel.clone(), runtime.workers.clone());
    let old_workers = previous.map(|old| {
        old.cancel.cancel();
        old.workers.close();
        old.workers
    });
    let credential_expiry = account.credential_expiry();
    let name = account.name.clone();
    // The hand-over runs in the new generation's own tracker: a reload that comes
    // before it is done waits for it (and so for every older generation) too. Never
    // two generations' sessions at once: Exchange refuses a 4th per mailbox.
    let generation = workers.clone();
    let retry_backlog = reloading && !new_account;
    workers.spawn(async move {
        if let Some(old_workers) = old_workers {
            old_workers.wait().await;
        }
        if cancel.is_cancelled() {
            return;
        }
        // The reload may be the fix the account was waiting for: try its backlog now.
        // Only now: an attempt of the old generation still running during the reload
        // settles before, and would otherwise defer its message (and pause the
        // account) again after the retry.
        if retry_backlog {
            let retried = queue_for_retry.retry_now();
            if retried > 0 {
                tracing::info!(account = %name, retried, "queued messages are retried now with the new configuration");
            }
        }
        spawn_workers(delivery, &cancel, &generation);
        generation.spawn(crate::oauth::expiry::watch_credential_expiry(
            name,
            credential_expiry,
            cancel.clone(),
        ));
    });
    if reloading && new_account {
        schedule_orphans(shared, &account.name).await;
    }
    runtime
}

/// Schedule spool entries of an account that was just added back.
async fn schedule_orphans(shared: &Shared, account: &str) {
    if let Ok(entries) = shared.spool.list_queued().await {
        let mut count = 0;
        for entry in entries.iter().filter(|e| e.account == account) {
            if shared.queue.find(&entry.id).is_none() && shared.queue.submit(entry) {
                count += 1;
            }
        }
        if count > 0 {
            tracing::info!(%account, count, "queued messages of the account are scheduled again");
        }
    }
}
