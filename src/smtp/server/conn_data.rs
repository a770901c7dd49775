//! The DATA phase of the connection driver: the content streamed from the [`Connection`]
//! into a [`MessageSink`] (header assembly, spool writes), then the commit, the counts and the
//! log line, and, with `acknowledge = "delivered"`, the wait for Exchange's first verdict.
//!
//! Invariants (see the parent module): `250` only after the commit; the content is never held
//! whole in memory; reads are bounded by the connection's DATA deadlines; an oversized message
//! is drained for at most as much again, then answered `552` and the connection closed.
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

use tokio_util::sync::CancellationToken;

use super::Driver;
use crate::metrics::Metrics;
use crate::queue::{FirstOutcome, Queue};
use crate::smtp::server::framing::{ConnError, Connection};
use crate::smtp::server::message_sink::{MessageSink, spool_failure};
use crate::smtp::server::session::{DataOutcome, DataRequest};
use crate::spool::{BoundedCommit, SpoolWriter, unix_now};
use crate::vocab::envelope::{ClientInfo, Envelope};

impl Driver {
    /// Read DATA content until CRLF.CRLF, streaming it through the header assembler into a
    /// spool entry; commit it only when everything went well.
    pub(super) async fn receive_data(
        &mut self,
        request: &DataRequest,
    ) -> Result<DataOutcome, ConnError> {
        let ctx = Arc::clone(&self.ctx);
        let connection = &mut self.connection;
        let mut sink = MessageSink::open(
            &ctx.spool,
            request,
            &ctx.settings.hostname,
            ctx.limits.max_header_size,
            connection.disk_deadline(),
        )
        .await;
        let mut data = connection.start_data(request.max_size);
        loop {
            let chunk = connection.next_data_chunk(&mut data).await?;
            let last = chunk.last;
            sink.take(chunk, || connection.disk_deadline()).await;
            if last {
                break;
            }
            if sink.failed() {
                data.discard_rest();
            }
        }
        let (writer, routing) = match sink.finish() {
            Ok(finished) => finished,
            Err(outcome) => {
                count_refusal(&ctx.metrics, &outcome, data.size(), request);
                return Ok(outcome);
            }
        };
        // The account is final now: the one the header section chose (routing by sender).
        let routed;
        let request = match routing {
            Some(routing) => {
                routed = DataRequest {
                    account: routing.grant.account,
                    sender: routing.envelope_sender,
                    ..request.clone()
                };
                &routed
            }
            None => request,
        };
        let envelope = match commit(writer, request, data.eight_bit(), connection, &ctx.queue).await
        {
            Ok(envelope) => envelope,
            Err(outcome) => return Ok(outcome),
        };
        count_acceptance(&ctx.metrics, &envelope);
        Ok(submit_and_wait(
            &ctx.queue,
            ctx.acknowledge_delivered,
            envelope,
            &self.cancel,
        )
        .await)
    }
}

/// Log and count a message refused at the end of DATA (too large, a refused `From:`, the
/// spool).
fn count_refusal(metrics: &Metrics, outcome: &DataOutcome, size: u64, request: &DataRequest) {
    let reason = match outcome {
        DataOutcome::TooLarge | DataOutcome::HeaderTooLarge => "too large",
        DataOutcome::FromRefused(_) => "From header not allowed",
        _ => "storage",
    };
    match outcome {
        DataOutcome::FromRefused(address) => tracing::warn!(
            size,
            reason,
            "refused: the From: header <{address}> is not in the allowed_senders of {}",
            request.principal
        ),
        _ => tracing::warn!(size, reason, "message refused"),
    }
    metrics
        .messages_refused
        .get_or_create(&Metrics::reason(reason))
        .inc();
}

/// Commit the entry with its envelope, within the connection's disk deadline. A commit past
/// it is handed to its own task ([`queue_late_commit`]) and answered
/// [`DataOutcome::StorageTimeout`].
async fn commit(
    writer: SpoolWriter,
    request: &DataRequest,
    eight_bit: bool,
    connection: &Connection,
    queue: &Arc<Queue>,
) -> Result<Envelope, DataOutcome> {
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
    envelope.eight_bit = eight_bit;
    envelope.smtputf8 |= request.smtputf8;
    let queue_id = writer.id().to_string();
    match writer
        .commit_until(envelope, connection.disk_deadline())
        .await
    {
        BoundedCommit::Committed(envelope) => Ok(*envelope),
        BoundedCommit::Failed(error) => {
            tracing::error!(%error, "cannot commit the message to the spool");
            Err(spool_failure(&error))
        }
        BoundedCommit::StillRunning(commit) => {
            tracing::error!(
                queue_id = %queue_id,
                "the spool did not commit the message before the deadline (data_timeout); \
                 answering 451. If the commit completes later the message is queued, and \
                 the client may send it a second time"
            );
            tokio::spawn(queue_late_commit(commit, Arc::clone(queue)));
            Err(DataOutcome::StorageTimeout)
        }
    }
}

/// Count and log a message stored durably.
fn count_acceptance(metrics: &Metrics, envelope: &Envelope) {
    let account = Metrics::account(&envelope.account);
    metrics.accepted.get_or_create(&account).inc();
    metrics
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
}

/// Hand a committed message to its account's queue and, with `acknowledge = "delivered"`
/// (`acknowledge_delivered`), wait up to that long (or until shutdown) for Exchange's first
/// verdict; without one in time the answer is "queued".
async fn submit_and_wait(
    queue: &Queue,
    acknowledge_delivered: Option<Duration>,
    envelope: Envelope,
    shutdown: &CancellationToken,
) -> DataOutcome {
    let account_queue = queue.account(&envelope.account);
    let waiter = match (acknowledge_delivered, &account_queue) {
        (Some(timeout), Some(queue)) => Some((queue.watch(&envelope.id), timeout)),
        _ => None,
    };
    if !queue.submit(&envelope) {
        tracing::error!(queue_id = %envelope.id, account = %envelope.account, "no such account; the message stays in the spool");
    }
    let Some((receiver, timeout)) = waiter else {
        return DataOutcome::Queued(envelope.id);
    };
    let verdict = tokio::select! {
        verdict = tokio::time::timeout(timeout, receiver) => verdict.ok().and_then(Result::ok),
        _ = shutdown.cancelled() => None,
    };
    match verdict {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use crate::spool::test_support::{envelope, runtime_with_one_disk_thread, stall_the_disk};
    use tokio::time::Instant;

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
