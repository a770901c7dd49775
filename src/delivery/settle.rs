//! Settling an attempt: bringing the spool, the queue and the log in line with what an
//! attempt did ([`AttemptOutcome`]): delivered recipients leave the entry, failed ones go to
//! `failed/` with a DSN, deferred ones wait for their retry time.
//!
//! Invariants:
//! - Every recipient ends an attempt in exactly one of: delivered (removed from the entry),
//!   failed (recorded in `failed/`, and a DSN is queued unless the message is a DSN itself or
//!   has the null sender), or deferred (kept in the entry with the attempt recorded).
//! - Recipients that already have the message are never offered it again.
//! - Every failure is logged once, with queue id, account, stage, reply, class and the fix.

use std::time::Duration;

use super::attempt::AttemptOutcome;
use super::dsn;
use super::failure::{ClassifiedFailure, MAX_UNCERTAIN_ATTEMPTS, OUTCOME_UNKNOWN_STAGE};
use super::worker::AccountDelivery;
use crate::metrics::Metrics;
use crate::queue::{FirstOutcome, retry};
use crate::spool::unix_now;
use crate::vocab::address::Address;
use crate::vocab::envelope::{ClientInfo, Envelope, FailedRecipient, LastAttempt};
use crate::vocab::verdict::{Class, FollowUp, Verdict};

impl AccountDelivery {
    /// Bring spool, queue and log in line with an attempt. `head` is the beginning of the
    /// content (at least its header section), for DSNs.
    pub(super) async fn settle(
        &self,
        mut envelope: Envelope,
        head: &[u8],
        mut outcome: AttemptOutcome,
    ) {
        let now = unix_now();
        outcome.resolve_untried();
        self.count(&envelope, &outcome);
        if self.answer_waiting_client(&envelope, &outcome).await {
            return;
        }
        envelope.delivered.extend(outcome.delivered.iter().cloned());
        if outcome
            .stop
            .as_ref()
            .is_some_and(|f| f.verdict.duplicate_possible)
            || outcome
                .deferred
                .iter()
                .any(|(_, f)| f.verdict.duplicate_possible)
        {
            envelope.uncertain_attempts += 1;
            if envelope.uncertain_attempts >= MAX_UNCERTAIN_ATTEMPTS {
                outcome.stop_resending(envelope.uncertain_attempts);
            }
        }
        for (recipient, failure) in &outcome.failed {
            self.log_failure(
                &envelope,
                failure,
                Some(recipient),
                "recipient failed permanently",
            );
        }
        let failures: Vec<FailedRecipient> = outcome
            .failed
            .iter()
            .map(|(r, f)| {
                let fix = f.fix_for(envelope.sender.as_ref(), &self.account.mailbox);
                f.record(r, now, &fix)
            })
            .collect();
        let remaining: Vec<Address> = outcome.deferred.iter().map(|(r, _)| r.clone()).collect();

        if !outcome.delivered.is_empty() {
            self.log_delivered(&envelope, &outcome);
        }
        if remaining.is_empty() {
            if failures.is_empty() {
                if let Err(error) = self.shared.spool.remove(&envelope.id).await {
                    tracing::error!(queue_id = %envelope.id, %error, "delivered, but the spool entry could not be removed; it may be sent again after a restart");
                }
                self.queue.finish(&envelope.id);
            } else if envelope.delivered.is_empty() {
                let mut failed = envelope.clone();
                failed.recipients = failures.iter().map(|f| f.recipient.clone()).collect();
                failed.failures = failures.clone();
                self.move_to_failed(&failed).await;
                self.bounce(&failed, head, &failures).await;
            } else {
                self.record_failed_recipients(&envelope, &failures).await;
                self.bounce(&envelope, head, &failures).await;
                if let Err(error) = self.shared.spool.remove(&envelope.id).await {
                    tracing::error!(queue_id = %envelope.id, %error, "cannot remove the finished spool entry");
                }
                self.queue.finish(&envelope.id);
            }
            return;
        }
        if !failures.is_empty() {
            self.record_failed_recipients(&envelope, &failures).await;
            self.bounce(&envelope, head, &failures).await;
        }
        let Some(failure) = outcome.deciding_failure().cloned() else {
            return;
        };
        envelope.recipients = remaining;
        self.defer(envelope, &failure, now).await;
    }

