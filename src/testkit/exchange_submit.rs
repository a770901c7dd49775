//! What the fake Exchange server does after the final dot, in the order of the real service
//! (exchange-online.md §4.2, §5, §6.1): size, bare LF, header value length, injected 4xx
//! faults, the per-mailbox concurrency limit, the SendAs check on the envelope sender and the
//! `From:` addresses, then storage (optionally as an `.eml` file) and `250 2.0.0 OK`.
//!
//! Invariants: nothing is stored unless every check passed; `DropAfterDot` and
//! `StallAfterDot` store first, so the client faces a genuinely uncertain outcome.

use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{AcceptedMessage, ExchangeFault};
use super::exchange_data::{
    ReceivedData, header_fields, header_value, mailbox_list_addresses, oversized_header,
};
use super::exchange_io::{ConnError, SmtpStream};
use super::exchange_replies as replies;
use super::exchange_session::{Session, Step, Transaction};
use super::exchange_state::FaultStage;
use super::random::{hex_lower, random_hex_upper};

/// Longest header value Exchange accepts.
const MAX_HEADER_VALUE: usize = 32_768;

impl Session {
    /// The checks Exchange runs after the final dot, then storage and the reply.
    pub(super) async fn finish_data<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        transaction: Transaction,
        received: ReceivedData,
    ) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let host = self.host().to_owned();
        if received.oversize {
            self.send(conn, replies::MESSAGE_TOO_BIG).await?;
            return Ok(Step::Continue);
        }
        if received.bare_lf {
            self.send(conn, replies::BARE_LINEFEEDS).await?;
            return Ok(Step::Continue);
        }
        let fields = header_fields(&received.header_block);
        if let Some((size, name)) = oversized_header(&fields, MAX_HEADER_VALUE) {
            self.send(conn, &replies::header_too_long(size, &name))
                .await?;
            return Ok(Step::Continue);
        }
        let fault = self.shared.take_fault(FaultStage::EndOfData);
        match fault {
            Some(ExchangeFault::TempFailAfterData) => {
                self.send(conn, &replies::temporary_server_error(&host))
                    .await?;
                return Ok(Step::Continue);
            }
            Some(ExchangeFault::MailboxLogonFailure) => {
                self.send(conn, &replies::mailbox_logon_failure(&host))
                    .await?;
                return Ok(Step::Continue);
            }
            _ => {}
        }
        let Some(auth) = self.auth.as_ref() else {
            self.send(conn, &replies::not_authenticated(&host)).await?;
            return Ok(Step::Continue);
        };
        let limit = self.shared.options.max_concurrent_sessions_per_mailbox;
        if auth.slot.earlier_open_sessions() >= limit {
            self.shared.record_throttled();
            self.send(conn, &replies::concurrency_exceeded(&host))
                .await?;
            return Ok(Step::Continue);
        }
        let from_header = header_value(&fields, "From")
            .map(mailbox_list_addresses)
            .unwrap_or_default();
        let envelope = if transaction.from.is_empty() {
            "<>".to_owned()
        } else {
            transaction.from.clone()
        };
        let denied = std::iter::once(&envelope)
            .chain(from_header.iter())
            .find(|sender| !self.shared.directory.may_send_as(&auth.mailbox, sender));
        if let Some(sender) = denied {
            let reply = replies::send_as_denied(&auth.mailbox, sender, &host);
            self.send(conn, &reply).await?;
            return Ok(Step::Continue);
        }
        let message_id = header_value(&fields, "Message-ID")
            .map(str::trim)
            .filter(|id| id.starts_with('<') && id.ends_with('>'))
            .map_or_else(
                || format!("<{}@{host}>", random_hex_upper(16)),
                str::to_owned,
            );
        let message = AcceptedMessage {
            id: format!("FAKE-{}", self.shared.next_sequence()),
            message_id: message_id.clone(),
            envelope_from: transaction.from,
            recipients: transaction.recipients,
            auth_mailbox: auth.mailbox.clone(),
            client_id: auth.client_id.clone(),
            data: received.body,
            size: received.size,
            sha256: hex_lower(&received.sha256),
            accepted_at: SystemTime::now(),
            eml_path: None,
        };
        let message = self.write_eml(message).await;
        self.shared.store_message(message);
        match fault {
            Some(ExchangeFault::DropAfterDot) => return Ok(Step::Close),
            Some(ExchangeFault::StallAfterDot(stall)) => {
                tokio::select! {
                    () = self.cancel.cancelled() => return Err(ConnError::Shutdown),
                    () = tokio::time::sleep(stall) => {}
                }
            }
            _ => {}
        }
        self.send(conn, &replies::queued(&message_id, &host))
            .await?;
        Ok(Step::Continue)
    }

    /// Writes the `.eml` copy if enabled (temp file + rename, so watchers never see a partial
    /// file). A write failure is logged and leaves `eml_path` empty.
    async fn write_eml(&self, mut message: AcceptedMessage) -> AcceptedMessage {
        let (Some(dir), Some(data)) = (&self.shared.options.eml_dir, &message.data) else {
            return message;
        };
        let stamp = super::jwt::unix_seconds(message.accepted_at);
        let name = format!("{stamp}-{}.eml", message.id);
        let final_path = dir.join(&name);
        let temp_path = dir.join(format!(".{name}.tmp"));
        let written = async {
            tokio::fs::write(&temp_path, data).await?;
            tokio::fs::rename(&temp_path, &final_path).await
        };
        match written.await {
            Ok(()) => message.eml_path = Some(final_path),
            Err(error) => tracing::warn!(%error, "fake Exchange could not write .eml"),
        }
        message
    }
}
