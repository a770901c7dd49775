//! Config tests for Google accounts (issue 16): `provider`, `service_account_key` and
//! `service_account_key_env`, what a broken key file is told (never its content), the keys
//! that belong to Microsoft accounts, and Gmail's limits as defaults.

use super::*;
use crate::oauth::app::ClientCredential;
use crate::testkit::google_workspace::GoogleWorkspace;
use crate::vocab::provider::Provider;

fn config_text(account: &str) -> String {
    format!(
        "[relay]\nhostname = \"relay.example.lan\"\nstate_dir = \"spool\"\n\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\n[[account]]\nname = \"workspace\"\nprovider = \"google\"\nmailbox = \"relay@example.com\"\n{account}\n\n[[network]]\ncidr = \"192.168.10.0/24\"\naccount = \"workspace\"\nallowed_senders = [\"*@example.com\"]\n"
    )
}

fn outcome(text: &str, base: &Path) -> Result<Config, Vec<String>> {
    Config::from_toml(text, base)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

/// A directory with `sa.json` (a healthy key, token_uri = Google's) and the key's PEM.
fn key_dir() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = GoogleWorkspace::healthy("relay@example.com").unwrap();
    key.write_json(
        &dir.path().join("sa.json"),
        "https://oauth2.googleapis.com/token",
    )
    .unwrap();
    (
        dir,
        key.private_key_pem().to_owned(),
        key.client_email.clone(),
    )
}

#[test]
fn a_google_account_loads_with_gmails_defaults() {
    let (dir, _, client_email) = key_dir();
    let config = outcome(
        &config_text("service_account_key = \"sa.json\""),
        dir.path(),
    )
    .unwrap();
    let account = &config.accounts[0];
    assert_eq!(account.provider, Provider::Google);
    assert_eq!(
        (account.smtp_host.as_str(), account.smtp_port),
        ("smtp.gmail.com", 587)
    );
    assert_eq!(account.smtp_tls, UpstreamTls::Starttls);
    assert_eq!(account.scope, "https://mail.google.com/");
    assert_eq!(
        account.token_endpoint(),
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(account.max_recipients_per_message, 100);
    assert_eq!(account.max_recipients_per_day, 10_000);
    assert_eq!(account.max_messages_per_minute, 0);
    assert_eq!(account.max_messages_per_day, 2_000);
    let ClientCredential::ServiceAccount { key, subject } = &account.credential else {
        panic!("not a service account credential");
    };
    assert_eq!(subject, "relay@example.com");
    assert_eq!(key.client_email, client_email);
    assert!(!format!("{config:?}").contains("PRIVATE KEY"));
    assert_eq!(account.client_app().scope, "https://mail.google.com/");
    assert!(
        config
            .warnings
            .iter()
            .all(|w| !w.contains("service_account_key")),
        "{:?}",
        config.warnings
    );
    // A key file other users can read is warned about.
    std::fs::set_permissions(
        dir.path().join("sa.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let config = outcome(
        &config_text("service_account_key = \"sa.json\""),
        dir.path(),
    )
    .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("can be read by other users (mode 644)")),
        "{:?}",
        config.warnings
    );
    // Port 465 wants implicit TLS.
    let text =
        config_text("service_account_key = \"sa.json\"\nsmtp_server = \"smtp.gmail.com:465\"");
    let config = outcome(&text, dir.path()).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("smtp_tls = \"implicit\"")),
        "{:?}",
        config.warnings
    );
    // Two instances share Gmail's daily budgets.
    let text = config_text("service_account_key = \"sa.json\"").replace(
        "state_dir = \"spool\"",
        "state_dir = \"spool\"\ninstances = 2",
    );
    let shared = outcome(&text, dir.path()).unwrap();
    let account = &shared.accounts[0];
    assert_eq!(
        (account.max_messages_per_day, account.max_recipients_per_day),
        (1_000, 5_000)
    );
    let described = account
        .instance_share()
        .describe_share_of(account.mailbox_budget);
    assert!(
        described.ends_with("1000 of 2000 messages a day"),
        "{described}"
    );
    // Microsoft stays the default provider.
    let microsoft = "[[account]]\nname = \"m\"\nmailbox = \"a@contoso.com\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret = \"abc~DEF.secret-value\"\n";
    let text = config_text("service_account_key = \"sa.json\"") + microsoft;
    let config = outcome(&text, dir.path()).unwrap();
    assert_eq!(config.accounts[1].provider, Provider::Microsoft);
    assert_eq!(config.accounts[1].smtp_host, "smtp.office365.com");
}

