//! What the spool's tests and its callers' tests share: a plain envelope, and a runtime whose
//! disk can be made to stall for real (its one blocking thread held), with no mock of the spool.

use std::sync::mpsc;
use std::time::Duration;

use super::unix_now;
use crate::vocab::address::Address;
use crate::vocab::envelope::{ClientInfo, Envelope};

/// An envelope for account `m365`, from scanner@contoso.com to a@x.example.
pub(crate) fn envelope() -> Envelope {
    Envelope::new(
        "m365",
        Some(Address::parse("scanner@contoso.com").unwrap()),
        vec![Address::parse("a@x.example").unwrap()],
        ClientInfo {
            peer: "127.0.0.1:1".into(),
            helo: None,
            principal: "user printer".into(),
        },
        unix_now(),
    )
}

/// A runtime whose blocking pool (where every spool disk operation runs) has one thread.
pub(crate) fn runtime_with_one_disk_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Occupy the only blocking thread until the returned sender is dropped: from then on every
/// disk operation of the spool waits (at most a minute, so a failing test still ends).
pub(crate) async fn stall_the_disk() -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = started.send(());
        let _ = released.recv_timeout(Duration::from_secs(60));
    });
    running.await.unwrap();
    release
}
