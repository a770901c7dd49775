//! AUTH on the fake Exchange server: XOAUTH2 forms, every token/tenant misconfiguration of
//! exchange-online.md §0 and the `535` replies it produces.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::raw_smtp::{RawSmtp, xoauth2};
use super::{fetch_token, kit};
use crate::testkit::exchange::AuthRejection;
use crate::testkit::{Resource, Testkit, TokenSigner};

/// Connects, secures and sends AUTH XOAUTH2 with `token` as `user`; returns the reply text.
async fn auth_reply(kit: &Testkit, user: &str, token: &str) -> String {
    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    client.secure(kit.pki.client_config()).await;
    client.auth_xoauth2(user, token).await.last()
}

fn unsuccessful(kit: &Testkit) -> String {
    format!(
        "535 5.7.3 Authentication unsuccessful [{}]",
        kit.exchange.hostname()
    )
}

#[tokio::test]
async fn healthy_token_from_entra_authenticates() {
    let kit = kit().await;
    let token = fetch_token(&kit).await;
    assert_eq!(
        auth_reply(&kit, kit.mailbox(), &token).await,
        "235 2.7.0 Authentication successful"
    );
    let attempt = kit.exchange.auth_attempts().pop().unwrap();
    assert_eq!(attempt.result, Ok(()));
    assert_eq!(attempt.mechanism, "XOAUTH2");
    assert_eq!(attempt.mailbox.as_deref(), Some(kit.mailbox()));
    assert_eq!(attempt.client_id.as_deref(), Some(kit.client_id()));
    assert_eq!(attempt.token_prefix.as_deref(), Some(&token[..8]));
    assert!(!format!("{:?}", kit.exchange.stats()).contains(&token[..40]));
}

#[tokio::test]
async fn two_step_xoauth2_and_malformed_payloads() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    client.secure(kit.pki.client_config()).await;
    let challenge = client.cmd("AUTH XOAUTH2").await;
    assert_eq!(challenge.lines, vec!["334 ".to_owned()]);
    let reply = client.cmd(&xoauth2(kit.mailbox(), &token)).await;
    assert_eq!(reply.last(), "235 2.7.0 Authentication successful");
    assert_eq!(
        client.cmd("AUTH XOAUTH2").await.code,
        503,
        "already authenticated"
    );

    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    client.secure(kit.pki.client_config()).await;
    let missing_terminator =
        STANDARD.encode(format!("user={}\x01auth=Bearer {token}", kit.mailbox()));
    for bad in ["%%%not-base64", missing_terminator.as_str()] {
        let reply = client.cmd(&format!("AUTH XOAUTH2 {bad}")).await;
        assert_eq!(reply.last(), "501 5.5.124 Invalid XOAUTH2 auth data");
    }
    assert_eq!(client.cmd("AUTH XOAUTH2").await.code, 334);
    assert_eq!(client.cmd("*").await.code, 501, "SASL cancel");
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::Cancelled))
    );
    // Lowercase mechanism, as in Microsoft's own example, is accepted.
    let reply = client
        .cmd(&format!("auth xoauth2 {}", xoauth2(kit.mailbox(), &token)))
        .await;
    assert_eq!(reply.code, 235);
}

#[tokio::test]
async fn basic_auth_and_unknown_mechanisms_are_refused() {
    let kit = kit().await;
    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    client.secure(kit.pki.client_config()).await;
    assert_eq!(client.cmd("AUTH LOGIN").await.last(), "334 VXNlcm5hbWU6");
    assert_eq!(client.cmd("cmVsYXk=").await.last(), "334 UGFzc3dvcmQ6");
    assert_eq!(
        client.cmd("cGFzc3dvcmQ=").await.last(),
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    );
    assert_eq!(
        client.cmd("AUTH PLAIN AHJlbGF5AHBhc3N3b3Jk").await.last(),
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    );
    assert_eq!(
        client.cmd("AUTH CRAM-MD5").await.last(),
        "504 5.7.4 Unrecognized authentication type"
    );
    let results: Vec<_> = kit
        .exchange
        .auth_attempts()
        .iter()
        .map(|a| a.result)
        .collect();
    assert_eq!(
        results,
        vec![
            Err(AuthRejection::BasicAuthDisabled),
            Err(AuthRejection::BasicAuthDisabled),
            Err(AuthRejection::UnsupportedMechanism)
        ]
    );
}

