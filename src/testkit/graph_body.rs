//! Bounded reading of a request body for the fake Graph: at most [`GRAPH_REQUEST_LIMIT`]
//! bytes are ever buffered; past it (or after an early answer) the rest is read and thrown
//! away, up to a bound, so the client reads the error instead of a connection reset.
//!
//! Invariants: [`BodyReader::read`] counts every byte received, kept or not; every read is
//! bounded in time.

use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::graph::GRAPH_REQUEST_LIMIT;
use super::graph_errors::GraphError;

/// What is read and thrown away after a refused body before the connection is given up.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// How long reading (or draining) one body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads a request body with the 4 MiB bound.
pub(crate) struct BodyReader {
    body: Option<Incoming>,
    pub read: u64,
}

impl BodyReader {
    pub fn new(body: Incoming) -> BodyReader {
        BodyReader {
            body: Some(body),
            read: 0,
        }
    }

    /// The whole body, or 413 once it passes [`GRAPH_REQUEST_LIMIT`] (the rest is drained).
    pub async fn read_all(&mut self) -> Result<Vec<u8>, GraphError> {
        let Some(mut body) = self.body.take() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<u8> = Vec::new();
        let read = async {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Err(GraphError::invalid_request(
                        "The request body could not be read.",
                    ));
                };
                if let Ok(data) = frame.into_data() {
                    self.read += data.len() as u64;
                    if out.len() + data.len() > GRAPH_REQUEST_LIMIT {
                        return Err(GraphError::request_too_large());
                    }
                    out.extend_from_slice(&data);
                }
            }
            Ok(())
        };
        let result = tokio::time::timeout(BODY_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(GraphError::invalid_request("The request body timed out.")));
        match result {
            Ok(()) => Ok(out),
            Err(error) => {
                drop(out);
                self.body = Some(body);
                self.drain().await;
                Err(error)
            }
        }
    }

    /// Reads and discards what is left (bounded), so the client can read the answer.
    pub async fn drain(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        let mut discarded: u64 = 0;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    discarded += data.len() as u64;
                    if discarded > DRAIN_LIMIT {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(BODY_TIMEOUT, drain).await;
    }
}
