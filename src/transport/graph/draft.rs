//! The draft steps of the Graph transport: create a draft from base64 MIME
//! (`POST /users/{mailbox}/messages`, needs `Mail.ReadWrite`), set its recipient collections
//! to exactly the envelope (`PATCH`), and send it (`POST …/send`, `202 Accepted`).
//!
//! Invariants: only `/send` is a sending request (its loss is an uncertain outcome); a
//! draft whose id Graph does not return is a local failure before anything was sent; a draft
//! given up (a later step failed, and it cannot have been sent) is remembered and deleted
//! before the account's next message (not at once: the failure may be a `Retry-After`), at
//! most [`MAX_ABANDONED`] of them.

/// Drafts remembered for deletion at most (more are left in Drafts).
const MAX_ABANDONED: usize = 100;

use super::{GraphFailure, GraphSession, Request, path_segment};
use crate::vocab::verdict::Stage;

impl GraphSession {
    /// The draft route for a message that fits one request: create, set recipients, send.
    pub(super) async fn send_as_draft(
        &self,
        body: Vec<u8>,
        to: &[String],
        cc: &[String],
        bcc: &[String],
    ) -> Result<String, GraphFailure> {
        let message_url = self.create_draft(body, to, cc, bcc).await?;
        self.send_draft(&message_url).await?;
        Ok("202 Accepted by Graph (draft with the envelope's recipients, sent)".to_string())
    }

    /// Remember the draft at `message_url` for deletion, unless `failure` leaves open whether
    /// it was sent (then it may be in Sent Items already and must stay).
    pub(super) fn abandon(&self, message_url: &str, failure: &GraphFailure) {
        if failure.verdict().duplicate_possible {
            return;
        }
        if let Ok(mut abandoned) = self.transport.abandoned.lock()
            && abandoned.len() < MAX_ABANDONED
        {
            abandoned.push(message_url.to_string());
        }
    }

    /// Delete the drafts given up earlier (best effort: one that cannot be deleted now is
    /// kept for later only when Graph asked to wait).
    pub(super) async fn delete_abandoned_drafts(&self) {
        let pending: Vec<String> = match self.transport.abandoned.lock() {
            Ok(mut abandoned) => abandoned.drain(..).collect(),
            Err(_) => return,
        };
        for (index, url) in pending.iter().enumerate() {
            let request = Request::json(reqwest::Method::DELETE, url.clone(), Vec::new(), false);
            match self.request(request).await {
                Ok(_) => tracing::debug!("deleted a draft given up earlier"),
                Err(failure) if failure.not_before().is_some() => {
                    if let Ok(mut abandoned) = self.transport.abandoned.lock() {
                        abandoned.extend(pending.iter().skip(index).cloned());
                    }
                    return;
                }
                Err(failure) => {
                    tracing::info!(%failure, "a draft given up earlier could not be deleted; it stays in Drafts");
                }
            }
        }
    }

    /// A draft from base64 MIME `body` whose recipients are exactly `to`, `cc` and `bcc`;
    /// its URL (`…/messages/{id}`).
    pub(super) async fn create_draft(
        &self,
        body: Vec<u8>,
        to: &[String],
        cc: &[String],
        bcc: &[String],
    ) -> Result<String, GraphFailure> {
        let url = format!("{}/messages", self.transport.user_url);
        let created = self.request(Request::base64(url, body, false)).await?;
        let id = serde_json::from_slice::<serde_json::Value>(&created)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                GraphFailure::local(Stage::Data, "Graph's answer to the draft has no id")
            })?;
        let message_url = format!("{}/messages/{}", self.transport.user_url, path_segment(&id));
        let list = |addresses: &[String]| -> serde_json::Value {
            addresses
                .iter()
                .map(|a| serde_json::json!({"emailAddress": {"address": a}}))
                .collect()
        };
        let patch = serde_json::json!({
            "toRecipients": list(to),
            "ccRecipients": list(cc),
            "bccRecipients": list(bcc),
        });
        if let Err(failure) = self
            .request(Request::json(
                reqwest::Method::PATCH,
                message_url.clone(),
                patch.to_string().into_bytes(),
                false,
            ))
            .await
        {
            self.abandon(&message_url, &failure);
            return Err(failure);
        }
        Ok(message_url)
    }

    /// Send the draft at `message_url` (given up when Graph refused to).
    pub(super) async fn send_draft(&self, message_url: &str) -> Result<(), GraphFailure> {
        let sent = self
            .request(Request::json(
                reqwest::Method::POST,
                format!("{message_url}/send"),
                Vec::new(),
                true,
            ))
            .await;
        if let Err(failure) = &sent {
            self.abandon(message_url, failure);
        }
        sent.map(|_| ())
    }
}
