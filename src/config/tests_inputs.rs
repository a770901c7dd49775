//! Tests of the inputs a configuration names or holds: files read bounded and only when
//! regular, argon2 cost bounds, host bits in a CIDR, empty passwords, and secrets that never
//! reach `Debug` or `Serialize`.

use super::*;

const BASE: &str = r#"
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
client_secret = "abc~DEF.secret-value-7f3"

[[user]]
username = "printer"
password = "clear-password-42"
account = "m365"
allowed_senders = ["scanner@contoso.com"]

[[network]]
cidr = "192.168.10.0/24"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#;

fn errors_of(text: &str, base: &Path) -> Vec<ConfigError> {
    match Config::from_toml(text, base) {
        Ok(_) => panic!("the config should be refused:\n{text}"),
        Err(errors) => errors.0,
    }
}

#[test]
fn neither_the_parsed_nor_the_raw_config_shows_a_secret_or_a_password() {
    let config = Config::from_toml(BASE, Path::new("/")).unwrap();
    let raw: raw::RawConfig = toml::from_str(BASE).unwrap();
    for text in [
        format!("{config:?}"),
        format!("{raw:?}"),
        format!("{raw:#?}"),
        serde_json::to_string(&raw).unwrap(),
    ] {
        assert!(!text.contains("abc~DEF.secret-value-7f3"), "{text}");
        assert!(!text.contains("clear-password-42"), "{text}");
    }
    // The values are still there for the code that needs them.
    assert_eq!(
        raw.account[0].client_secret.as_ref().map(Secret::expose),
        Some("abc~DEF.secret-value-7f3")
    );
    assert_eq!(
        raw.user[0].password.as_ref().map(Secret::expose),
        Some("clear-password-42")
    );
}

#[test]
fn an_empty_or_blank_password_is_refused_by_key() {
    for empty in ["", " ", "\t  "] {
        let text = BASE.replace("clear-password-42", empty);
        let errors = errors_of(&text, Path::new("/"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "user[0].password");
        assert!(errors[0].message.contains("empty"), "{}", errors[0].message);
    }
    for empty in ["", "  "] {
        let text = BASE.replace("abc~DEF.secret-value-7f3", empty);
        let errors = errors_of(&text, Path::new("/"));
        assert_eq!(errors[0].path, "account[0].client_secret");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), " \n").unwrap();
    let text = BASE.replace(
        "client_secret = \"abc~DEF.secret-value-7f3\"",
        "client_secret_file = \"secret.txt\"",
    );
    let errors = errors_of(&text, dir.path());
    assert_eq!(errors[0].path, "account[0].client_secret_file");
    assert!(errors[0].message.contains("empty"), "{}", errors[0].message);
}

#[test]
fn argon2_parameters_beyond_the_bounds_are_refused_naming_the_user() {
    // What `hash-password` writes today must stay valid.
    let produced = crate::policy::hash_password(&Secret::new("pw")).unwrap();
    let default_params = "m=19456,t=2,p=1";
    assert!(produced.contains(default_params), "{produced}");
    let cases = [
        ("m=19456,t=2,p=1", true),
        ("m=65536,t=10,p=4", true),
        ("m=65536,t=3,p=4", true),
        ("m=65537,t=2,p=1", false),
        ("m=4194304,t=2,p=1", false),
        ("m=19456,t=11,p=1", false),
        ("m=19456,t=100000,p=1", false),
        ("m=19456,t=2,p=5", false),
    ];
    for (params, accepted) in cases {
        let phc = produced.replace(default_params, params);
        let text = BASE.replace(
            "password = \"clear-password-42\"",
            &format!("password_hash = \"{phc}\""),
        );
        match Config::from_toml(&text, Path::new("/")) {
            Ok(_) => assert!(accepted, "{params} should be refused"),
            Err(errors) => {
                assert!(!accepted, "{params} should pass: {errors}");
                let error = &errors.0[0];
                assert_eq!(error.path, "user[0].password_hash", "{params}");
                assert!(error.message.contains("\"printer\""), "{}", error.message);
            }
        }
    }
    let text = BASE.replace(
        "password = \"clear-password-42\"",
        "password_hash = \"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"",
    );
    let errors = errors_of(&text, Path::new("/"));
    assert_eq!(errors[0].path, "user[0].password_hash");
    assert!(
        errors[0].message.contains("argon2"),
        "{}",
        errors[0].message
    );
}

