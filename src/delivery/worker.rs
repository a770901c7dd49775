//! Per-account delivery workers: take due entries from the account's queue and send them over
//! a reused, authenticated session of the account's transport (`crate::transport`).
//!
//! Invariants:
//! - At most `max_connections` workers per account, each owning at most one upstream session,
//!   so Exchange never sees more sessions per mailbox than configured (≤ 3).
//! - Messages go out at most `max_messages_per_minute` a minute and within the mailbox's
//!   rolling 24-hour recipient and message budgets, reserved before each transaction (so
//!   workers sending at once never pass them together); what does not fit waits, it is never
//!   sent to be refused.
//! - An envelope with more recipients than `max_recipients_per_message` is sent in several
//!   transactions; recipients refused one by one follow their own classification.
//! - A failure of the account as a whole (token, connection, TLS, AUTH, quota) defers only the
//!   entry at hand and pauses the account, instead of failing the whole backlog one by one.
//! - `535 5.7.3` with a cached token: drop it, fetch a fresh one, try once more.
//! - A `430 4.2.0` mailbox logon failure that lasts more than an hour is a configuration fault.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::attempt::AttemptOutcome;
use super::budget::RecipientBudget;
use super::escalation::LogonFailureClock;
use super::failure::ClassifiedFailure;
use super::pacer::Pacer;
use super::share::SessionShare;
use crate::config::{AccountSettings, QueueSettings};
use crate::metrics::Metrics;
use crate::oauth::token::TokenProvider;
use crate::queue::{AccountQueue, Next, retry};
use crate::spool::{Content, Spool, SpoolError, unix_now};
use crate::transport::{Transport, TransportSession};
use crate::vocab::envelope::Envelope;
use crate::vocab::verdict::{Class, FollowUp};

/// The most transactions one attempt may use for one message (recipient splitting).
const MAX_TRANSACTIONS_PER_ATTEMPT: usize = 20;

/// What every account's delivery shares.
pub struct DeliveryShared {
    pub spool: Arc<Spool>,
    pub settings: QueueSettings,
    /// The relay's host name (for DSNs).
    pub hostname: String,
    pub metrics: Arc<Metrics>,
}

/// Everything the workers of one account share.
pub struct AccountDelivery {
    pub account: Arc<AccountSettings>,
    pub queue: Arc<AccountQueue>,
    pub tokens: Arc<TokenProvider>,
    /// How the account reaches its mail server (the transport seam).
    pub transport: Transport,
    pub shared: Arc<DeliveryShared>,
    pub pacer: Pacer,
    /// How many workers may hold a session now (fewer for a while after a 432 4.3.2).
    pub share: SessionShare,
    pub budget: Arc<RecipientBudget>,
    /// Messages (transactions) per rolling 24 hours: the same counter, counting one each.
    pub message_budget: Arc<RecipientBudget>,
    /// Since when the mailbox has answered `430 4.2.0` without a success.
    logon_failures: LogonFailureClock,
    /// When the recipient counts were last written (unix seconds).
    pub(super) budget_saved_at: std::sync::atomic::AtomicU64,
    /// Failing since, last delivery: shared with the account's other generations.
    pub health: Arc<super::health::AccountHealth>,
}

impl AccountDelivery {
    /// Build the shared state of one account's workers (reading the saved recipient counts off
    /// the runtime).
    pub async fn new(
        account: Arc<AccountSettings>,
        queue: Arc<AccountQueue>,
        tokens: Arc<TokenProvider>,
        transport: Transport,
        shared: Arc<DeliveryShared>,
    ) -> AccountDelivery {
        let saved = shared
            .spool
            .read_state(&super::worker_budgets::budget_file(&account.name))
            .await;
        let saved_messages = shared
            .spool
            .read_state(&super::worker_budgets::message_budget_file(&account.name))
            .await;
        AccountDelivery {
            pacer: Pacer::new(account.max_messages_per_minute),
            share: SessionShare::new(account.max_connections),
            budget: Arc::new(RecipientBudget::new(
                account.max_recipients_per_day,
                saved.as_deref(),
            )),
            message_budget: Arc::new(RecipientBudget::new(
                account.max_messages_per_day,
                saved_messages.as_deref(),
            )),
            account,
            queue,
            tokens,
            transport,
            shared,
            logon_failures: LogonFailureClock::default(),
            budget_saved_at: std::sync::atomic::AtomicU64::new(0),
            health: Arc::default(),
        }
    }

    /// Since when (unix seconds) the account as a whole has been failing, if it is.
    pub fn failing_since(&self) -> Option<u64> {
        self.health.failing_since()
    }

    pub(super) fn set_failing(&self, failing: bool) {
        self.health.set_failing(failing, unix_now());
    }
}

/// Start the workers of one account.
pub fn spawn_workers(
    delivery: Arc<AccountDelivery>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    for index in 0..delivery.account.max_connections {
        let delivery = Arc::clone(&delivery);
        let cancel = cancel.clone();
        let span =
            tracing::info_span!("delivery", account = %delivery.account.name, worker = index);
        tracker.spawn(async move { delivery.run(index, cancel).await }.instrument(span));
    }
}

