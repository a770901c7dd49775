//! Config loading and validation tests.

use super::*;

const VALID: &str = r#"
[relay]
hostname = "relay.example.lan"
state_dir = "spool"

[[listener]]
address = "127.0.0.1:2525"

[[account]]
name = "m365"
mailbox = "scanner@contoso.com"
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = "abc~DEF.secret-value"

[[user]]
username = "printer"
password = "pw"
account = "m365"
allowed_senders = ["scanner@contoso.com"]

[[network]]
cidr = "192.168.10.0/24"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#;

#[test]
fn valid_config_with_defaults() {
    let config = Config::from_toml(VALID, Path::new("/etc/relay")).unwrap();
    assert_eq!(config.relay.hostname, "relay.example.lan");
    assert_eq!(config.relay.state_dir, PathBuf::from("/etc/relay/spool"));
    let account = &config.accounts[0];
    assert_eq!(account.authority, DEFAULT_AUTHORITY);
    assert_eq!(account.scope, DEFAULT_SCOPE);
    assert_eq!(
        (account.smtp_host.as_str(), account.smtp_port),
        ("smtp.office365.com", 587)
    );
    assert_eq!(account.smtp_tls, UpstreamTls::Starttls);
    assert_eq!(account.max_connections, 3);
    assert_eq!(account.max_messages_per_minute, 30);
    assert_eq!(
        account.token_endpoint(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(config.limits.max_message_size, 35 * 1024 * 1024);
    assert_eq!(config.queue.retry_schedule.len(), 5);
    assert_eq!(config.policy.counts(), (1, 1));
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("password is stored in clear"))
    );
}

#[test]
fn every_error_is_reported_by_key_path() {
    let text = r#"
[limits]
max_message_size = "200 MiB"

[queue]
retry_schedule = ["1m", "soon"]

[[listener]]
address = "localhost"
tls = "starttls"

[[account]]
name = "m365"
mailbox = "not-an-address"
tenant_id = "common"
client_id = "my-app"
authority = "http://login.example"
scope = "https://outlook.office365.com/SMTP.Send"
smtp_server = "smtp.office365.com"

[[user]]
username = "printer"
account = "nope"
allowed_senders = ["bad pattern"]
"#;
    let errors = Config::from_toml(text, Path::new("/")).unwrap_err().0;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "limits.max_message_size",
        "queue.retry_schedule[1]",
        "listener[0].address",
        "listener[0].certificate",
        "listener[0].private_key",
        "account[0].mailbox",
        "account[0].tenant_id",
        "account[0].client_id",
        "account[0].client_secret",
        "account[0].authority",
        "account[0].scope",
        "account[0].smtp_server",
        "user[0].password_hash",
        "user[0].account",
        "user[0].allowed_senders[0]",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    let rendered = ConfigErrors(errors).to_string();
    assert!(rendered.contains("AADSTS9001023"));
    assert!(rendered.contains("Application (client) ID"));
}

#[test]
fn empty_config_names_what_is_missing() {
    let errors = Config::from_toml("", Path::new("/")).unwrap_err().0;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["listener", "account", "user"]);
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = "[relay]\nhostname = \"x\"\nstate_directory = \"/tmp\"\n";
    let errors = Config::from_toml(text, Path::new("/")).unwrap_err().0;
    assert!(errors[0].message.contains("line 3"), "{errors:?}");
    assert!(errors[0].message.contains("state_directory"), "{errors:?}");
}

#[test]
fn secrets_from_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "from-file\n").unwrap();
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_secret_file = \"secret.txt\"",
    );
    let config = Config::from_toml(&text, dir.path()).unwrap();
    let ClientCredential::Secret(secret) = &config.accounts[0].credential else {
        panic!("a secret credential")
    };
    assert_eq!(secret.expose(), "from-file");

    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_secret_env = \"SMTP_OAUTH_RELAY_TEST_UNSET_VARIABLE\"",
    );
    let errors = Config::from_toml(&text, dir.path()).unwrap_err().0;
    assert_eq!(errors[0].path, "account[0].client_secret_env");
}

