//! `check` whose reader goes away (`check | head -1`) ends quietly: the account report is
//! printed after the reader is gone and must not panic with "failed printing to stdout".
//!
//! Note: the blank line `check` prints before each report already meets the closed pipe, so
//! this test cannot tell `diagnose::print_report`'s own lines (now `outln!`) from the old
//! `println!`; those only met a closed pipe when the reader left between the blank line and
//! the report. It guards the behaviour as a whole.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::binary;

#[tokio::test]
async fn check_ends_quietly_when_its_reader_went_away_before_the_account_report() {
    // The token endpoint: accepts and says nothing until the test lets it go, so `check`
    // prints its first line and then waits there, with the report still to print.
    let endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = endpoint.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\naddress = \"off\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"{}\"\n\
             [[account]]\nname = \"m365\"\nmailbox = \"relay@contoso.com\"\ntenant_id = \"contoso.onmicrosoft.com\"\n\
             client_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret = \"test~secret\"\n\
             authority = \"https://127.0.0.1:{port}\"\nsmtp_server = \"127.0.0.1:1\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut child = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read up to the summary line, as `head` does, and go away.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read = String::new();
    for _ in 0..20 {
        if read.contains("configuration OK") || stdout.read_line(&mut read).unwrap() == 0 {
            break;
        }
    }
    assert!(read.contains("configuration OK"), "{read}");
    drop(stdout);
    // Only now does the token request fail, and the report gets printed.
    let (held, _) = tokio::time::timeout(Duration::from_secs(60), endpoint.accept())
        .await
        .expect("check asks the token endpoint")
        .unwrap();
    drop(held);
    drop(endpoint);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