impl AccountDelivery {
    async fn run(&self, index: usize, cancel: CancellationToken) {
        let mut session: Option<TransportSession> = None;
        loop {
            // Registered before the share is read, so a reduction in between is not missed.
            let shrunk = self.share.shrunk();
            tokio::pin!(shrunk);
            shrunk.as_mut().enable();
            // Outside the account's current share of sessions: hold none, take nothing.
            if index >= self.share.allowed(unix_now()) {
                if let Some(open) = session.take() {
                    open.quit().await;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
            let idle = session
                .as_ref()
                .map(|_| self.shared.settings.connection_idle_timeout);
            // An idle worker must give its session up as soon as the share shrinks.
            let next = tokio::select! {
                next = self.queue.next(&cancel, idle) => next,
                _ = &mut shrunk => continue,
            };
            match next {
                Next::Shutdown => break,
                Next::Idle => {
                    if let Some(open) = session.take() {
                        tracing::debug!(
                            messages = open.messages_sent(),
                            "closing idle upstream session"
                        );
                        open.quit().await;
                    }
                }
                Next::Due(id) => {
                    let span = tracing::info_span!("attempt", queue_id = %id);
                    self.deliver(&id, &mut session).instrument(span).await;
                }
            }
        }
        if let Some(open) = session.take() {
            open.quit().await;
        }
        self.save_budget(true).await;
    }

    async fn deliver(&self, id: &str, session: &mut Option<TransportSession>) {
        let started = std::time::Instant::now();
        let (envelope, body) = match self.shared.spool.load_entry(id).await {
            Ok(entry) => entry,
            Err(error) => return self.unreadable(id, error).await,
        };
        if retry::expired(
            envelope.queue_lifetime_start(),
            unix_now(),
            self.shared.settings.max_age,
        ) {
            return self.expire(envelope, body.head()).await;
        }
        if session
            .as_ref()
            .is_some_and(TransportSession::token_due_for_renewal)
        {
            // A session that sends its token with every request starts afresh with a new one.
            *session = None;
        }
        let reused = session.is_some();
        let mut outcome = self.send_on_session(&envelope, &body, session).await;
        if reused && outcome.lost_an_idle_session() {
            // Exchange closes idle sessions on its own schedule; that is no reason to make
            // this message wait a whole retry step.
            tracing::info!(reply = ?outcome.stop.as_ref().map(|f| &f.detail), "the reused upstream session was gone; sending on a new one");
            *session = None;
            outcome = self.send_on_session(&envelope, &body, session).await;
        }
        outcome.started = Some(started);
        let refused_for_concurrency = outcome
            .stop
            .iter()
            .chain(outcome.deferred.iter().map(|(_, f)| f))
            .any(|f| f.verdict.follow_up == FollowUp::ReduceConcurrency);
        if refused_for_concurrency {
            let share = self.share.back_off(unix_now());
            tracing::warn!(
                sessions = share,
                minutes = super::share::SHARE_RESTORED_AFTER_SECS / 60,
                "Exchange refused a session for the mailbox (432 4.3.2): another client is using it; the relay uses fewer sessions for a while"
            );
        }
        if !outcome.delivered.is_empty() {
            self.queue.resume();
            self.logon_failures.clear();
            self.save_budget(false).await;
        }
        self.settle(envelope, body.head(), outcome).await;
    }

    /// Open a session unless one is open, then send: a session that cannot be opened ends
    /// the attempt with every recipient untried.
    async fn send_on_session(
        &self,
        envelope: &Envelope,
        body: &Content,
        session: &mut Option<TransportSession>,
    ) -> AttemptOutcome {
        if session.is_none() {
            match self.open_session().await {
                Ok(open) => *session = Some(open),
                Err(failure) => {
                    return AttemptOutcome {
                        untried: envelope.recipients.clone(),
                        stop: Some(failure),
                        ..AttemptOutcome::default()
                    };
                }
            }
        }
        self.transactions(envelope, body, session).await
    }

    /// Send `envelope` in as many transactions as its recipients need.
    async fn transactions(
        &self,
        envelope: &Envelope,
        body: &Content,
        session: &mut Option<TransportSession>,
    ) -> AttemptOutcome {
        let mut outcome = AttemptOutcome::default();
        let mut pending = envelope.recipients.clone();
        let chunk_size = self.account.max_recipients_per_message.max(1);
        let mut token_refreshed = false;
        for _ in 0..MAX_TRANSACTIONS_PER_ATTEMPT {
            if pending.is_empty() {
                break;
            }
            let Some(open) = session.as_mut() else {
                outcome.untried.append(&mut pending);
                break;
            };
            let take = pending.len().min(chunk_size);
            let chunk: Vec<_> = pending.drain(..take).collect();
            if let Err(spent) = self.reserve_budgets(chunk.len()) {
                outcome.stop = Some(spent);
                outcome.untried.extend(chunk);
                outcome.untried.append(&mut pending);
                break;
            }
            let pace_slot = self.pacer.acquire().await;
            let send_result = open.send(envelope, &chunk, body).await;
            // The message's minute starts when Exchange has answered (see `pacer`).
            drop(pace_slot);
            match send_result {
                Ok(result) => {
                    let sent = result.reply.is_some();
                    let taken = if sent { result.accepted.len() } else { 0 };
                    self.release_budgets(chunk.len().saturating_sub(taken), !sent);
                    if sent {
                        outcome.delivered.extend(result.accepted);
                        outcome.reply = result.reply;
                    }
                    for (recipient, refusal) in result.rejected {
                        let failure = ClassifiedFailure::from_transport(&refusal);
                        match failure.verdict.class {
                            Class::Permanent => outcome.failed.push((recipient, failure)),
                            // 452 4.5.3: the rest go in a new transaction right away.
                            _ if failure.verdict.follow_up == FollowUp::SplitRecipients && sent => {
                                pending.push(recipient)
                            }
                            _ => outcome.deferred.push((recipient, failure)),
                        }
                    }
                }
                Err(refusal) => {
                    let mut failure = ClassifiedFailure::from_transport(&refusal);
                    // Not sent, unless the final dot may have arrived: give the place back.
                    if !failure.verdict.duplicate_possible {
                        self.release_budgets(chunk.len(), true);
                    }
                    // A transport that sends its token with every request (Graph) learns of
                    // a refused token only now: drop it, and send once more with a new one.
                    if failure.verdict.follow_up == FollowUp::RefreshTokenOnce
                        && !token_refreshed
                        && let Some(token) = open.request_token().cloned()
                    {
                        token_refreshed = true;
                        tracing::info!(reply = %refusal, "the server refused the cached token; fetching a fresh one and sending once more");
                        self.tokens.invalidate(&token).await;
                        *session = None;
                        match self.open_session().await {
                            Ok(fresh) => {
                                *session = Some(fresh);
                                let mut retry = chunk;
                                retry.append(&mut pending);
                                pending = retry;
                                continue;
                            }
                            Err(stop) => {
                                outcome.untried.extend(chunk);
                                outcome.untried.append(&mut pending);
                                outcome.stop = Some(stop);
                                break;
                            }
                        }
                    }
                    self.logon_failures.observe(&mut failure, unix_now());
                    if refusal.breaks_session() || !open.reset().await {
                        *session = None;
                    }
                    outcome.untried.extend(chunk);
                    outcome.untried.append(&mut pending);
                    outcome.stop = Some(failure);
                    break;
                }
            }
        }
        outcome.untried.append(&mut pending);
        if outcome.stop.is_none() && !outcome.untried.is_empty() {
            // Out of transactions for this attempt: the rest go on the next one.
            let more = ClassifiedFailure::more_to_send();
            outcome
                .deferred
                .extend(outcome.untried.drain(..).map(|r| (r, more.clone())));
        }
        outcome
    }

    /// Token, connect, STARTTLS, AUTH; with one token refresh on `535 5.7.3`.
    async fn open_session(&self) -> Result<TransportSession, ClassifiedFailure> {
        let token = self
            .tokens
            .token_for(&self.account.name)
            .await
            .map_err(|e| ClassifiedFailure::from_token(&e))?;
        match self.transport.open(&token).await {
            Ok(session) => Ok(session),
            Err(failure) => {
                let first = ClassifiedFailure::from_transport(&failure);
                if first.verdict.follow_up != FollowUp::RefreshTokenOnce {
                    return Err(first);
                }
                tracing::info!(reply = %failure, "Exchange refused the cached token; fetching a fresh one and trying once more");
                self.tokens.invalidate(&token).await;
                let fresh = self
                    .tokens
                    .token_for(&self.account.name)
                    .await
                    .map_err(|e| ClassifiedFailure::from_token(&e))?;
                self.transport.open(&fresh).await.map_err(|failure| {
                    let mut refused = ClassifiedFailure::from_transport(&failure);
                    // Refused twice: say what the token carries, or what Exchange lacks.
                    if refused.verdict.follow_up == FollowUp::RefreshTokenOnce
                        && let Some(diagnosis) = self
                            .tokens
                            .refusal_diagnosis(&fresh, self.account.mailbox.as_str())
                    {
                        refused.detail = format!("{} (diagnosis: {diagnosis})", refused.detail);
                    }
                    refused
                })
            }
        }
    }

    async fn unreadable(&self, id: &str, error: SpoolError) {
        match error {
            SpoolError::NotFound(_) => self.queue.finish(id),
            SpoolError::Corrupt { reason, .. } => {
                tracing::error!(queue_id = %id, %reason, "spool entry is damaged; moved to corrupt/ and not delivered");
                if let Err(error) = self.shared.spool.quarantine(id).await {
                    tracing::error!(queue_id = %id, %error, "cannot quarantine the damaged entry");
                }
                self.queue.finish(id);
            }
            SpoolError::Io { .. } => {
                tracing::error!(queue_id = %id, %error, "cannot read the spool entry; trying again in a minute");
                self.queue.schedule(id, unix_now() + 60);
            }
        }
    }
}