#[test]
fn a_secret_that_looks_like_a_secret_id_is_flagged() {
    let text = VALID.replace(
        "abc~DEF.secret-value",
        "6f1c2e3d-0000-4000-8000-00000000abcd",
    );
    let config = Config::from_toml(&text, Path::new("/")).unwrap();
    assert!(config.warnings.iter().any(|w| w.contains("secret's ID")));
}

#[test]
fn the_secret_never_appears_in_debug_output() {
    let config = Config::from_toml(VALID, Path::new("/")).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("abc~DEF.secret-value"));
    assert!(!debug.contains("\"pw\""));
}

#[test]
fn more_than_three_connections_per_mailbox_is_refused() {
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_secret = \"abc~DEF.secret-value\"\nmax_connections = 4",
    );
    let errors = Config::from_toml(&text, Path::new("/")).unwrap_err().0;
    assert_eq!(errors[0].path, "account[0].max_connections");
}

#[test]
fn every_key_of_the_schema_is_documented_in_the_example() {
    let example = include_str!("../../relay.toml.example");
    let sections: Vec<(&str, serde_json::Value)> = vec![
        (
            "relay",
            serde_json::to_value(raw::RawRelay::default()).unwrap(),
        ),
        (
            "admin",
            serde_json::to_value(raw::RawAdmin::default()).unwrap(),
        ),
        (
            "limits",
            serde_json::to_value(raw::RawLimits::default()).unwrap(),
        ),
        (
            "queue",
            serde_json::to_value(raw::RawQueue::default()).unwrap(),
        ),
        (
            "listener",
            serde_json::to_value(raw::RawListener::default()).unwrap(),
        ),
        (
            "account",
            serde_json::to_value(raw::RawAccount::default()).unwrap(),
        ),
        (
            "user",
            serde_json::to_value(raw::RawUser::default()).unwrap(),
        ),
        (
            "network",
            serde_json::to_value(raw::RawNetwork::default()).unwrap(),
        ),
    ];
    // The example's lines under each section header ("[name]", "[[name]]", or commented).
    let mut lines_of: std::collections::HashMap<String, Vec<&str>> = Default::default();
    let mut current = String::new();
    for line in example.lines() {
        let bare = line.trim_start_matches(['#', ' ']);
        if bare.starts_with('[') {
            current = bare.trim_matches(['[', ']']).to_string();
            continue;
        }
        lines_of.entry(current.clone()).or_default().push(bare);
    }
    let mut missing = Vec::new();
    for (section, value) in sections {
        for key in value.as_object().unwrap().keys() {
            let documented = lines_of.get(section).is_some_and(|lines| {
                lines.iter().any(|line| {
                    line.starts_with(&format!("{key} =")) || line.starts_with(&format!("{key}="))
                })
            });
            if !documented {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from relay.toml.example: {missing:?}"
    );
}

#[test]
fn cloud_presets_set_the_three_endpoints_and_explicit_keys_win() {
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_secret = \"abc~DEF.secret-value\"\ncloud = \"usgov-gcchigh\"",
    );
    let account = &Config::from_toml(&text, Path::new("/")).unwrap().accounts[0];
    assert_eq!(account.authority, "https://login.microsoftonline.us");
    assert_eq!(account.scope, "https://outlook.office365.us/.default");
    assert_eq!(account.smtp_host, "smtp.office365.us");
    let text = text.replace(
        "cloud = \"usgov-gcchigh\"",
        "cloud = \"usgov-gcchigh\"\nsmtp_server = \"relay.proxy.lan:2525\"",
    );
    let account = &Config::from_toml(&text, Path::new("/")).unwrap().accounts[0];
    assert_eq!(
        (account.smtp_host.as_str(), account.smtp_port),
        ("relay.proxy.lan", 2525)
    );
    assert_eq!(account.authority, "https://login.microsoftonline.us");
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_secret = \"x~y\"\ncloud = \"mars\"",
    );
    let errors = Config::from_toml(&text, Path::new("/")).unwrap_err().0;
    assert_eq!(errors[0].path, "account[0].cloud");
}

