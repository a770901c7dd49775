//! Per-account delivery workers: take due entries from the account's queue and send them over
//! a reused, authenticated upstream session.
//!
//! Invariants:
//! - At most `max_connections` workers per account, each owning at most one upstream session,
//!   so Exchange never sees more sessions per mailbox than configured (≤ 3).
//! - An entry leaves the spool only after Exchange answered `250` to its content.
//! - Every failed attempt is classified once (transient / configuration / permanent), written
//!   to the entry's envelope (attempts, next attempt, last reply) and logged with the queue id,
//!   account, stage, reply, class and the administrator's fix.
//! - A failure of the account as a whole (token, connection, TLS, AUTH) defers only the entry
//!   at hand and pauses the account, instead of failing the whole backlog one by one.
//! - `535 5.7.3` with a cached token: drop it, fetch a fresh one, try once more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::classify::{self, Class, FollowUp, Stage, Verdict};
use super::pacer::Pacer;
use crate::config::{AccountSettings, QueueSettings};
use crate::oauth::token::{TokenError, TokenProvider};
use crate::queue::{AccountQueue, Next, retry};
use crate::spool::{Envelope, LastAttempt, Spool, SpoolError, unix_now};
use crate::upstream::{FailureKind, Upstream, UpstreamFailure, UpstreamSession};

/// Everything the workers of one account share.
pub struct AccountDelivery {
    pub account: Arc<AccountSettings>,
    pub queue: Arc<AccountQueue>,
    pub spool: Arc<Spool>,
    pub tokens: Arc<TokenProvider>,
    pub upstream: Upstream,
    pub settings: QueueSettings,
    pub pacer: Pacer,
}

/// A failed attempt, ready to be recorded.
struct Failure {
    stage: String,
    verdict: Verdict,
    /// The server's reply or what went wrong.
    detail: String,
    /// The whole account is failing, not just this message.
    account_wide: bool,
}

impl Failure {
    fn from_upstream(failure: &UpstreamFailure) -> Failure {
        let verdict = match &failure.kind {
            FailureKind::Reply { code, text } => {
                classify::classify_reply(failure.stage, *code, text)
            }
            FailureKind::Transport { failure: kind, .. } => {
                classify::classify_transport(failure.stage, *kind)
            }
            FailureKind::Local(_) => local_verdict(failure.stage),
        };
        Failure {
            stage: failure.stage.to_string(),
            detail: failure.to_string(),
            account_wide: matches!(
                failure.stage,
                Stage::Connect
                    | Stage::Greeting
                    | Stage::Ehlo
                    | Stage::StartTls
                    | Stage::Tls
                    | Stage::Auth
            ),
            verdict,
        }
    }

    fn from_token(error: &TokenError) -> Failure {
        let class = if error.is_configuration() {
            Class::Configuration
        } else {
            Class::Transient
        };
        let fix = match error {
            TokenError::Refused(failure) => failure.explanation().map_or(
                "read the token endpoint's answer above; check tenant_id, client_id, the secret and authority",
                |explanation| explanation.fix,
            ),
            TokenError::Unreachable(_) => {
                "check that this host can reach the authority over HTTPS (DNS, firewall, HTTPS_PROXY)"
            }
            TokenError::BadAnswer(_) => "check that authority points at the Microsoft identity platform",
        };
        Failure {
            stage: "token".into(),
            verdict: Verdict {
                class,
                reason: "the token endpoint did not issue an access token",
                fix,
                duplicate_possible: false,
                follow_up: FollowUp::None,
            },
            detail: error.to_string(),
            account_wide: true,
        }
    }
}

/// A failure the relay itself detected (e.g. no STARTTLS offered): the server is not what the
/// account expects, which an administrator must look at.
fn local_verdict(stage: Stage) -> Verdict {
    let (class, reason, fix) = match stage {
        Stage::MailFrom | Stage::RcptTo => (
            Class::Permanent,
            "the message cannot be expressed for this server",
            "check the sender and recipient addresses of the message",
        ),
        _ => (
            Class::Configuration,
            "the upstream server does not offer what Exchange Online offers",
            "check smtp_server and smtp_tls of the account (smtp.office365.com:587 with STARTTLS)",
        ),
    };
    Verdict {
        class,
        reason,
        fix,
        duplicate_possible: false,
        follow_up: FollowUp::None,
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
        tracker.spawn(async move { delivery.run(cancel).await }.instrument(span));
    }
}

