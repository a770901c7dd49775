//! The bounded steps of an upstream SMTP conversation: the time limit of each step
//! ([`Timeouts`], RFC 5321 §4.5.3.2 values), one lettre call under its limit with its failure
//! named by [`Stage`] (`timed`), and a goodbye that never waits long (`abort_bounded`).
//!
//! Invariant: no lettre future is awaited without a timeout.

use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;

use super::SmtpFailure;
use crate::vocab::verdict::Stage;

/// Time limits for each step of the upstream conversation.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data_start: Duration,
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(60),
            command: Duration::from_secs(5 * 60),
            data_start: Duration::from_secs(2 * 60),
            data_end: Duration::from_secs(10 * 60),
        }
    }
}

pub(super) async fn timed<T>(
    stage: Stage,
    limit: Duration,
    work: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, SmtpFailure> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(SmtpFailure::from_lettre(stage, &error)),
        Err(_) => Err(SmtpFailure::timeout(stage)),
    }
}

/// How long a goodbye (QUIT, or lettre's `abort`, which waits for the reply to QUIT) may
/// take before the connection is simply dropped (or the command timeout, if shorter).
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(10);

/// lettre's `abort` sends QUIT and waits for the reply: a server that stalls there would
/// hold the worker forever, so it is bounded like every other step.
pub(super) async fn abort_bounded(connection: &mut AsyncSmtpConnection, limit: Duration) {
    if tokio::time::timeout(limit.min(GOODBYE_TIMEOUT), connection.abort())
        .await
        .is_err()
    {
        tracing::debug!("the server did not answer QUIT in time; dropping the connection");
    }
}
