//! The DATA phase of the connection driver: content streamed from the socket through the
//! header assembler into a spool entry, under the DATA deadlines.
//!
//! Invariants (see the parent module): `250` only after the commit; the content is never held
//! whole in memory; reads are bounded by `data_timeout`, `min_data_rate` after the first
//! `data_timeout`, the session deadline and the shutdown grace; an oversized message is
//! drained for at most as much again, then answered `552` and the connection closed.
//!
//! Disk waits are bounded too (each by `data_timeout`, never past the session deadline; see
//! [`crate::spool::BoundedCommit`]): a spool that does not create or write in time is given
//! up (the entry is dropped, leaving nothing in `tmp/`) and the message answered `451 4.3.0`.
//! A commit is never abandoned half-way: past its deadline the client is answered `451 4.3.0`
//! while the commit goes on in its own task, which queues the entry if it completes. So a
//! hung disk never strands a committed entry in `queue/` until a restart; its cost is at most
//! one duplicate (the client sends again after the `451`). `250` still means fsynced.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::{ConnError, Connection, READ_CHUNK, SHUTDOWN_DATA_GRACE, SPOOL_CHUNK};
use crate::message::{AssemblyError, MessageAssembler, SenderRules, TraceInfo, received_field};
use crate::metrics::Metrics;
use crate::queue::{FirstOutcome, Queue};
use crate::smtp::proto::data::{DataReceiver, Feed};
use crate::smtp::proto::reply::Reply;
use crate::smtp::server::session::{DataOutcome, DataRequest};
use crate::spool::{BoundedCommit, unix_now};
use crate::vocab::envelope::{ClientInfo, Envelope};

/// Deadlines of one DATA phase.
struct DataClock {
    started: Instant,
    /// Raw bytes read in this DATA phase.
    bytes_read: u64,
    /// Set when shutdown began during DATA.
    grace_deadline: Option<Instant>,
}

