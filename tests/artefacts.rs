//! The deployment artefacts (Docker, compose, systemd, Kubernetes) agree with the code: paths,
//! ports, user, signals, probe URLs, and their relay.toml files are valid configurations.
//! No Docker engine or cluster runs here, so this is what keeps them honest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use smtp_oauth_relay::cli::DEFAULT_CONFIG_PATH;
use smtp_oauth_relay::config::{Config, DEFAULT_STATE_DIR};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Validate a deployment's relay.toml, pointing its secret file at a real temporary file and
/// putting an application ID in place of its placeholder (refused as it stands).
fn validate(toml: &str, secret_path: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a~secret-value").unwrap();
    let placeholder = "client_id = \"00000000-0000-0000-0000-000000000000\"";
    assert!(toml.contains(placeholder), "the template marks client_id");
    let text = toml
        .replace(secret_path, &secret.display().to_string())
        .replace(
            placeholder,
            "client_id = \"3f2504e0-4f89-11d3-9a0c-0305e82c3301\"",
        );
    assert!(toml.contains(secret_path), "the config names {secret_path}");
    Config::from_toml(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn docker_image_and_compose_agree_with_the_code() {
    let dockerfile = read("docker/Dockerfile");
    let compose = read("docker/compose.yaml");
    let config = validate(
        &read("docker/relay.toml"),
        "/run/secrets/m365_client_secret",
    );

    assert!(dockerfile.contains("USER 65532:65532"), "non-root runtime");
    assert!(dockerfile.contains(&format!("VOLUME [\"{DEFAULT_STATE_DIR}\"]")));
    assert!(dockerfile.contains(&format!(
        "--chown=65532:65532 /out/state {DEFAULT_STATE_DIR}"
    )));
    assert!(dockerfile.contains(&format!(
        "ENV SMTP_OAUTH_RELAY_CONFIG={DEFAULT_CONFIG_PATH}"
    )));
    assert!(
        dockerfile.contains(r#"CMD ["/usr/local/bin/smtp-oauth-relay", "healthcheck"]"#),
        "HEALTHCHECK uses the binary"
    );
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"));
    assert!(dockerfile.contains("--locked"));

    assert_eq!(config.relay.state_dir, Path::new(DEFAULT_STATE_DIR));
    let smtp_port = config.listeners[0].address.port();
    let admin_port = config.admin.address.unwrap().port();
    assert!(dockerfile.contains(&format!("EXPOSE {smtp_port} {admin_port}")));
    assert!(compose.contains(&format!("\"25:{smtp_port}\"")));
    assert!(
        compose.contains(&format!("127.0.0.1:{admin_port}:{admin_port}")),
        "admin published on the host's loopback only"
    );
    assert!(compose.contains(&format!("./relay.toml:{DEFAULT_CONFIG_PATH}:ro")));
    assert!(compose.contains(&format!("spool:{DEFAULT_STATE_DIR}")));
    assert!(compose.contains("m365_client_secret:") && compose.contains("- m365_client_secret"));
    assert!(compose.contains("dockerfile: docker/Dockerfile"));
    // Docker's default soft limit of 1,024 descriptors is below max_connections' needs.
    assert!(compose.contains("nofile:\n        soft: 65536\n        hard: 65536"));
}

#[test]
fn systemd_unit_agrees_with_the_code() {
    let unit = read("deploy/systemd/smtp-oauth-relay.service");
    assert!(unit.contains(&format!(
        "ExecStart=/usr/local/bin/smtp-oauth-relay serve --config {DEFAULT_CONFIG_PATH}"
    )));
    assert!(unit.contains(&format!(
        "check --config-only --config {DEFAULT_CONFIG_PATH}"
    )));
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
    assert!(unit.contains("KillSignal=SIGTERM"));
    // systemd's default soft limit of 1,024 descriptors is below max_connections' needs.
    assert!(unit.contains("\nLimitNOFILE=65536\n"));
    // StateDirectory=X is /var/lib/X: the default spool location.
    assert_eq!(DEFAULT_STATE_DIR, "/var/lib/smtp-oauth-relay");
    assert!(unit.contains("StateDirectory=smtp-oauth-relay"));
    // The dynamic user cannot read a root-only file: the secret comes as a credential, at the
    // path the comment tells the admin to put in client_secret_file.
    assert!(unit.contains("LoadCredential=client-secret:/etc/smtp-oauth-relay/client-secret"));
    assert!(unit.contains(
        "client_secret_file = \"/run/credentials/smtp-oauth-relay.service/client-secret\""
    ));
    for hardening in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    // The stop timeout covers the 30 s DATA grace.
    let timeout: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(timeout > smtp_oauth_relay::cli::SHUTDOWN_GRACE.as_secs());
}

/// What every Kubernetes example must agree on; returns the manifest and its relay.toml.
fn kubernetes_manifest_agrees_with_the_code(path: &str) -> (String, Config) {
    let manifest = read(path);
    // The relay.toml embedded in the ConfigMap (an indented block literal).
    let start = manifest.find("relay.toml: |").unwrap();
    let embedded: String = manifest[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    let config = validate(&embedded, "/run/secrets/smtp-oauth-relay/client-secret");
    let smtp_port = config.listeners[0].address.port();
    let admin_port = config.admin.address.unwrap().port();
    assert!(
        !config.admin.address.unwrap().ip().is_loopback(),
        "probes come from the kubelet"
    );
    assert!(manifest.contains(&format!("containerPort: {smtp_port}")));
    assert!(manifest.contains(&format!("targetPort: {smtp_port}")));
    assert!(manifest.contains(&format!("containerPort: {admin_port}")));
    assert!(manifest.contains(&format!("path: /readyz\n              port: {admin_port}")));
    // A failing tenant makes /readyz fail, but mail must still be accepted and queued.
    assert!(manifest.contains("publishNotReadyAddresses: true"));
    assert!(manifest.contains(&format!("path: /healthz\n              port: {admin_port}")));
    assert!(manifest.contains(&format!("mountPath: {DEFAULT_STATE_DIR}")));
    assert!(manifest.contains("mountPath: /etc/smtp-oauth-relay"));
    assert!(manifest.contains(&format!("\"--config\", \"{DEFAULT_CONFIG_PATH}\"")));
    assert!(manifest.contains("mountPath: /run/secrets/smtp-oauth-relay"));
    assert!(manifest.contains("key: client-secret") || manifest.contains("client-secret: "));
    assert!(manifest.contains("runAsUser: 65532"), "the image's user");
    let grace: u64 = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(grace > smtp_oauth_relay::cli::SHUTDOWN_GRACE.as_secs());
    assert_eq!(config.relay.state_dir, Path::new(DEFAULT_STATE_DIR));
    (manifest, config)
}

#[test]
fn kubernetes_example_agrees_with_the_code() {
    let (manifest, config) =
        kubernetes_manifest_agrees_with_the_code("deploy/kubernetes/smtp-oauth-relay.yaml");
    assert!(manifest.contains("replicas: 1"), "one relay per spool");
    assert_eq!(config.relay.instances, 1);
}

#[test]
fn kubernetes_two_replica_example_agrees_with_the_code() {
    let (manifest, config) = kubernetes_manifest_agrees_with_the_code(
        "deploy/kubernetes/smtp-oauth-relay-two-replicas.yaml",
    );
    // Each replica takes half of every account's per-mailbox limits.
    assert!(manifest.contains("kind: StatefulSet\n") && manifest.contains("  replicas: 2\n"));
    assert_eq!(config.relay.instances, 2);
    let account = &config.accounts[0];
    assert_eq!(
        (account.max_connections, account.max_messages_per_minute),
        (1, 15)
    );
    // A spool volume per pod, never one shared by both.
    assert!(manifest.contains("volumeClaimTemplates:\n    - metadata:\n        name: spool"));
    assert!(!manifest.contains("persistentVolumeClaim:"));
    // Never both pods on one node, and at most one taken away at a time.
    assert!(manifest.contains(
        "podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            - labelSelector:\n                matchLabels:\n                  app: smtp-oauth-relay\n              topologyKey: kubernetes.io/hostname"
    ));
    assert!(manifest.contains(
        "kind: PodDisruptionBudget\nmetadata:\n  name: smtp-oauth-relay\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app: smtp-oauth-relay"
    ));
}
