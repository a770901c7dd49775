//! The one-call bundle, `.eml` output and fast mode.

use std::time::Duration;

use super::raw_smtp::{authenticated, simple_message};
use super::{STEP, fetch_token};
use crate::testkit::exchange::ExchangeOptions;
use crate::testkit::random::is_guid;
use crate::testkit::{Testkit, TestkitOptions};

#[tokio::test]
async fn bundle_exposes_a_relay_configuration_and_writes_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let eml_dir = dir.path().join("delivered");
    let kit = Testkit::start(TestkitOptions {
        exchange: ExchangeOptions {
            eml_dir: Some(eml_dir.clone()),
            ..ExchangeOptions::default()
        },
        ..TestkitOptions::default()
    })
    .await
    .unwrap();
    assert!(is_guid(&kit.tenant_id()));
    assert!(is_guid(kit.client_id()));
    assert_eq!(kit.client_secret().len(), 40);
    assert_eq!(kit.tenant_domain(), "contoso.onmicrosoft.com");
    assert_eq!(kit.mailbox(), "relay@contoso.com");
    assert_eq!(kit.scope(), "https://outlook.office365.com/.default");
    assert!(kit.authority().starts_with("https://127.0.0.1:"));
    assert!(kit.smtp_server().starts_with("127.0.0.1:"));
    assert_eq!(
        kit.token_url(),
        format!("{}/{}/oauth2/v2.0/token", kit.authority(), kit.tenant_id())
    );
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    assert_eq!(std::fs::read_to_string(ca).unwrap(), kit.ca_pem());
    assert!(!format!("{kit:?}").contains(kit.client_secret()));

    let token = fetch_token(&kit).await;
    let mut client = authenticated(&kit, &token).await;
    let body = simple_message(kit.mailbox(), "a@fabrikam.com", "eml");
    assert_eq!(
        client
            .send_message(kit.mailbox(), "a@fabrikam.com", &body)
            .await
            .code,
        250
    );
    let message = kit
        .exchange
        .wait_for_messages(1, STEP)
        .await
        .unwrap()
        .remove(0);
    let path = message.eml_path.clone().unwrap();
    assert!(path.starts_with(&eml_dir));
    assert_eq!(std::fs::read(path).unwrap(), message.body());
    let files: Vec<_> = std::fs::read_dir(&eml_dir).unwrap().collect();
    assert_eq!(files.len(), 1, "no temporary file left behind");
    kit.shutdown().await;
}

#[tokio::test]
async fn fast_mode_counts_and_hashes_without_storing() {
    let kit = Testkit::start(TestkitOptions {
        exchange: ExchangeOptions {
            fast_mode: true,
            ..ExchangeOptions::default()
        },
        ..TestkitOptions::default()
    })
    .await
    .unwrap();
    let token = kit.mint_exchange_token().unwrap();
    let mut client = authenticated(&kit, &token).await;
    let body = simple_message(kit.mailbox(), "a@fabrikam.com", "fast");
    for _ in 0..3 {
        assert_eq!(
            client
                .send_message(kit.mailbox(), "a@fabrikam.com", &body)
                .await
                .code,
            250
        );
    }
    // The cached token still authenticates a second session.
    let _second = authenticated(&kit, &token).await;
    kit.exchange.wait_for_messages(3, STEP).await.unwrap();
    assert_eq!(kit.exchange.message_count(), 3);
    let messages = kit.exchange.messages();
    assert_eq!(messages.len(), 3);
    assert!(
        messages.iter().all(|m| m.data.is_none()),
        "bodies are not kept in fast mode"
    );
    assert_eq!(messages[0].sha256, messages[2].sha256);
    assert_eq!(messages[0].size, body.len() + 2);
    let stats = kit.exchange.stats();
    assert_eq!(stats.messages_accepted, 3);
    assert_eq!(stats.bytes_accepted, 3 * (body.len() as u64 + 2));
    assert!(matches!(
        kit.exchange
            .wait_for_messages(4, Duration::from_millis(100))
            .await,
        Err(crate::testkit::TestkitError::Timeout { .. })
    ));
}
