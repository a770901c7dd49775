//! Config tests for the Microsoft Graph transport (issue 13): `transport`, `graph_endpoint`
//! per cloud, the Graph token scope and the cap of 4 concurrent requests.

use super::*;

/// One account with `extra` keys, in an otherwise valid config.
fn config_with(extra: &str) -> String {
    format!(
        "[relay]\nhostname = \"relay.example.lan\"\nstate_dir = \"spool\"\n\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\n[[account]]\nname = \"m365\"\nmailbox = \"scanner@contoso.com\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret = \"abc~DEF.secret-value\"\n{extra}\n\n[[network]]\ncidr = \"192.168.10.0/24\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n"
    )
}

fn account(extra: &str) -> AccountSettings {
    let config = Config::from_toml(&config_with(extra), Path::new("/")).unwrap();
    config.accounts.into_iter().next().unwrap()
}

fn errors(extra: &str) -> Vec<ConfigError> {
    Config::from_toml(&config_with(extra), Path::new("/"))
        .unwrap_err()
        .0
}

#[test]
fn smtp_is_the_default_and_graph_takes_the_graph_scope_and_endpoint_of_its_cloud() {
    let smtp = account("");
    assert_eq!(smtp.transport, TransportKind::Smtp);
    assert_eq!(smtp.scope, DEFAULT_SCOPE);
    assert_eq!(smtp.max_connections, 3);
    // (cloud, graph_endpoint, scope)
    let cases = [
        (
            "global",
            "https://graph.microsoft.com",
            "https://graph.microsoft.com/.default",
        ),
        (
            "usgov-gcchigh",
            "https://graph.microsoft.us",
            "https://graph.microsoft.us/.default",
        ),
        (
            "usgov-dod",
            "https://dod-graph.microsoft.us",
            "https://dod-graph.microsoft.us/.default",
        ),
        (
            "china",
            "https://microsoftgraph.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
    ];
    for (cloud, endpoint, scope) in cases {
        let graph = account(&format!("transport = \"graph\"\ncloud = \"{cloud}\""));
        assert_eq!(graph.transport, TransportKind::Graph, "{cloud}");
        assert_eq!(graph.graph_endpoint, endpoint, "{cloud}");
        assert_eq!(graph.scope, scope, "{cloud}");
        assert_eq!(
            graph.max_connections, GRAPH_MAX_CONCURRENT_REQUESTS,
            "{cloud}"
        );
    }
}

#[test]
fn graph_endpoint_overrides_the_host_but_not_the_token_audience() {
    let graph = account("transport = \"graph\"\ngraph_endpoint = \"https://127.0.0.1:8443/\"");
    assert_eq!(graph.graph_endpoint, "https://127.0.0.1:8443");
    assert_eq!(graph.scope, "https://graph.microsoft.com/.default");
    // Two accounts of one app, one per transport, ask for different tokens.
    let smtp = account("");
    assert_ne!(
        crate::oauth::registry::ProviderKey::of(&graph.client_app()),
        crate::oauth::registry::ProviderKey::of(&smtp.client_app())
    );
}

#[test]
fn graph_allows_four_requests_at_once_and_never_more() {
    assert_eq!(
        account("transport = \"graph\"\nmax_connections = 2").max_connections,
        2
    );
    let config = Config::from_toml(
        &config_with("transport = \"graph\"\nmax_connections = 10"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(config.accounts[0].max_connections, 4);
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("4 concurrent requests")),
        "{:?}",
        config.warnings
    );
    // SMTP keeps its limit of 3 sessions.
    assert_eq!(
        errors("max_connections = 4")[0].path,
        "account[0].max_connections"
    );
}

#[test]
fn transport_and_graph_endpoint_errors_name_their_key() {
    let cases = [
        ("transport = \"ews\"", "account[0].transport"),
        (
            "transport = \"graph\"\ngraph_endpoint = \"http://graph.microsoft.com\"",
            "account[0].graph_endpoint",
        ),
        (
            "transport = \"graph\"\ngraph_endpoint = \"https://graph.microsoft.com/v1.0\"",
            "account[0].graph_endpoint",
        ),
    ];
    for (extra, path) in cases {
        let found = errors(extra);
        assert_eq!(found[0].path, path, "{extra}");
    }
}

#[test]
fn a_graph_endpoint_on_an_smtp_account_is_a_warning() {
    let config = Config::from_toml(
        &config_with("graph_endpoint = \"https://graph.microsoft.com\""),
        Path::new("/"),
    )
    .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("graph_endpoint is set but transport")),
        "{:?}",
        config.warnings
    );
}
