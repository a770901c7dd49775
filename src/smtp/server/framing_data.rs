//! The DATA half of the framed connection: one message's content, chunk by chunk, under the
//! DATA deadlines (see the parent module): `data_timeout` per read, `min_data_rate` on
//! average after the first `data_timeout`, the session deadline, the shutdown grace, and the
//! drain bound of a message that will be refused.

use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::{ConnError, Connection, READ_CHUNK, SHUTDOWN_DATA_GRACE};
use crate::smtp::proto::data::{DataReceiver, Feed};
use crate::smtp::proto::reply::Reply;

/// Where the relay's shutdown stands for one DATA phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownState {
    /// The relay is not stopping (as far as this DATA phase has seen).
    NotRequested,
    /// The relay is stopping: the client may finish its message until then.
    DataGrace { until: Instant },
}

/// One message's content as it arrives after `354`: the DATA framing (end of data,
/// unstuffing, the size limit) and the clock of its deadlines.
pub(in crate::smtp::server) struct DataStream {
    /// The DATA framing of this message.
    receiver: DataReceiver,
    /// The content framed from the latest input (the latest chunk).
    content: Vec<u8>,
    /// When the DATA phase began (the start of the `min_data_rate` clock).
    started: Instant,
    /// Raw bytes read in this DATA phase.
    bytes_read: u64,
    /// The relay's shutdown, as seen by this DATA phase.
    shutdown: ShutdownState,
    /// The message will be refused: the rest is only read to keep the reply in sync.
    discarding: bool,
    /// Raw bytes read past which a message being discarded ends the connection.
    drain_limit: u64,
    /// The first chunk is framed from input already buffered, without a read.
    first_chunk: bool,
}

/// One chunk of DATA content.
pub(in crate::smtp::server) struct DataChunk<'d> {
    /// The content in this chunk (unstuffed, CRLF line ends; what lies past the size limit is
    /// left out).
    pub content: &'d [u8],
    /// The content is past the size limit (what follows is counted, not kept).
    pub over_limit: bool,
    /// The end of data was seen: this is the last chunk.
    pub last: bool,
}

impl DataStream {
    /// Content bytes seen so far (including those past the size limit).
    pub fn size(&self) -> u64 {
        self.receiver.size()
    }

    /// True when the content has a byte outside 7-bit ASCII.
    pub fn eight_bit(&self) -> bool {
        self.receiver.eight_bit()
    }

    /// The message will be refused: keep reading to its end, so the reply lands in sync,
    /// but for at most as many bytes again as it may have (at least 1 MiB); past that the
    /// client gets `552` and the connection closes.
    pub fn discard_rest(&mut self) {
        self.discarding = true;
    }
}

impl Connection {
    /// Begin the DATA content of a message that may have `max_size` bytes.
    pub fn start_data(&self, max_size: u64) -> DataStream {
        DataStream {
            receiver: DataReceiver::new(max_size),
            content: Vec::with_capacity(READ_CHUNK),
            started: Instant::now(),
            bytes_read: 0,
            shutdown: ShutdownState::NotRequested,
            drain_limit: max_size.saturating_mul(2).max(1024 * 1024),
            discarding: false,
            first_chunk: true,
        }
    }

    /// The next chunk of `data`'s content: framed from the input already buffered the first
    /// time, then from each read. Reads are bounded as the module documentation says; a
    /// wait that ends the connection sends its `421` (or `552`) first.
    pub async fn next_data_chunk<'d>(
        &mut self,
        data: &'d mut DataStream,
    ) -> Result<DataChunk<'d>, ConnError> {
        if data.first_chunk {
            data.first_chunk = false;
        } else {
            if data.discarding && data.bytes_read > data.drain_limit {
                let hostname = self.hostname.clone();
                self.goodbye(Reply::new(
                    552,
                    "5.3.4",
                    format!("{hostname} Message too big, closing connection"),
                ))
                .await;
                return Err(ConnError::OversizeDrain);
            }
            self.read_data(data).await?;
        }
        data.content.clear();
        let feed = data.receiver.feed(&self.input, &mut data.content);
        let consumed = match feed {
            Feed::NeedMore => self.input.len(),
            Feed::Finished { consumed } => consumed,
        };
        self.input.advance(consumed);
        Ok(DataChunk {
            content: &data.content,
            over_limit: data.receiver.exceeded(),
            last: matches!(feed, Feed::Finished { .. }),
        })
    }

    /// Read more DATA content: within `data_timeout` of the last read, at `min_data_rate` on
    /// average once the first `data_timeout` has passed, and before the session deadline.
    /// After shutdown began, the client gets a grace period.
    async fn read_data(&mut self, data: &mut DataStream) -> Result<(), ConnError> {
        self.input.reserve(READ_CHUNK);
        let limits = self.limits;
        let mut deadline = (Instant::now() + limits.data_timeout).min(self.session_deadline);
        if let ShutdownState::DataGrace { until } = data.shutdown {
            deadline = deadline.min(until);
        }
        let rate_deadline = (limits.min_data_rate > 0).then(|| {
            // Bytes read so far buy this much time beyond the first data_timeout.
            let earned =
                Duration::from_secs_f64(data.bytes_read as f64 / limits.min_data_rate as f64);
            data.started + limits.data_timeout + earned
        });
        if let Some(rate) = rate_deadline {
            deadline = deadline.min(rate);
        }
        let shutting_down = data.shutdown != ShutdownState::NotRequested;
        // Biased: a passed deadline wins over more input (see read_command).
        tokio::select! {
            biased;
            read = self.stream.read_buf(&mut self.input), if Instant::now() < deadline => match read? {
                0 => Err(ConnError::Closed),
                n => {
                    data.bytes_read = data.bytes_read.saturating_add(n as u64);
                    Ok(())
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                let hostname = self.hostname.clone();
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
            _ = self.shutdown.cancelled(), if !shutting_down => {
                data.shutdown = ShutdownState::DataGrace { until: Instant::now() + SHUTDOWN_DATA_GRACE };
                Ok(())
            }
        }
    }
}