#[test]
fn bounce_settings() {
    let with_queue =
        |queue: &str| VALID.replace("[[listener]]", &format!("[queue]\n{queue}\n\n[[listener]]"));
    let bounce =
        |queue: &str| Config::from_toml(&with_queue(queue), Path::new("/")).map(|c| c.queue.bounce);
    assert_eq!(bounce("").unwrap(), BouncePolicy::Sender);
    assert_eq!(bounce("bounce = \"none\"").unwrap(), BouncePolicy::None);
    assert_eq!(
        bounce("bounce_to = \"it@contoso.com\"").unwrap(),
        BouncePolicy::To("it@contoso.com".into())
    );
    assert_eq!(
        bounce("bounce = \"none\"\nbounce_to = \"it@contoso.com\"")
            .unwrap_err()
            .0[0]
            .path,
        "queue.bounce_to"
    );
    assert_eq!(
        bounce("bounce_to = \"not an address\"").unwrap_err().0[0].path,
        "queue.bounce_to"
    );
    assert_eq!(
        bounce("bounce = \"postmaster\"").unwrap_err().0[0].path,
        "queue.bounce"
    );
}

#[test]
fn acknowledge_modes() {
    let listener = |extra: &str| {
        let text = VALID.replace(
            "address = \"127.0.0.1:2525\"",
            &format!("address = \"127.0.0.1:2525\"\n{extra}"),
        );
        Config::from_toml(&text, Path::new("/")).map(|c| c.listeners[0].acknowledge_delivered)
    };
    assert_eq!(listener("").unwrap(), None);
    assert_eq!(
        listener("acknowledge = \"delivered\"").unwrap(),
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(
        listener("acknowledge = \"delivered\"\nacknowledge_timeout = \"5s\"").unwrap(),
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        listener("acknowledge = \"sometimes\"").unwrap_err().0[0].path,
        "listener[0].acknowledge"
    );
}

#[test]
fn certificate_credentials_load_warn_before_expiry_and_explain_bad_files() {
    use crate::testkit::client_cert::TestClientCertificate;
    let dir = tempfile::tempdir().unwrap();
    let soon =
        TestClientCertificate::generate("relay", std::time::Duration::from_secs(10 * 86_400))
            .unwrap();
    soon.write_combined_pem(&dir.path().join("app.pem"))
        .unwrap();
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_certificate = \"app.pem\"",
    );
    let config = Config::from_toml(&text, dir.path()).unwrap();
    assert!(matches!(
        config.accounts[0].credential,
        ClientCredential::Certificate { .. }
    ));
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.starts_with("account[0].client_certificate")),
        "{:?}",
        config.warnings
    );
    std::fs::write(dir.path().join("cert-only.pem"), soon.cert_pem()).unwrap();
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_certificate = \"cert-only.pem\"",
    );
    let errors = Config::from_toml(&text, dir.path()).unwrap_err().0;
    assert_eq!(errors[0].path, "account[0].client_certificate");
    assert!(
        errors[0].message.contains("private key"),
        "{}",
        errors[0].message
    );
    let text = VALID.replace(
        "client_secret = \"abc~DEF.secret-value\"",
        "client_certificate = \"app.pem\"\nclient_assertion_algorithm = \"hs256\"",
    );
    let errors = Config::from_toml(&text, dir.path()).unwrap_err().0;
    assert_eq!(errors[0].path, "account[0].client_assertion_algorithm");
}

#[test]
fn a_world_readable_config_with_secrets_in_it_is_flagged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "from-file\n").unwrap();
    let path = dir.path().join("relay.toml");
    let flagged = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Config::load(&path)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("every user can read it"))
    };
    // VALID has a client secret and a clear-text password.
    assert!(flagged(VALID, 0o644));
    assert!(!flagged(VALID, 0o600));
    assert!(!flagged(VALID, 0o640), "readable by the relay's group only");
    let no_secrets = VALID
        .replace(
            "client_secret = \"abc~DEF.secret-value\"",
            "client_secret_file = \"secret.txt\"",
        )
        .replace(
            "password = \"pw\"",
            "password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$0nWfEnTf7TXXq3uF2g4cWlnd+BZ2H/E9Mcpw/HdAlhk\"",
        );
    assert!(!flagged(&no_secrets, 0o644));
}

