//! The signals that stop the relay: SIGINT (Ctrl-C) and SIGTERM (what a container runtime or
//! systemd sends). SIGHUP (reload) is the command's business: it reads the configuration anew.
//!
//! Invariant: waiting never fails; where SIGTERM cannot be watched, Ctrl-C alone still ends
//! the wait.

/// Wait for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