#[test]
fn an_unset_key_variable_is_named() {
    let (dir, _, _) = key_dir();
    let text = config_text("service_account_key_env = \"RELAY_TEST_GOOGLE_KEY_UNSET\"");
    let errors = outcome(&text, dir.path()).unwrap_err();
    assert!(
        errors[0].starts_with("account[0].service_account_key_env"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("RELAY_TEST_GOOGLE_KEY_UNSET is not set"),
        "{errors:?}"
    );
}

#[test]
fn broken_keys_and_misplaced_keys_are_explained_without_the_key() {
    let (dir, pem, client_email) = key_dir();
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("sa.json")).unwrap())
            .unwrap();
    let mut no_key = good.clone();
    no_key["private_key"] = "".into();
    let mut not_service = good.clone();
    not_service["type"] = "authorized_user".into();
    std::fs::write(dir.path().join("pem.json"), &pem).unwrap();
    std::fs::write(dir.path().join("nokey.json"), no_key.to_string()).unwrap();
    std::fs::write(dir.path().join("user.json"), not_service.to_string()).unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        ("service_account_key = \"pem.json\"".into(), "account[0].service_account_key", "is not JSON"),
        ("service_account_key = \"nokey.json\"".into(), "account[0].service_account_key", "has no private key"),
        ("service_account_key = \"user.json\"".into(), "account[0].service_account_key", "not a service account key"),
        ("service_account_key = \"missing.json\"".into(), "account[0].service_account_key", "missing.json"),
        ("".into(), "account[0].service_account_key", "is required"),
        (
            "service_account_key = \"sa.json\"\nservice_account_key_env = \"X\"".into(),
            "account[0].service_account_key",
            "only one",
        ),
        ("service_account_key = \"sa.json\"\ntenant_id = \"contoso.onmicrosoft.com\"".into(), "account[0].tenant_id", "only applies to Microsoft"),
        ("service_account_key = \"sa.json\"\nclient_secret = \"x\"".into(), "account[0].client_secret", "only applies to Microsoft"),
        ("service_account_key = \"sa.json\"\nscope = \"https://www.googleapis.com/auth/gmail.send\"".into(), "account[0].scope", "gmail.send works only"),
        ("service_account_key = \"sa.json\"\nmax_recipients_per_message = 500".into(), "account[0].max_recipients_per_message", "at most 100"),
        ("service_account_key = \"sa.json\"\nprovider = \"gmail\"".into(), "", "duplicate key"),
    ];
    for (keys, path, expected) in cases {
        let errors = outcome(&config_text(&keys), dir.path()).unwrap_err();
        let found = errors
            .iter()
            .any(|e| e.starts_with(path) && e.contains(expected));
        assert!(found, "{keys}: {errors:?}");
        for error in &errors {
            assert!(
                !error.contains("BEGIN PRIVATE KEY") && !error.contains(&pem[40..80]),
                "{error}"
            );
        }
    }
    // The service account's own address as mailbox: Google's "Invalid email or User ID".
    let text = config_text("service_account_key = \"sa.json\"").replace(
        "mailbox = \"relay@example.com\"",
        &format!("mailbox = \"{client_email}\""),
    );
    let errors = outcome(&text, dir.path()).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("service account's own address")),
        "{errors:?}"
    );
    // service_account_key on a Microsoft account.
    let text =
        config_text("service_account_key = \"sa.json\"").replace("provider = \"google\"\n", "");
    let errors = outcome(&text, dir.path()).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "account[0].service_account_key: only applies with provider = \"google\""
        )),
        "{errors:?}"
    );
}