#[test]
fn host_bits_in_a_cidr_are_warned_about_with_the_network_meant() {
    let cases: [(&str, Option<&str>); 5] = [
        ("10.0.0.5/8", Some("10.0.0.0/8")),
        ("192.168.10.77/24", Some("192.168.10.0/24")),
        ("2001:db8::1/64", Some("2001:db8::/64")),
        ("10.0.0.0/8", None),
        ("10.0.0.5", None),
    ];
    for (cidr, meant) in cases {
        let text = BASE.replace("192.168.10.0/24", cidr);
        let config = Config::from_toml(&text, Path::new("/")).unwrap();
        let warning = config.warnings.iter().find(|w| w.contains("host bits"));
        match meant {
            Some(network) => {
                let warning = warning.unwrap_or_else(|| panic!("{cidr}: {:?}", config.warnings));
                assert!(warning.starts_with("network[0].cidr"), "{warning}");
                assert!(warning.contains(network), "{warning}");
            }
            None => assert!(warning.is_none(), "{cidr}: {warning:?}"),
        }
    }
}

#[test]
fn every_named_file_must_be_a_small_regular_file_and_the_error_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large.pem");
    std::fs::write(&large, vec![b'A'; 2 * 1024 * 1024]).unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let tls_listener = |certificate: &str, key: &str| {
        BASE.replace(
            "address = \"127.0.0.1:2525\"",
            &format!(
                "address = \"127.0.0.1:2525\"\ntls = \"starttls\"\ncertificate = \"{certificate}\"\nprivate_key = \"{key}\""
            ),
        )
    };
    let secret = "client_secret = \"abc~DEF.secret-value-7f3\"";
    let account = |line: &str| BASE.replace(secret, line);
    let large_text = large.display().to_string();
    let fifo_text = fifo.display().to_string();
    let cases = [
        (
            tls_listener("/dev/zero", &large_text),
            vec![
                ("listener[0].certificate", "character device"),
                ("listener[0].private_key", "larger than 1 MiB"),
            ],
        ),
        (
            tls_listener(&fifo_text, "/dev/zero"),
            vec![
                ("listener[0].certificate", "FIFO"),
                ("listener[0].private_key", "character device"),
            ],
        ),
        (
            account(&format!("{secret}\nca_file = \"large.pem\"")),
            vec![("account[0].ca_file", "larger than 1 MiB")],
        ),
        (
            account("client_secret_file = \"/dev/zero\""),
            vec![("account[0].client_secret_file", "character device")],
        ),
        (
            account("client_secret_file = \"fifo\""),
            vec![("account[0].client_secret_file", "FIFO")],
        ),
        (
            account("client_secret_file = \".\""),
            vec![("account[0].client_secret_file", "directory")],
        ),
        (
            account("client_certificate = \"/dev/zero\""),
            vec![("account[0].client_certificate", "character device")],
        ),
        (
            account("client_certificate = \"large.pem\""),
            vec![("account[0].client_certificate", "larger than 1 MiB")],
        ),
    ];
    for (text, expected) in cases {
        let errors = errors_of(&text, dir.path());
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(errors.len(), expected.len(), "{found:?}");
        for ((path, message), (key, needle)) in found.iter().zip(&expected) {
            assert_eq!(path, key, "{found:?}");
            assert!(message.contains(needle), "{key}: {message}");
        }
    }
}

#[test]
fn the_config_file_itself_is_read_bounded() {
    let errors = Config::load(Path::new("/dev/zero")).unwrap_err().0;
    assert!(
        errors[0].message.contains("character device"),
        "{}",
        errors[0].message
    );
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("relay.toml");
    let mut text = BASE.to_string();
    text.push_str(&"# padding\n".repeat(500_000));
    std::fs::write(&huge, text).unwrap();
    let errors = Config::load(&huge).unwrap_err().0;
    assert!(
        errors[0].message.contains("larger than 4 MiB"),
        "{}",
        errors[0].message
    );
}
