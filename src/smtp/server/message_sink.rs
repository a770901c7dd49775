//! Where DATA content goes: through the header assembler (the `Received:` field, missing
//! `Date:`/`Message-ID:`, the sender rules on `From:`) into a new spool entry, in chunks.
//!
//! Invariants: the content is never held whole in memory (the assembler buffers only the
//! header section, capped by `max_header_size`; spool writes go out every [`SPOOL_CHUNK`]).
//! The first failure (too large, a refused `From:`, the spool) is remembered and everything
//! after it is dropped: the entry is discarded, leaving nothing in `tmp/`, and the caller
//! only reads the rest of the message to answer in sync. Every disk wait has the deadline
//! the caller gives it.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::time::Instant;

use super::framing::DataChunk;
use super::session_io::{DataOutcome, DataRequest};
use crate::message::sender::Routing;
use crate::message::{AssemblyError, MessageAssembler, SenderRules, TraceInfo, received_field};
use crate::spool::{Spool, SpoolError, SpoolWriter};

/// How much assembled content is gathered before one spool write.
const SPOOL_CHUNK: usize = 64 * 1024;

/// One message on its way into the spool.
pub(super) struct MessageSink {
    /// The spool entry being written; `None` once something failed.
    writer: Option<SpoolWriter>,
    /// Adds the trace fields and applies the sender rules while the content streams.
    assembler: MessageAssembler,
    /// Assembled content not yet written to the spool.
    pending: Vec<u8>,
    /// The first failure, which decides the reply; nothing is stored after it.
    failure: Option<DataOutcome>,
}

impl MessageSink {
    /// Create the spool entry (within `deadline`) and the header assembler for `request`,
    /// received now by the listener `hostname`. A spool that cannot create the entry makes a
    /// sink that has already failed.
    pub async fn open(
        spool: &Spool,
        request: &DataRequest,
        hostname: &str,
        max_header_size: usize,
        deadline: Instant,
    ) -> MessageSink {
        let (writer, failure) = match spool.create_until(deadline).await {
            Ok(writer) => (Some(writer), None),
            Err(error) => {
                tracing::error!(%error, "cannot create a spool entry");
                (None, Some(spool_failure(&error)))
            }
        };
        let queue_id = writer
            .as_ref()
            .map(|w| w.id().to_string())
            .unwrap_or_default();
        let assembler = assembler_for(request, hostname, &queue_id, max_header_size);
        MessageSink {
            writer,
            assembler,
            pending: Vec::with_capacity(SPOOL_CHUNK),
            failure,
        }
    }

    /// True once something failed: the rest of the message is only read, not stored.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Take one chunk of content: assemble it, and write to the spool once a spool chunk
    /// has gathered (or at the last chunk), within the deadline `disk_deadline` gives then.
    pub async fn take(&mut self, chunk: DataChunk<'_>, disk_deadline: impl FnOnce() -> Instant) {
        if chunk.over_limit && self.failure.is_none() {
            self.failure = Some(DataOutcome::TooLarge);
        }
        if self.failure.is_none()
            && let Err(error) = self.assembler.push(chunk.content, &mut self.pending)
        {
            self.failure = Some(assembly_failure(error));
        }
        if chunk.last
            && self.failure.is_none()
            && let Err(error) = self.assembler.finish(&mut self.pending)
        {
            self.failure = Some(assembly_failure(error));
        }
        if self.failure.is_some() {
            // Stop storing; the caller keeps reading to the end so the reply lands in sync.
            self.writer = None;
            self.pending.clear();
        } else if (self.pending.len() >= SPOOL_CHUNK || chunk.last)
            && let Some(writer) = self.writer.as_mut()
        {
            if let Err(error) = writer.write_until(&self.pending, disk_deadline()).await {
                tracing::error!(%error, "cannot write to the spool");
                self.failure = Some(spool_failure(&error));
                self.writer = None;
            }
            self.pending.clear();
        }
    }

    /// After the last chunk: the entry, ready to commit, with the account the message goes
    /// through and its envelope sender (decided by the header section), or the outcome that
    /// refuses the message.
    pub fn finish(self) -> Result<(SpoolWriter, Option<Routing>), DataOutcome> {
        if let Some(outcome) = self.failure {
            return Err(outcome);
        }
        let routing = self.assembler.routing().cloned();
        let writer = self.writer.ok_or(DataOutcome::StorageFailed)?;
        Ok((writer, routing))
    }
}

/// The header assembler for `request`: its `Received:` field, the fields added when missing
/// (dated now), and the client's sender rules for `From:`.
fn assembler_for(
    request: &DataRequest,
    hostname: &str,
    queue_id: &str,
    max_header_size: usize,
) -> MessageAssembler {
    let now = OffsetDateTime::now_utc();
    let single_recipient = match request.recipients.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    let received = received_field(&TraceInfo {
        helo: request.helo.as_deref(),
        peer: request.peer,
        hostname,
        protocol: request.protocol,
        queue_id,
        single_recipient,
        now,
    });
    MessageAssembler::new(received, hostname, queue_id, now, max_header_size).with_sender_rules(
        SenderRules {
            grant: Arc::clone(&request.grant),
            envelope_sender: request.sender.clone(),
        },
    )
}

/// The reply class of a spool failure: a timeout, a full disk, or anything else.
pub(super) fn spool_failure(error: &SpoolError) -> DataOutcome {
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
