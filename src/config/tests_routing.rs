//! Config tests for routing by sender (issue 14): `accounts`, `send_as`, `sender_name`, and
//! the accounts that cannot be told apart.

use super::*;

/// Three accounts (`invoices`, `alerts`, `shared`) and `{access}` as the keys of one network.
fn config_with(accounts_extra: [&str; 3], access: &str) -> String {
    let mut text = String::from(
        "[relay]\nhostname = \"relay.example.lan\"\nstate_dir = \"spool\"\n\n[[listener]]\naddress = \"127.0.0.1:2525\"\n",
    );
    for ((name, mailbox), extra) in [
        ("invoices", "invoices@contoso.com"),
        ("alerts", "alerts@contoso.com"),
        ("shared", "relay@contoso.com"),
    ]
    .iter()
    .zip(accounts_extra)
    {
        text.push_str(&format!(
            "\n[[account]]\nname = \"{name}\"\nmailbox = \"{mailbox}\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret = \"abc~DEF.secret-value\"\n{extra}\n"
        ));
    }
    text.push_str(&format!(
        "\n[[network]]\ncidr = \"192.168.10.0/24\"\nallowed_senders = [\"*@contoso.com\"]\n{access}\n"
    ));
    text
}

fn outcome(text: &str) -> Result<Config, Vec<String>> {
    Config::from_toml(text, Path::new("/etc/relay"))
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

fn network_grant(config: &Config) -> Arc<crate::policy::Grant> {
    config
        .policy
        .network_grant("192.168.10.7".parse().unwrap())
        .unwrap()
}

#[test]
fn accounts_name_the_routes_and_the_default() {
    // (access keys, the default account, the routes in order)
    let cases: [(&str, &str, &[&str]); 5] = [
        ("account = \"alerts\"", "alerts", &["alerts"]),
        (
            "accounts = [\"invoices\", \"alerts\"]",
            "invoices",
            &["invoices", "alerts"],
        ),
        (
            "account = \"alerts\"\naccounts = [\"invoices\", \"alerts\"]",
            "alerts",
            &["invoices", "alerts"],
        ),
        (
            "accounts = [\"*\"]",
            "invoices",
            &["invoices", "alerts", "shared"],
        ),
        (
            "account = \"shared\"\naccounts = [\"*\"]",
            "shared",
            &["invoices", "alerts", "shared"],
        ),
    ];
    for (access, default, routes) in cases {
        let config = outcome(&config_with(["", "", ""], access)).unwrap();
        let grant = network_grant(&config);
        assert_eq!(grant.account, default, "{access}");
        let names: Vec<&str> = grant.routes.iter().map(|r| r.account.as_str()).collect();
        assert_eq!(names, routes, "{access}");
    }
}

#[test]
fn send_as_and_sender_name_are_read() {
    let config = outcome(&config_with(
        [
            "send_as = [\"Billing@Contoso.com\", \"*@sales.contoso.com\"]\nsender_name = \"Contoso Rechnungen\"",
            "",
            "",
        ],
        "accounts = [\"invoices\", \"alerts\"]",
    ))
    .unwrap();
    let invoices = &config.accounts[0];
    assert_eq!(invoices.sender_name.as_deref(), Some("Contoso Rechnungen"));
    assert_eq!(
        format!("{:?}", invoices.send_as),
        "[billing@contoso.com, *@sales.contoso.com]"
    );
    let grant = network_grant(&config);
    assert_eq!(grant.sender_name.as_deref(), Some("Contoso Rechnungen"));
    let route = grant.routes.first().unwrap();
    assert!(route.may_send_as("billing@contoso.com"));
    assert!(route.may_send_as("anyone@SALES.contoso.com"));
    assert!(!route.may_send_as("alerts@contoso.com"));
}

#[test]
fn routing_errors_by_key_path() {
    // (accounts' extra keys, access keys, the error expected, by its start and a part of it)
    let cases: [([&str; 3], &str, &str, &str); 13] = [
        (
            ["", "", ""],
            "accounts = [\"invoices\", \"nope\"]",
            "network[0].accounts[1]",
            "no [[account]] named \"nope\"",
        ),
        (
            ["", "", ""],
            "accounts = [\"alerts\", \"alerts\"]",
            "network[0].accounts[1]",
            "listed twice",
        ),
        (
            ["", "", ""],
            "accounts = []",
            "network[0].accounts",
            "at least one account",
        ),
        (
            ["", "", ""],
            "accounts = [\"*\", \"alerts\"]",
            "network[0].accounts",
            "stands alone",
        ),
        (
            ["", "", ""],
            "account = \"shared\"\naccounts = [\"invoices\", \"alerts\"]",
            "network[0].account",
            "must also be in accounts",
        ),
        (
            ["", "", ""],
            "",
            "network[0].account",
            "is required (or accounts)",
        ),
        // Accounts that cannot be told apart: exact vs exact.
        (
            [
                "send_as = [\"info@contoso.com\"]",
                "send_as = [\"INFO@contoso.com\"]",
                "",
            ],
            "accounts = [\"invoices\", \"alerts\"]",
            "network[0].accounts",
            "accounts \"invoices\" and \"alerts\" may both send as <info@contoso.com>",
        ),
        // A mailbox inside another's send_as.
        (
            ["send_as = [\"alerts@contoso.com\"]", "", ""],
            "accounts = [\"invoices\", \"alerts\"]",
            "network[0].accounts",
            "accounts \"invoices\" and \"alerts\" may both send as <alerts@contoso.com>",
        ),
        // Exact vs *@domain.
        (
            [
                "send_as = [\"info@sales.contoso.com\"]",
                "send_as = [\"*@sales.contoso.com\"]",
                "",
            ],
            "accounts = [\"invoices\", \"alerts\"]",
            "network[0].accounts",
            "may both send as <info@sales.contoso.com> (matched by *@sales.contoso.com of \"alerts\")",
        ),
        // The same domain pattern, found with ["*"] too.
        (
            [
                "",
                "send_as = [\"*@sales.contoso.com\"]",
                "send_as = [\"*@Sales.Contoso.com\"]",
            ],
            "accounts = [\"*\"]",
            "network[0].accounts",
            "accounts \"alerts\" and \"shared\" may both send as every address of *@sales.contoso.com",
        ),
        // A *@domain pattern covering another account's mailbox.
        (
            ["send_as = [\"*@contoso.com\"]", "", ""],
            "accounts = [\"invoices\", \"alerts\"]",
            "network[0].accounts",
            "may both send as <alerts@contoso.com> (matched by *@contoso.com of \"invoices\")",
        ),
        (
            ["send_as = [\"*\"]", "", ""],
            "account = \"invoices\"",
            "account[0].send_as[0]",
            "must be an address",
        ),
        (
            ["sender_name = \"two\\nlines\"", "", ""],
            "account = \"invoices\"",
            "account[0].sender_name",
            "control characters",
        ),
    ];
    for (extra, access, path, part) in cases {
        let text = config_with(extra, access);
        let errors = outcome(&text).err().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(part)),
            "{access} / {extra:?}: expected {path}: …{part}…, got {errors:#?}"
        );
    }
}

#[test]
fn overlapping_accounts_are_fine_when_no_list_holds_both() {
    let text = config_with(
        [
            "send_as = [\"info@contoso.com\"]",
            "send_as = [\"info@contoso.com\"]",
            "",
        ],
        "account = \"invoices\"",
    );
    let mut text = text;
    text.push_str("\n[[network]]\ncidr = \"10.0.0.0/8\"\naccount = \"alerts\"\nallowed_senders = [\"*@contoso.com\"]\n");
    assert!(outcome(&text).is_ok());
}