impl Connection {
    /// Read DATA content until CRLF.CRLF, streaming it through the header assembler into a
    /// spool entry; commit it only when everything went well.
    pub(super) async fn receive_data(
        &mut self,
        request: &DataRequest,
    ) -> Result<DataOutcome, ConnError> {
        let spool = Arc::clone(&self.ctx.spool);
        let mut failure: Option<DataOutcome> = None;
        let mut writer = match spool.create_until(self.disk_deadline()).await {
            Ok(writer) => Some(writer),
            Err(error) => {
                tracing::error!(%error, "cannot create a spool entry");
                failure = Some(spool_failure(&error));
                None
            }
        };
        let queue_id = writer
            .as_ref()
            .map(|w| w.id().to_string())
            .unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let single_recipient = match request.recipients.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        };
        let received = received_field(&TraceInfo {
            helo: request.helo.as_deref(),
            peer: request.peer,
            hostname: &self.ctx.settings.hostname,
            protocol: request.protocol,
            queue_id: &queue_id,
            single_recipient,
            now,
        });
        let mut assembler = MessageAssembler::new(
            received,
            &self.ctx.settings.hostname,
            &queue_id,
            now,
            self.ctx.limits.max_header_size,
        )
        .with_sender_rules(SenderRules {
            grant: Arc::clone(&request.grant),
            envelope_sender: request.sender.clone(),
        });
        let mut receiver = DataReceiver::new(request.max_size);
        let mut content = Vec::with_capacity(READ_CHUNK);
        let mut pending = Vec::with_capacity(SPOOL_CHUNK);
        let mut clock = DataClock {
            started: Instant::now(),
            bytes_read: 0,
            grace_deadline: None,
        };
        // Past the limit, drain at most this much more, then give up on the connection.
        let drain_limit = request.max_size.saturating_mul(2).max(1024 * 1024);
        loop {
            let feed = receiver.feed(&self.input, &mut content);
            let consumed = match feed {
                Feed::NeedMore => self.input.len(),
                Feed::Finished { consumed } => consumed,
            };
            self.input.advance(consumed);
            if receiver.exceeded() && failure.is_none() {
                failure = Some(DataOutcome::TooLarge);
            }
            if failure.is_none()
                && let Err(error) = assembler.push(&content, &mut pending)
            {
                failure = Some(assembly_failure(error));
            }
            content.clear();
            let finished = matches!(feed, Feed::Finished { .. });
            if finished
                && failure.is_none()
                && let Err(error) = assembler.finish(&mut pending)
            {
                failure = Some(assembly_failure(error));
            }
            if failure.is_some() {
                // Stop storing; keep reading to the end so the reply lands in sync.
                writer = None;
                pending.clear();
            } else if (pending.len() >= SPOOL_CHUNK || finished)
                && let Some(w) = writer.as_mut()
            {
                let deadline = self.disk_deadline();
                if let Err(error) = w.write_until(&pending, deadline).await {
                    tracing::error!(%error, "cannot write to the spool");
                    failure = Some(spool_failure(&error));
                    writer = None;
                }
                pending.clear();
            }
            if finished {
                break;
            }
            if failure.is_some() && clock.bytes_read > drain_limit {
                let hostname = self.ctx.settings.hostname.clone();
                self.goodbye(Reply::new(
                    552,
                    "5.3.4",
                    format!("{hostname} Message too big, closing connection"),
                ))
                .await;
                return Err(ConnError::OversizeDrain);
            }
            self.read_data(&mut clock).await?;
        }
        if let Some(outcome) = failure {
            let reason = match &outcome {
                DataOutcome::TooLarge | DataOutcome::HeaderTooLarge => "too large",
                DataOutcome::FromRefused(_) => "From header not allowed",
                _ => "storage",
            };
            match &outcome {
                DataOutcome::FromRefused(address) => tracing::warn!(
                    size = receiver.size(),
                    reason,
                    "refused: the From: header <{address}> is not in the allowed_senders of {}",
                    request.principal
                ),
                _ => tracing::warn!(size = receiver.size(), reason, "message refused"),
            }
            self.ctx
                .metrics
                .messages_refused
                .get_or_create(&Metrics::reason(reason))
                .inc();
            return Ok(outcome);
        }
        let Some(writer) = writer else {
            return Ok(DataOutcome::StorageFailed);
        };
        let mut envelope = Envelope::new(
            &request.account,
            request.sender.clone(),
            request.recipients.clone(),
            ClientInfo {
                peer: request.peer.to_string(),
                helo: request.helo.clone(),
                principal: request.principal.to_string(),
            },
            unix_now(),
        );
        envelope.eight_bit = receiver.eight_bit();
        envelope.smtputf8 |= request.smtputf8;
        let envelope = match writer.commit_until(envelope, self.disk_deadline()).await {
            BoundedCommit::Committed(envelope) => *envelope,
            BoundedCommit::Failed(error) => {
                tracing::error!(%error, "cannot commit the message to the spool");
                return Ok(spool_failure(&error));
            }
            BoundedCommit::StillRunning(commit) => {
                tracing::error!(
                    queue_id = %queue_id,
                    "the spool did not commit the message before the deadline (data_timeout); \
                     answering 451. If the commit completes later the message is queued, and \
                     the client may send it a second time"
                );
                tokio::spawn(queue_late_commit(commit, Arc::clone(&self.ctx.queue)));
                return Ok(DataOutcome::StorageTimeout);
            }
        };
        let account = Metrics::account(&envelope.account);
        self.ctx.metrics.accepted.get_or_create(&account).inc();
        self.ctx
            .metrics
            .accepted_bytes
            .get_or_create(&account)
            .inc_by(envelope.body_len);
        tracing::info!(
            queue_id = %envelope.id,
            account = %envelope.account,
            sender = %envelope.sender.as_ref().map(|s| s.as_str()).unwrap_or(""),
            recipients = envelope.recipients.len(),
            size = envelope.body_len,
            principal = %envelope.client.principal,
            "message accepted"
        );
        let account_queue = self.ctx.queue.account(&envelope.account);
        let waiter = match (self.ctx.acknowledge_delivered, &account_queue) {
            (Some(timeout), Some(queue)) => Some((queue.watch(&envelope.id), timeout)),
            _ => None,
        };
        if !self.ctx.queue.submit(&envelope) {
            tracing::error!(queue_id = %envelope.id, account = %envelope.account, "no such account; the message stays in the spool");
        }
        let Some((receiver, timeout)) = waiter else {
            return Ok(DataOutcome::Queued(envelope.id));
        };
        let verdict = tokio::select! {
            verdict = tokio::time::timeout(timeout, receiver) => verdict.ok().and_then(Result::ok),
            _ = self.cancel.cancelled() => None,
        };
        Ok(match verdict {
            Some(FirstOutcome::Delivered { reply }) => DataOutcome::Delivered {
                id: envelope.id,
                reply,
            },
            Some(FirstOutcome::Rejected { code, text }) => DataOutcome::Rejected { code, text },
            Some(FirstOutcome::Deferred) | None => {
                if let Some(queue) = account_queue {
                    queue.unwatch(&envelope.id);
                }
                DataOutcome::Queued(envelope.id)
            }
        })
    }

    /// The deadline of one disk wait in the DATA phase: `data_timeout` from now, never past
    /// the session deadline.
    fn disk_deadline(&self) -> Instant {
        (Instant::now() + self.ctx.limits.data_timeout).min(self.session_deadline)
    }

    /// Read more DATA content: within `data_timeout` of the last read, at `min_data_rate` on
    /// average once the first `data_timeout` has passed, and before the session deadline.
    /// After shutdown began, the client gets a grace period.
    async fn read_data(&mut self, clock: &mut DataClock) -> Result<(), ConnError> {
        self.input.reserve(READ_CHUNK);
        let limits = &self.ctx.limits;
        let mut deadline = (Instant::now() + limits.data_timeout).min(self.session_deadline);
        if let Some(grace) = clock.grace_deadline {
            deadline = deadline.min(grace);
        }
        let rate_deadline = (limits.min_data_rate > 0).then(|| {
            // Bytes read so far buy this much time beyond the first data_timeout.
            let earned =
                Duration::from_secs_f64(clock.bytes_read as f64 / limits.min_data_rate as f64);
            clock.started + limits.data_timeout + earned
        });
        if let Some(rate) = rate_deadline {
            deadline = deadline.min(rate);
        }
        let shutting_down = clock.grace_deadline.is_some();
        // Biased: a passed deadline wins over more input (see read_command).
        tokio::select! {
            biased;
            read = self.stream.read_buf(&mut self.input), if Instant::now() < deadline => match read? {
                0 => Err(ConnError::Closed),
                n => {
                    clock.bytes_read = clock.bytes_read.saturating_add(n as u64);
                    Ok(())
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                let hostname = self.ctx.settings.hostname.clone();
                let (reply, error) = if shutting_down {
                    (Reply::new(421, "4.3.2", format!("{hostname} Service shutting down, closing connection")), ConnError::Shutdown)
                } else if deadline >= self.session_deadline {
                    (Reply::new(421, "4.4.2", format!("{hostname} Session too long, closing connection")), ConnError::SessionTooLong)
                } else if rate_deadline.is_some_and(|rate| deadline >= rate) {
                    (Reply::new(421, "4.4.2", format!("{hostname} DATA too slow, closing connection")), ConnError::TooSlow)
                } else {
                    (Reply::new(421, "4.4.2", format!("{hostname} Timeout during DATA, closing connection")), ConnError::Timeout)
                };
                self.goodbye(reply).await;
                Err(error)
            }
            _ = self.cancel.cancelled(), if !shutting_down => {
                clock.grace_deadline = Some(Instant::now() + SHUTDOWN_DATA_GRACE);
                Ok(())
            }
        }
    }
}