#[test]
fn white_space_around_a_secret_is_removed_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        &VALID.replace("\"abc~DEF.secret-value\"", "\" abc~DEF.secret-value \""),
        dir.path(),
    )
    .unwrap();
    let ClientCredential::Secret(secret) = &config.accounts[0].credential else {
        panic!("a secret credential")
    };
    assert_eq!(secret.expose(), "abc~DEF.secret-value");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("white space around the secret"))
    );
    let config = Config::from_toml(
        &VALID.replace("\"abc~DEF.secret-value\"", "\"abc~DEF secret-value\""),
        dir.path(),
    )
    .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("contains white space"))
    );
}

#[test]
fn listeners_and_the_admin_endpoint_must_not_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace(
        "[[listener]]\naddress = \"127.0.0.1:2525\"\n",
        "[[listener]]\naddress = \"127.0.0.1:2525\"\n[[listener]]\naddress = \"0.0.0.0:2525\"\n[admin]\naddress = \"127.0.0.1:2525\"\n",
    );
    let errors = Config::from_toml(&text, dir.path()).unwrap_err().0;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"listener[1].address"), "{errors:?}");
    assert!(paths.contains(&"admin.address"), "{errors:?}");
}

#[test]
fn a_wildcard_inside_an_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace("[\"*@contoso.com\"]", "[\"rel*@contoso.com\"]");
    let errors = Config::from_toml(&text, dir.path()).unwrap_err().0;
    assert_eq!(errors[0].path, "network[0].allowed_senders[0]");
}

#[test]
fn two_accounts_on_one_mailbox_are_warned_about_the_session_limit() {
    let dir = tempfile::tempdir().unwrap();
    let second = VALID
        .split("[[account]]")
        .nth(1)
        .unwrap()
        .split("[[user]]")
        .next()
        .unwrap()
        .replace("name = \"m365\"", "name = \"second\"");
    let text = VALID.replace("[[user]]", &format!("[[account]]{second}[[user]]"));
    let config = Config::from_toml(&text, dir.path()).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("up to 6 sessions")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn client_secret_expires_is_a_date_for_a_secret_only() {
    let with = |line: &str| {
        VALID.replace(
            "client_secret = \"abc",
            &format!("{line}\nclient_secret = \"abc"),
        )
    };
    let config = Config::from_toml(
        &with("client_secret_expires = \"2099-06-30\""),
        Path::new("/"),
    )
    .unwrap();
    let expiry = config.accounts[0].credential_expiry().unwrap();
    assert_eq!(
        (expiry.kind.as_str(), expiry.date().as_str()),
        ("secret", "2099-06-30")
    );
    assert!(
        !config
            .warnings
            .iter()
            .any(|w| w.contains("client_secret_expires"))
    );
    let none = Config::from_toml(VALID, Path::new("/")).unwrap();
    assert!(none.accounts[0].credential_expiry().is_none());
    let errors = Config::from_toml(
        &with("client_secret_expires = \"30.06.2027\""),
        Path::new("/"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("account[0].client_secret_expires")
            && errors.contains("YYYY-MM-DD")
            && errors.contains("Certificates & secrets"),
        "{errors}"
    );
    // Within 30 days: a warning at load (`check --config-only` prints it).
    let soon = crate::spool::unix_now() + 10 * 86_400 + 3600;
    let soon = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(soon),
    )
    .to_string();
    let config = Config::from_toml(
        &with(&format!("client_secret_expires = \"{}\"", &soon[..10])),
        Path::new("/"),
    )
    .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("account[0].client_secret_expires") && w.contains("expires on")),
        "{:?}",
        config.warnings
    );
}
