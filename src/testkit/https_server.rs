//! The HTTPS serving loop shared by the Entra and Graph emulators: accept on the emulator's
//! loopback listener, a TLS handshake bounded to 10 s, HTTP/1.1 through hyper with the
//! emulator's request handler, and a graceful close (1 s at most) when the emulator stops.
//!
//! Invariants: every connection task is spawned on the emulator's tracker, so awaiting the
//! tracker after cancelling waits for all of them; an accept error never ends the loop (it is
//! logged and retried after 20 ms); a handler's [`ConnectionDropped`] makes hyper close the
//! connection without an answer (a fault the tests inject on purpose).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The error hyper sees when a fault closes the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed by an injected fault")]
pub(crate) struct ConnectionDropped;

/// A complete response.
pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// Accept connections on `listener` until `cancel`, serving each with `handler`. `name` (e.g.
/// "fake Graph") appears in the log lines.
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    name: &'static str,
    handler: H,
    cancel: CancellationToken,
    tracker: TaskTracker,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<HttpResponse, ConnectionDropped>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                tracker.spawn(serve_connection(
                    tcp,
                    acceptor.clone(),
                    name,
                    handler.clone(),
                    cancel.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "{name} accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_connection<H, F>(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    name: &'static str,
    handler: H,
    cancel: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<HttpResponse, ConnectionDropped>> + Send + 'static,
{
    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
    let tls = tokio::select! {
        () = cancel.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, "{name} TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let service = service_fn(handler);
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
    }
}
