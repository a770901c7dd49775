//! The sockets under lettre: implicit TLS as a stream lettre can drive, and a second handle
//! on the TCP socket to break a transaction off before its final dot.

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::net::TcpStream;

/// An implicit-TLS stream lettre can drive.
#[derive(Debug)]
pub(super) struct ImplicitTls(pub(super) tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A second handle on the upstream TCP socket, to break the connection off (both directions)
/// from inside the DATA write loop, where lettre's connection cannot be reached. Used when
/// streamed content fails verification: the server then sees the connection drop before the
/// final dot and discards the message (RFC 5321 §4.1.1.4).
#[derive(Clone)]
pub(super) struct BreakHandle(std::sync::Arc<std::net::TcpStream>);

impl BreakHandle {
    pub(super) fn of(tcp: &TcpStream) -> Option<BreakHandle> {
        use std::os::fd::AsFd;
        match tcp.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(BreakHandle(std::sync::Arc::new(std::net::TcpStream::from(
                fd,
            )))),
            Err(error) => {
                tracing::warn!(%error, "cannot duplicate the upstream socket; large messages wait for another session");
                None
            }
        }
    }

    pub(super) fn break_off(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}