/// Queue an entry whose commit outlived its deadline once the commit completes (the client
/// was answered `451`), so that nothing committed is left in `queue/` unseen until a restart.
async fn queue_late_commit(
    commit: tokio::task::JoinHandle<Result<Envelope, crate::spool::SpoolError>>,
    queue: Arc<Queue>,
) {
    match commit.await {
        Ok(Ok(envelope)) => {
            tracing::warn!(
                queue_id = %envelope.id,
                account = %envelope.account,
                "a commit that outlived its deadline completed: the message is queued, although \
                 its client was answered 451 (it may arrive twice)"
            );
            if !queue.submit(&envelope) {
                tracing::error!(queue_id = %envelope.id, account = %envelope.account, "no such account; the message stays in the spool");
            }
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "a commit that outlived its deadline failed; nothing was stored");
        }
        Err(error) => tracing::error!(%error, "a commit that outlived its deadline was lost"),
    }
}

fn spool_failure(error: &crate::spool::SpoolError) -> DataOutcome {
    if error.is_timeout() {
        DataOutcome::StorageTimeout
    } else if error.is_storage_full() {
        DataOutcome::StorageFull
    } else {
        DataOutcome::StorageFailed
    }
}

fn assembly_failure(error: AssemblyError) -> DataOutcome {
    match error {
        AssemblyError::HeaderTooLarge => DataOutcome::HeaderTooLarge,
        AssemblyError::FromRefused(refused) => DataOutcome::FromRefused(refused.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use crate::spool::test_support::{envelope, runtime_with_one_disk_thread, stall_the_disk};

    /// A commit that outlives its deadline (the runtime's only blocking thread, where the
    /// spool's disk work runs, is held) is handed over, and queued once the disk answers.
    #[test]
    fn a_commit_that_completes_after_its_deadline_is_queued() {
        let runtime = runtime_with_one_disk_thread();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (spool, _) = Spool::open(dir.path()).unwrap();
            let mut writer = spool.create().await.unwrap();
            writer.write(b"Subject: late\r\n\r\nx\r\n").await.unwrap();
            let release = stall_the_disk().await;
            let envelope = envelope();
            let deadline = Instant::now() + Duration::from_millis(300);
            let BoundedCommit::StillRunning(commit) = writer.commit_until(envelope, deadline).await
            else {
                panic!("the commit cannot finish while the disk is held");
            };
            let queue = Arc::new(Queue::new(["m365".to_string()]));
            let handover = tokio::spawn(queue_late_commit(commit, Arc::clone(&queue)));
            assert_eq!(queue.depth(), 0);
            drop(release);
            tokio::time::timeout(Duration::from_secs(30), handover)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(queue.depth(), 1);
            assert_eq!(spool.list_queued().await.unwrap().len(), 1);
        });
    }
}