impl AccountDelivery {
    async fn run(&self, cancel: CancellationToken) {
        let mut session: Option<UpstreamSession> = None;
        loop {
            let idle = session
                .as_ref()
                .map(|_| self.settings.connection_idle_timeout);
            match self.queue.next(&cancel, idle).await {
                Next::Shutdown => break,
                Next::Idle => {
                    if let Some(open) = session.take() {
                        tracing::debug!(
                            messages = open.transactions(),
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
    }

    async fn deliver(&self, id: &str, session: &mut Option<UpstreamSession>) {
        let started = Instant::now();
        let envelope = match self.spool.load(id).await {
            Ok(envelope) => envelope,
            Err(error) => return self.unreadable(id, error).await,
        };
        if retry::expired(envelope.received_at, unix_now(), self.settings.max_age) {
            return self.expire(envelope).await;
        }
        let body = match self.spool.read_body(&envelope).await {
            Ok(body) => body,
            Err(error) => return self.unreadable(id, error).await,
        };
        if session.is_none() {
            match self.open_session().await {
                Ok(open) => *session = Some(open),
                Err(failure) => return self.record_failure(envelope, failure).await,
            }
        }
        let Some(open) = session.as_mut() else { return };
        self.pacer.acquire().await;
        match open.send(&envelope, &body).await {
            Ok(reply) => {
                if let Err(error) = self.spool.remove(id).await {
                    tracing::error!(%error, "delivered, but the spool entry could not be removed; it may be sent again after a restart");
                }
                self.queue.finish(id);
                self.queue.resume();
                tracing::info!(
                    queue_id = %id,
                    account = %self.account.name,
                    sender = %envelope.sender.as_ref().map(|s| s.as_str()).unwrap_or(""),
                    recipients = envelope.recipients.len(),
                    size = envelope.body_len,
                    attempts = envelope.attempts + 1,
                    duration_ms = started.elapsed().as_millis() as u64,
                    upstream_reply = %reply,
                    "message delivered"
                );
            }
            Err(failure) => {
                let broken = matches!(
                    failure.kind,
                    FailureKind::Transport { .. } | FailureKind::Local(_)
                );
                if broken || !open.reset().await {
                    *session = None;
                }
                self.record_failure(envelope, Failure::from_upstream(&failure))
                    .await;
            }
        }
    }

    /// Token, connect, STARTTLS, AUTH; with one token refresh on `535 5.7.3`.
    async fn open_session(&self) -> Result<UpstreamSession, Failure> {
        let token = self
            .tokens
            .token()
            .await
            .map_err(|e| Failure::from_token(&e))?;
        match self.upstream.open(&token).await {
            Ok(session) => Ok(session),
            Err(failure) => {
                let first = Failure::from_upstream(&failure);
                if first.verdict.follow_up != FollowUp::RefreshTokenOnce {
                    return Err(first);
                }
                tracing::info!(reply = %failure, "Exchange refused the cached token; fetching a fresh one and trying once more");
                self.tokens.invalidate(&token).await;
                let fresh = self
                    .tokens
                    .token()
                    .await
                    .map_err(|e| Failure::from_token(&e))?;
                self.upstream
                    .open(&fresh)
                    .await
                    .map_err(|failure| Failure::from_upstream(&failure))
            }
        }
    }

    async fn unreadable(&self, id: &str, error: SpoolError) {
        match error {
            SpoolError::NotFound(_) => self.queue.finish(id),
            SpoolError::Corrupt { reason, .. } => {
                tracing::error!(queue_id = %id, %reason, "spool entry is damaged; moved to corrupt/ and not delivered");
                if let Err(error) = self.spool.quarantine(id).await {
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

    async fn expire(&self, mut envelope: Envelope) {
        let last = envelope
            .last_attempt
            .as_ref()
            .map(|a| format!("; last attempt: {} at {}: {}", a.class, a.stage, a.reply))
            .unwrap_or_default();
        let reply = format!(
            "not delivered within {}{last}",
            humantime::format_duration(self.settings.max_age)
        );
        tracing::error!(queue_id = %envelope.id, account = %self.account.name, %reply, "message expired");
        envelope.last_attempt = Some(LastAttempt {
            at: unix_now(),
            class: Class::Permanent.to_string(),
            stage: "expired".into(),
            reply,
            hint: envelope
                .last_attempt
                .as_ref()
                .map(|a| a.hint.clone())
                .unwrap_or_default(),
        });
        self.move_to_failed(&envelope).await;
    }

    async fn move_to_failed(&self, envelope: &Envelope) {
        if let Err(error) = self.spool.fail(envelope).await {
            tracing::error!(queue_id = %envelope.id, %error, "cannot move the entry to failed/; it stays queued");
            self.queue.schedule(&envelope.id, unix_now() + 300);
            return;
        }
        self.queue.finish(&envelope.id);
    }

    async fn record_failure(&self, mut envelope: Envelope, failure: Failure) {
        let verdict = &failure.verdict;
        envelope.attempts += 1;
        envelope.last_attempt = Some(LastAttempt {
            at: unix_now(),
            class: verdict.class.to_string(),
            stage: failure.stage.clone(),
            reply: failure.detail.clone(),
            hint: verdict.fix.to_string(),
        });
        let fix = if verdict.fix.is_empty() {
            "none needed"
        } else {
            verdict.fix
        };
        // One set of fields for every failure line, whatever its level.
        macro_rules! failure_event {
            ($level:ident, $($extra:tt)*) => {
                tracing::$level!(
                    queue_id = %envelope.id,
                    account = %self.account.name,
                    stage = %failure.stage,
                    upstream_reply = %failure.detail,
                    class = %verdict.class,
                    reason = verdict.reason,
                    hint = fix,
                    attempt = envelope.attempts,
                    duplicate_possible = verdict.duplicate_possible,
                    $($extra)*
                )
            };
        }
        if verdict.class == Class::Permanent {
            failure_event!(error, "message failed permanently; kept in failed/");
            return self.move_to_failed(&envelope).await;
        }
        let delay = match verdict.class {
            Class::Configuration => {
                retry::configuration_delay(&self.settings.retry_schedule, envelope.attempts)
            }
            _ => retry::transient_delay(&self.settings.retry_schedule, envelope.attempts),
        };
        let delay = Duration::from_secs(delay.as_secs().max(1));
        envelope.next_attempt = unix_now() + delay.as_secs();
        let retry_in = humantime::format_duration(delay).to_string();
        if verdict.class == Class::Configuration {
            failure_event!(
                error,
                retry_in = %retry_in,
                "delivery blocked by configuration; the message stays queued until it is fixed"
            );
        } else {
            failure_event!(warn, retry_in = %retry_in, "delivery deferred");
        }
        if let Err(error) = self.spool.update(&envelope).await {
            tracing::error!(queue_id = %envelope.id, %error, "cannot record the attempt in the spool");
        }
        if failure.account_wide {
            self.queue.pause_until(envelope.next_attempt);
        }
        self.queue.schedule(&envelope.id, envelope.next_attempt);
    }
}
