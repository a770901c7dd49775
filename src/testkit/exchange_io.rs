//! The socket side of one fake-Exchange connection: a buffered reader/writer over any
//! `AsyncRead + AsyncWrite` (plain TCP before STARTTLS, TLS after) that hands out command
//! lines and DATA segments, with an idle timeout and the server's cancellation token on
//! every read and write.
//!
//! Invariants: the read buffer never grows beyond `max + 16 KiB` for a line request (longer
//! lines are drained and reported as [`Line::TooLong`]); buffered bytes are dropped with the
//! stream, which is how input pipelined after STARTTLS is discarded.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

const READ_CHUNK: usize = 16 * 1024;

/// Why the connection cannot continue.
#[derive(Debug)]
pub enum ConnError {
    /// The peer closed the connection.
    Closed,
    /// No input within the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// A socket or TLS error.
    Io(std::io::Error),
}

/// A command line.
#[derive(Debug)]
pub enum Line {
    /// The line without its CRLF (or bare LF).
    Complete(Vec<u8>),
    /// The line exceeded the limit and was discarded up to its end.
    TooLong,
}

/// Buffered, timed, cancellable SMTP stream.
pub struct SmtpStream<S> {
    io: S,
    buffer: Vec<u8>,
    idle_timeout: Duration,
    cancel: CancellationToken,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpStream<S> {
    pub fn new(io: S, idle_timeout: Duration, cancel: CancellationToken) -> SmtpStream<S> {
        SmtpStream {
            io,
            buffer: Vec::with_capacity(READ_CHUNK),
            idle_timeout,
            cancel,
        }
    }

    /// Gives the stream back, dropping any buffered input.
    pub fn into_inner(self) -> S {
        self.io
    }

    async fn fill(&mut self) -> Result<(), ConnError> {
        let mut chunk = [0u8; READ_CHUNK];
        let read = tokio::select! {
            () = self.cancel.cancelled() => return Err(ConnError::Shutdown),
            read = tokio::time::timeout(self.idle_timeout, self.io.read(&mut chunk)) => read,
        };
        match read {
            Err(_) => Err(ConnError::IdleTimeout),
            Ok(Err(error)) => Err(ConnError::Io(error)),
            Ok(Ok(0)) => Err(ConnError::Closed),
            Ok(Ok(n)) => {
                self.buffer
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                Ok(())
            }
        }
    }

    /// Reads one command line of at most `max` bytes (CRLF or bare LF terminated).
    ///
    /// # Errors
    /// [`ConnError`] when the connection ends, idles out or the server shuts down.
    pub async fn read_line(&mut self, max: usize) -> Result<Line, ConnError> {
        let mut too_long = false;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if too_long || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if self.buffer.len() > max {
                too_long = true;
                self.buffer.clear();
            }
            self.fill().await?;
        }
    }

    /// Reads one DATA segment: up to and including the next LF, or `max` bytes of a longer
    /// line.
    ///
    /// # Errors
    /// As [`SmtpStream::read_line`].
    pub async fn read_segment(&mut self, max: usize) -> Result<Vec<u8>, ConnError> {
        let max = max.max(3);
        loop {
            let window = self.buffer.get(..max).unwrap_or(&self.buffer);
            if let Some(end) = window.iter().position(|b| *b == b'\n') {
                return Ok(self.buffer.drain(..=end).collect());
            }
            if self.buffer.len() >= max {
                return Ok(self.buffer.drain(..max).collect());
            }
            self.fill().await?;
        }
    }

    /// Reads and drops exactly `count` bytes (a BDAT chunk).
    ///
    /// # Errors
    /// As [`SmtpStream::read_line`].
    pub async fn discard_exact(&mut self, count: u64) -> Result<(), ConnError> {
        let mut remaining = count;
        while remaining > 0 {
            if self.buffer.is_empty() {
                self.fill().await?;
            }
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            self.buffer.drain(..take);
            remaining -= u64::try_from(take).unwrap_or(remaining);
        }
        Ok(())
    }

    /// Writes `bytes` and flushes.
    ///
    /// # Errors
    /// [`ConnError::Io`] on failure, [`ConnError::IdleTimeout`] if the peer does not read.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.idle_timeout, write).await {
            Err(_) => Err(ConnError::IdleTimeout),
            Ok(Err(error)) => Err(ConnError::Io(error)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Best-effort orderly close (TLS close_notify, then FIN).
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_segments_and_limits() {
        let (client, server) = tokio::io::duplex(1024);
        let mut stream = SmtpStream::new(server, Duration::from_secs(5), CancellationToken::new());
        let mut client = client;
        client
            .write_all(b"EHLO x\r\nNOOP\n0123456789ABCDEF\r\nabcdefgh\r\nXY")
            .await
            .unwrap();
        drop(client);
        assert!(
            matches!(stream.read_line(100).await.unwrap(), Line::Complete(l) if l == b"EHLO x")
        );
        assert!(matches!(stream.read_line(100).await.unwrap(), Line::Complete(l) if l == b"NOOP"));
        assert!(matches!(stream.read_line(8).await.unwrap(), Line::TooLong));
        assert_eq!(stream.read_segment(4).await.unwrap(), b"abcd");
        assert_eq!(stream.read_segment(100).await.unwrap(), b"efgh\r\n");
        stream.discard_exact(1).await.unwrap();
        // "Y" without LF, then EOF: an incomplete segment is never handed out.
        assert!(matches!(
            stream.read_segment(10).await,
            Err(ConnError::Closed)
        ));
    }
}
