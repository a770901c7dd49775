//! The accept loop of the fake Exchange server, including the `RefuseConnections` fault:
//! the listening socket is really closed (so `connect()` fails with ECONNREFUSED, not a
//! timeout or an immediate close), and the same port is bound again when the fault clears.
//!
//! Invariants: the socket is always bound with `SO_REUSEADDR` on `127.0.0.1`, so it can be
//! re-bound while accepted connections or TIME_WAIT entries still use the port; the listener
//! reports every state change through `ExchangeShared::report_listener`, which is what
//! `FakeExchange::set_fault` / `clear_faults` wait for.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::exchange_session;
use super::exchange_state::{ExchangeShared, ListenerState};

const REBIND_ATTEMPTS: u32 = 100;
const REBIND_PAUSE: Duration = Duration::from_millis(20);

/// Binds `127.0.0.1:port` (port 0 when `None`) with `SO_REUSEADDR`.
///
/// # Errors
/// The socket error.
pub fn bind_reusable(port: Option<u16>) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port.unwrap_or(0))))?;
    socket.listen(128)
}

async fn rebind(addr: SocketAddr, cancel: &CancellationToken) -> Result<TcpListener, String> {
    let mut last_error = String::new();
    for _ in 0..REBIND_ATTEMPTS {
        match bind_reusable(Some(addr.port())) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = error.to_string(),
        }
        tokio::select! {
            () = cancel.cancelled() => return Err("shutting down".to_owned()),
            () = tokio::time::sleep(REBIND_PAUSE) => {}
        }
    }
    Err(format!("could not re-bind {addr}: {last_error}"))
}

/// Accepts connections until `cancel`, closing and re-opening the socket on demand.
pub async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<ExchangeShared>,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut listener = Some(listener);
    let mut refuse = shared.refuse_receiver();
    loop {
        let refusing = *refuse.borrow_and_update();
        if refusing {
            if listener.take().is_some() {
                tracing::debug!(%addr, "fake Exchange refusing connections");
            }
            shared.report_listener(ListenerState::Refusing);
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = refuse.changed() => if changed.is_err() { break },
            }
            continue;
        }
        let Some(active) = listener.as_ref() else {
            match rebind(addr, &cancel).await {
                Ok(rebound) => {
                    tracing::debug!(%addr, "fake Exchange listening again");
                    listener = Some(rebound);
                    shared.report_listener(ListenerState::Listening);
                }
                Err(reason) => {
                    tracing::warn!(%reason, "fake Exchange listener failed");
                    shared.report_listener(ListenerState::Failed(reason));
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        changed = refuse.changed() => if changed.is_err() { break },
                    }
                }
            }
            continue;
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = refuse.changed() => if changed.is_err() { break },
            accepted = active.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tracker.spawn(exchange_session::serve(
                        Arc::clone(&shared),
                        acceptor.clone(),
                        tcp,
                        peer,
                        cancel.child_token(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "fake Exchange accept failed");
                    tokio::time::sleep(REBIND_PAUSE).await;
                }
            },
        }
    }
}