    /// Metrics and the account's health for one attempt.
    fn count(&self, envelope: &Envelope, outcome: &AttemptOutcome) {
        let metrics = &self.shared.metrics;
        let account = Metrics::account(&self.account.name);
        if !outcome.delivered.is_empty() {
            metrics.delivered.get_or_create(&account).inc();
            metrics
                .delivered_recipients
                .get_or_create(&account)
                .inc_by(outcome.delivered.len() as u64);
            metrics
                .delivered_bytes
                .get_or_create(&account)
                .inc_by(envelope.body_len);
            metrics
                .upstream_replies
                .get_or_create(&Metrics::reply(&self.account.name, 250))
                .inc();
            self.health.delivered(unix_now());
        }
        for (_, failure) in &outcome.failed {
            metrics
                .failed
                .get_or_create(&Metrics::class(
                    &self.account.name,
                    failure.verdict.class.as_str(),
                ))
                .inc();
        }
        // One deferral per attempt: the failure that ended it, else the first deferred
        // recipient's (the recipients an ending failure left untried carry a copy of it).
        let deciding = outcome
            .stop
            .as_ref()
            .or_else(|| outcome.deferred.first().map(|(_, f)| f));
        if let Some(failure) = deciding {
            if failure.verdict.class != Class::Permanent {
                metrics
                    .deferred
                    .get_or_create(&Metrics::class(
                        &self.account.name,
                        failure.verdict.class.as_str(),
                    ))
                    .inc();
            }
            if failure.account_wide && failure.stage != "budget" {
                self.set_failing(true);
            }
        }
        for failure in deciding
            .into_iter()
            .chain(outcome.failed.iter().map(|(_, f)| f).take(1))
        {
            if let Some(code) = failure.code {
                metrics
                    .upstream_replies
                    .get_or_create(&Metrics::reply(&self.account.name, code))
                    .inc();
            }
        }
    }

    /// A client on an `acknowledge = "delivered"` listener may still be waiting for this
    /// first attempt. Tell it the outcome. Returns true when the client took a permanent
    /// refusal for every recipient: it has Exchange's reply, so the relay keeps nothing.
    async fn answer_waiting_client(&self, envelope: &Envelope, outcome: &AttemptOutcome) -> bool {
        let Some(waiter) = self.queue.take_waiter(&envelope.id) else {
            return false;
        };
        if !outcome.delivered.is_empty() {
            let reply = outcome.reply.clone().unwrap_or_default();
            let _ = waiter.send(FirstOutcome::Delivered { reply });
            return false;
        }
        let refused_by_all = outcome.deferred.is_empty() && !outcome.failed.is_empty();
        let Some((_, failure)) = outcome.failed.first().filter(|_| refused_by_all) else {
            let _ = waiter.send(FirstOutcome::Deferred);
            return false;
        };
        let (code, text) = reply_parts(&failure.detail);
        if waiter.send(FirstOutcome::Rejected { code, text }).is_err() {
            return false;
        }
        for (recipient, failure) in &outcome.failed {
            self.log_failure(
                envelope,
                failure,
                Some(recipient),
                "refused for good; the waiting client got Exchange's reply and no copy is kept",
            );
        }
        if let Err(error) = self.shared.spool.remove(&envelope.id).await {
            tracing::error!(queue_id = %envelope.id, %error, "cannot remove the refused entry");
        }
        self.queue.finish(&envelope.id);
        true
    }

