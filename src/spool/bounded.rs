//! Deadlines on the disk waits of mail from clients: creating an entry, writing its content
//! and committing it, each given up at a deadline the caller chooses (the DATA phase uses
//! `data_timeout`, never past the session deadline).
//!
//! Rules:
//! - Creating and writing are safe to give up: a [`SpoolWriter`] dropped after a deadline
//!   removes its temporary file, also when the blocking work it started finishes later (see
//!   `SpoolWriter::write`). After a write gave up, the writer must be dropped.
//! - A commit is never given up half-way: it runs in its own task, and when the deadline
//!   passes first the caller gets the task back ([`BoundedCommit::StillRunning`]). The caller
//!   answers the client `451` and must hand the task on to something that queues the entry if
//!   it commits after all; otherwise an entry would sit in `queue/` unseen until a restart.
//!   The cost on a disk that hangs and then recovers is one duplicate (the client sends the
//!   message again after the `451`), never a lost or stranded message.

use std::io;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Spool, SpoolError, SpoolWriter};
use crate::vocab::envelope::Envelope;

/// The error of a disk wait that passed its deadline.
fn timed_out(operation: &'static str) -> SpoolError {
    SpoolError::Io {
        operation,
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            "the disk did not answer before the deadline",
        ),
    }
}

/// The result of [`SpoolWriter::commit_until`].
#[derive(Debug)]
pub enum BoundedCommit {
    /// Durable in `queue/`: the client may be answered `250`.
    Committed(Box<Envelope>),
    /// Not committed (the temporary file is removed).
    Failed(SpoolError),
    /// The deadline passed first. The commit goes on in this task; whoever holds it must
    /// queue the entry if it yields `Ok`.
    StillRunning(JoinHandle<Result<Envelope, SpoolError>>),
}

impl Spool {
    /// [`create`](Spool::create), given up at `deadline` (an error for which
    /// [`SpoolError::is_timeout`] is true).
    ///
    /// # Errors
    /// As `create`, or the deadline.
    ///
    /// # Cancel safety
    /// Safe: nothing is created on disk before the writer exists.
    pub async fn create_until(&self, deadline: Instant) -> Result<SpoolWriter, SpoolError> {
        tokio::time::timeout_at(deadline, self.create())
            .await
            .map_err(|_| timed_out("create spool entry"))?
    }
}

impl SpoolWriter {
    /// [`write`](SpoolWriter::write), given up at `deadline`. After any error, drop the writer.
    ///
    /// # Errors
    /// As `write`, or the deadline.
    pub async fn write_until(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), SpoolError> {
        tokio::time::timeout_at(deadline, self.write(bytes))
            .await
            .map_err(|_| timed_out("write body"))?
    }

    /// [`commit`](SpoolWriter::commit) in its own task, waited for until `deadline`; see the
    /// module rules for what the caller owes when it gets [`BoundedCommit::StillRunning`].
    pub async fn commit_until(self, envelope: Envelope, deadline: Instant) -> BoundedCommit {
        let mut task = tokio::spawn(self.commit(envelope));
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Ok(envelope))) => BoundedCommit::Committed(Box::new(envelope)),
            Ok(Ok(Err(error))) => BoundedCommit::Failed(error),
            Ok(Err(join)) => BoundedCommit::Failed(SpoolError::Io {
                operation: "commit entry",
                source: io::Error::other(join),
            }),
            Err(_) => BoundedCommit::StillRunning(task),
        }
    }
}

impl SpoolError {
    /// True when a disk wait passed its deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut)
    }
}

#[cfg(test)]
#[path = "bounded_tests.rs"]
mod tests;
