//! A spool whose disk stops answering during DATA: the client gets `451 4.3.0` within
//! `data_timeout` instead of waiting forever, the session stays usable, and nothing is left
//! in `tmp/`. The relay runs in a runtime whose blocking pool (where every spool disk
//! operation runs) has one thread, which the test occupies: the disk waits are real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::smtp_client::RawClient;
use common::{TestRelay, UNREACHABLE_ACCOUNT};

fn config() -> String {
    format!(
        "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{{state}}\"\n{UNREACHABLE_ACCOUNT}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\
         [limits]\nmin_free_space = 0\ndata_timeout = \"2s\"\n"
    )
}

/// Occupy the runtime's only blocking thread until the returned sender is dropped (at most a
/// minute, so a failing test still ends).
async fn stall_the_disk() -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = started.send(());
        let _ = released.recv_timeout(Duration::from_secs(60));
    });
    running.await.unwrap();
    release
}

#[test]
fn a_disk_that_stalls_during_data_answers_451_within_data_timeout() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let relay = TestRelay::start(&config()).await;
        let mut client = RawClient::connect_greeted(relay.address(0)).await;
        client.expect("EHLO app", 250).await;
        client.expect("MAIL FROM:<scanner@contoso.com>", 250).await;
        client.expect("RCPT TO:<a@x.example>", 250).await;
        let release = stall_the_disk().await;
        client.expect("DATA", 354).await;
        client
            .send_raw(b"Subject: stalled\r\n\r\nbody\r\n.\r\n")
            .await;
        // Well within the test's patience: without a deadline the reply never comes.
        let reply = tokio::time::timeout(Duration::from_secs(30), client.reply())
            .await
            .expect("an answer while the disk is stalled");
        assert_eq!(reply.code, 451, "{reply:?}");
        assert!(reply.text().starts_with("4.3.0"), "{reply:?}");
        assert!(reply.text().contains("too slow"), "{reply:?}");
        drop(release);
        // The session is usable and the disk answers again: mail is accepted.
        let reply = client
            .send_message(
                "scanner@contoso.com",
                &["a@x.example"],
                b"Subject: kept\r\n\r\nx\r\n",
            )
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        assert_eq!(relay.queued_bodies().len(), 1);
        let tmp = relay.state.path().join("spool/tmp");
        assert!(
            common::eventually(Duration::from_secs(10), || std::fs::read_dir(&tmp)
                .unwrap()
                .next()
                .is_none())
            .await,
            "debris in spool/tmp"
        );
        relay.stop().await;
    });
}