    async fn defer(&self, mut envelope: Envelope, failure: &ClassifiedFailure, now: u64) {
        envelope.attempts += 1;
        envelope.last_attempt = Some(LastAttempt {
            at: now,
            class: failure.verdict.class.to_string(),
            stage: failure.stage.clone(),
            reply: failure.detail.clone(),
            hint: failure.fix_for(envelope.sender.as_ref(), &self.account.mailbox),
        });
        let schedule = &self.shared.settings.retry_schedule;
        let mut delay = match failure.verdict.class {
            Class::Configuration => retry::configuration_delay(schedule, envelope.attempts),
            _ => retry::transient_delay(schedule, envelope.attempts),
        };
        if failure.verdict.follow_up == FollowUp::LongBackoff {
            delay = delay.max(retry::LONG_BACKOFF.min(self.shared.settings.max_age));
        }
        let delay = retry::with_jitter(delay);
        let mut next = now + delay.as_secs().max(1);
        if let Some(not_before) = failure.not_before {
            next = next.max(not_before);
        }
        envelope.next_attempt = next;
        let retry_in = humantime::format_duration(Duration::from_secs(next - now)).to_string();
        if failure.verdict.class == Class::Configuration {
            self.log_failure(
                &envelope,
                failure,
                None,
                "delivery blocked by configuration; the message stays queued until it is fixed (or until max_age), and a reload after the fix retries it at once",
            );
        } else {
            self.log_failure(&envelope, failure, None, "delivery deferred");
        }
        tracing::debug!(queue_id = %envelope.id, %retry_in, "next attempt scheduled");
        if let Err(error) = self.shared.spool.update(&envelope).await {
            tracing::error!(queue_id = %envelope.id, %error, "cannot record the attempt in the spool");
        }
        if failure.account_wide {
            self.queue.pause_until(next);
        }
        self.queue.schedule(&envelope.id, next);
    }

    /// Every recipient of an entry older than `max_age` fails.
    pub(super) async fn expire(&self, envelope: Envelope, head: &[u8]) {
        let last = envelope
            .last_attempt
            .as_ref()
            .map(|a| format!("; last attempt: {} at {}: {}", a.class, a.stage, a.reply))
            .unwrap_or_default();
        let failure = ClassifiedFailure {
            stage: "expired".into(),
            verdict: Verdict {
                class: Class::Permanent,
                reason: "the message could not be delivered within the queue lifetime (max_age)",
                fix: "see the last attempt's reply; raise [queue] max_age if outages last longer",
                duplicate_possible: false,
                follow_up: FollowUp::None,
            },
            detail: format!(
                "not delivered within {}{last}",
                humantime::format_duration(self.shared.settings.max_age)
            ),
            account_wide: false,
            not_before: None,
            code: None,
        };
        let outcome = AttemptOutcome {
            failed: envelope
                .recipients
                .iter()
                .map(|r| (r.clone(), failure.clone()))
                .collect(),
            ..AttemptOutcome::default()
        };
        self.settle(envelope, head, outcome).await;
    }

    async fn move_to_failed(&self, failed: &Envelope) {
        if let Err(error) = self.shared.spool.fail(failed).await {
            tracing::error!(queue_id = %failed.id, %error, "cannot move the entry to failed/; it stays queued");
            self.queue.schedule(&failed.id, unix_now() + 300);
            return;
        }
        self.queue.finish(&failed.id);
    }

    async fn record_failed_recipients(&self, envelope: &Envelope, failures: &[FailedRecipient]) {
        let mut failed = envelope.clone();
        failed.recipients = failures.iter().map(|f| f.recipient.clone()).collect();
        failed.failures = failures.to_vec();
        if let Err(error) = self.shared.spool.record_failed_recipients(&failed).await {
            tracing::error!(queue_id = %envelope.id, %error, "cannot record the failed recipients in failed/");
        }
    }