#[tokio::test]
async fn token_problems_give_535_5_7_3_with_the_reason_recorded() {
    let kit = kit().await;
    let expected = unsuccessful(&kit);

    // Graph audience (wrong scope requested), even with Mail.Send granted.
    kit.directory
        .set_graph_roles(kit.client_id(), &["Mail.Send"])
        .unwrap();
    let graph = kit
        .directory
        .mint_access_token(kit.client_id(), Resource::Graph, Duration::from_secs(600))
        .unwrap();
    assert_eq!(auth_reply(&kit, kit.mailbox(), &graph).await, expected);
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::WrongAudience))
    );

    // Signed by somebody else.
    let claims =
        crate::testkit::jwt::decode_claims_unverified(&kit.mint_exchange_token().unwrap()).unwrap();
    let forged = TokenSigner::new().unwrap().sign(&claims).unwrap();
    assert_eq!(auth_reply(&kit, kit.mailbox(), &forged).await, expected);
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::BadSignature))
    );

    // Not a JWT at all.
    assert_eq!(
        auth_reply(&kit, kit.mailbox(), "opaque-token").await,
        expected
    );
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::MalformedToken))
    );

    // user= is not a mailbox of the tenant.
    let token = kit.mint_exchange_token().unwrap();
    assert_eq!(
        auth_reply(&kit, "nobody@contoso.com", &token).await,
        expected
    );
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::UnknownMailbox))
    );
}

#[tokio::test]
async fn admin_misconfigurations_give_535_5_7_3() {
    let kit = kit().await;
    let expected = unsuccessful(&kit);
    let client_id = kit.client_id().to_owned();
    let mailbox = kit.mailbox().to_owned();

    // Admin consent missing: Entra still issues a token, without roles.
    kit.directory.revoke_admin_consent(&client_id).unwrap();
    let token = fetch_token(&kit).await;
    assert_eq!(auth_reply(&kit, &mailbox, &token).await, expected);
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::MissingRole))
    );
    kit.directory
        .grant_exchange_role(&client_id, "SMTP.SendAsApp")
        .unwrap();

    // New-ServicePrincipal never run.
    kit.directory.remove_service_principal(&client_id);
    let token = fetch_token(&kit).await;
    assert_eq!(auth_reply(&kit, &mailbox, &token).await, expected);
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::NoServicePrincipal))
    );

    // New-ServicePrincipal with the App registration's object id.
    kit.directory
        .new_service_principal_with_app_object_id(&client_id)
        .unwrap();
    assert_eq!(auth_reply(&kit, &mailbox, &token).await, expected);
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::ServicePrincipalMismatch))
    );
    kit.directory.new_service_principal(&client_id).unwrap();

    // FullAccess missing.
    kit.directory
        .remove_mailbox_permission(&mailbox, &client_id)
        .unwrap();
    assert_eq!(auth_reply(&kit, &mailbox, &token).await, expected);
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::MailboxNotGranted))
    );
    kit.directory
        .add_mailbox_permission(&mailbox, &client_id)
        .unwrap();

    assert_eq!(
        auth_reply(&kit, &mailbox, &token).await,
        "235 2.7.0 Authentication successful"
    );
    let stats = kit.exchange.stats();
    assert_eq!(stats.auth_failures, 4);
    assert_eq!(stats.auth_successes, 1);
}

#[tokio::test]
async fn smtp_auth_disabled_gives_535_5_7_139() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let mailbox = kit.mailbox().to_owned();
    kit.directory.set_tenant_smtp_auth_disabled(true);
    assert_eq!(
        auth_reply(&kit, &mailbox, &token).await,
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
    );
    // The per-mailbox override beats the tenant setting.
    kit.directory
        .set_mailbox_smtp_auth_disabled(&mailbox, Some(false))
        .unwrap();
    assert_eq!(
        auth_reply(&kit, &mailbox, &token).await,
        "235 2.7.0 Authentication successful"
    );
    kit.directory
        .set_mailbox_smtp_auth_disabled(&mailbox, Some(true))
        .unwrap();
    assert_eq!(
        auth_reply(&kit, &mailbox, &token).await,
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information."
    );
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::SmtpAuthDisabledForMailbox))
    );
}

#[tokio::test]
async fn expired_token_gives_535_5_7_3() {
    let kit = kit().await;
    kit.entra.set_token_lifetime(Duration::from_secs(1));
    let token = fetch_token(&kit).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        auth_reply(&kit, kit.mailbox(), &token).await,
        unsuccessful(&kit)
    );
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::Expired))
    );
    // A fresh token (what the relay should fetch next) works again.
    kit.entra.set_token_lifetime(Duration::from_secs(3599));
    let token = fetch_token(&kit).await;
    assert_eq!(
        auth_reply(&kit, kit.mailbox(), &token).await,
        "235 2.7.0 Authentication successful"
    );
}