    /// Queue a DSN for `failures`, unless the policy, a null sender or the message being a
    /// DSN itself forbid it.
    async fn bounce(&self, original: &Envelope, head: &[u8], failures: &[FailedRecipient]) {
        // A message that probably arrived is not reported as undelivered.
        let failures: Vec<FailedRecipient> = failures
            .iter()
            .filter(|f| f.stage != OUTCOME_UNKNOWN_STAGE)
            .cloned()
            .collect();
        if failures.is_empty() {
            return;
        }
        let failures = failures.as_slice();
        let Some(to) = dsn::should_bounce(&self.shared.settings.bounce, original) else {
            tracing::info!(queue_id = %original.id, is_bounce = original.is_bounce, null_sender = original.sender.is_none(), "no delivery status notification for this failure");
            return;
        };
        let Ok(to_address) = Address::parse(&to) else {
            tracing::error!(queue_id = %original.id, to = %to, "cannot send a DSN to an invalid address");
            return;
        };
        let unique = crate::vocab::hex::lower(&crate::vocab::random::unique_bytes::<8>());
        let mailbox = self.account.mailbox.to_string();
        let server = self.transport.server();
        let content = dsn::build(&dsn::DsnInput {
            reporting_host: &self.shared.hostname,
            from_mailbox: &mailbox,
            from_name: self.account.sender_name.as_deref(),
            to: &to,
            original,
            original_content: head,
            failures,
            remote_mta: &server,
            now: time::OffsetDateTime::now_utc(),
            unique: &unique,
        });
        let mut envelope = Envelope::new(
            &self.account.name,
            Some(self.account.mailbox.clone()),
            vec![to_address],
            ClientInfo {
                peer: "local".into(),
                helo: None,
                principal: format!("delivery status notification for {}", original.id),
            },
            unix_now(),
        );
        envelope.is_bounce = true;
        envelope.eight_bit = !content.is_ascii();
        let stored = async {
            let mut writer = self.shared.spool.create_bounce().await?;
            writer.write(&content).await?;
            writer.commit(envelope).await
        };
        match stored.await {
            Ok(dsn) => {
                tracing::info!(queue_id = %original.id, dsn_queue_id = %dsn.id, to = %to, recipients = failures.len(), "delivery status notification queued");
                self.queue.schedule(&dsn.id, dsn.next_attempt);
            }
            Err(error) => {
                tracing::error!(queue_id = %original.id, %error, "cannot queue the delivery status notification")
            }
        }
    }

    fn log_delivered(&self, envelope: &Envelope, outcome: &AttemptOutcome) {
        let reply = outcome.reply.as_deref().unwrap_or("");
        tracing::info!(
            queue_id = %envelope.id,
            account = %self.account.name,
            sender = %envelope.sender.as_ref().map(|s| s.as_str()).unwrap_or(""),
            recipients = outcome.delivered.len(),
            pending = outcome.deferred.len() + outcome.untried.len(),
            failed = outcome.failed.len(),
            size = envelope.body_len,
            attempts = envelope.attempts + 1,
            duration_ms = outcome.started.map_or(0, |t| t.elapsed().as_millis() as u64),
            age_s = unix_now().saturating_sub(envelope.received_at),
            upstream_reply = %reply,
            "message delivered"
        );
        if envelope.uncertain_attempts > 0 {
            tracing::warn!(queue_id = %envelope.id, uncertain_attempts = envelope.uncertain_attempts, "delivered after an attempt whose outcome was unknown (connection lost after the final dot): the recipients may get this message twice");
        }
    }

    fn log_failure(
        &self,
        envelope: &Envelope,
        failure: &ClassifiedFailure,
        recipient: Option<&Address>,
        message: &str,
    ) {
        let verdict = &failure.verdict;
        let fix = if verdict.fix.is_empty() {
            "none needed".to_string()
        } else {
            failure.fix_for(envelope.sender.as_ref(), &self.account.mailbox)
        };
        let recipient = recipient.map(Address::to_string).unwrap_or_default();
        // One set of fields for every failure line, whatever its level.
        macro_rules! failure_event {
            ($level:ident) => {
                tracing::$level!(
                    queue_id = %envelope.id,
                    account = %self.account.name,
                    recipient = %recipient,
                    stage = %failure.stage,
                    upstream_reply = %failure.detail,
                    class = %verdict.class,
                    reason = verdict.reason,
                    hint = fix,
                    attempt = envelope.attempts,
                    duplicate_possible = verdict.duplicate_possible,
                    "{message}"
                )
            };
        }
        match verdict.class {
            Class::Transient => failure_event!(warn),
            Class::Configuration | Class::Permanent => failure_event!(error),
        }
    }
}

/// Split `"554 5.2.252 text"` into a code and the rest; anything else becomes `554 5.0.0 …`.
fn reply_parts(detail: &str) -> (u16, String) {
    match detail.split_once(' ') {
        Some((code, rest)) if code.len() == 3 => match code.parse::<u16>() {
            Ok(code) if (500..600).contains(&code) => (code, rest.to_string()),
            _ => (554, format!("5.0.0 {detail}")),
        },
        _ => (554, format!("5.0.0 {detail}")),
    }
}
