//! Validation of who may send: `[[user]]` (argon2 hash or a clear password, with a warning)
//! and `[[network]]` (CIDR), each bound to an existing account and its `allowed_senders`
//! patterns. Refuses what would make an open relay by accident, and says so by key path.
//!
//! `accounts` (routing by sender) lists several accounts, or `["*"]` for every account; the
//! default one is `account` when given (it must be in the list), else the first listed. Two
//! accounts of one list that may send as the same address (the same mailbox, or overlapping
//! `send_as` patterns) are an error: the relay could not tell which one a message takes.
//!
//! A `password_hash` may not ask for more argon2 work than the bounds of
//! [`crate::policy::password`] (64 MiB, 10 iterations, 4 lanes), checked here so the error names
//! the user.

use super::*;
use crate::policy::AccountRoute;

/// The configured accounts: their names in config order, and each valid one as a route.
pub(super) struct KnownAccounts {
    names: Vec<String>,
    routes: HashMap<String, Option<AccountRoute>>,
}

impl KnownAccounts {
    /// From the raw accounts (every name, valid or not) and the valid ones.
    pub(super) fn new(raw: &[RawAccount], valid: &[AccountSettings]) -> KnownAccounts {
        let names: Vec<String> = raw.iter().filter_map(|a| a.name.clone()).collect();
        let routes = names
            .iter()
            .map(|name| {
                let route = valid
                    .iter()
                    .find(|v| &v.name == name)
                    .map(|v| AccountRoute {
                        account: v.name.clone(),
                        mailbox: v.mailbox.clone(),
                        send_as: v.send_as.clone(),
                        sender_name: v.sender_name.clone(),
                    });
                (name.clone(), route)
            })
            .collect();
        KnownAccounts { names, routes }
    }

    fn contains(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }
}

fn senders(checker: &mut Checker<'_>, path: &str, raw: &Option<Vec<String>>) -> Vec<SenderPattern> {
    let Some(list) = raw.as_ref() else {
        checker.error(
            format!("{path}.allowed_senders"),
            "is required, e.g. [\"scanner@contoso.com\"] or [\"*@contoso.com\"]",
        );
        return Vec::new();
    };
    if list.is_empty() {
        checker.error(
            format!("{path}.allowed_senders"),
            "must list at least one sender pattern",
        );
    }
    list.iter()
        .enumerate()
        .filter_map(|(index, pattern)| {
            let parsed = SenderPattern::parse(pattern);
            if parsed.is_none() {
                checker.error(
                    format!("{path}.allowed_senders[{index}]"),
                    format!("\"{pattern}\" must be an address, *@domain, or * (no other wildcards: *@sub.domain for a subdomain)"),
                );
            }
            parsed
        })
        .collect()
}

fn account_reference(
    checker: &mut Checker<'_>,
    path: &str,
    accounts: &KnownAccounts,
    raw: &Option<String>,
) -> Option<String> {
    let account = raw.clone()?;
    if !accounts.contains(&account) {
        checker.error(
            format!("{path}.account"),
            format!("there is no [[account]] named \"{account}\""),
        );
    }
    Some(account)
}

/// The access rules shared by `[[user]]` and `[[network]]`.
fn access(
    checker: &mut Checker<'_>,
    path: &str,
    accounts: &KnownAccounts,
    raw: AccessKeys<'_>,
) -> Option<Access> {
    let account = account_reference(checker, path, accounts, raw.account);
    let listed = account_list(checker, path, accounts, raw.accounts);
    if account.is_none() && listed.is_none() {
        checker.error(format!("{path}.account"), "is required (or accounts)");
    }
    let allowed_senders = senders(checker, path, raw.allowed_senders);
    let sender_rewrite = match raw.sender_rewrite.as_deref() {
        None => SenderRewrite::Never,
        Some(value) => SenderRewrite::parse(value).unwrap_or_else(|| {
            checker.error(
                format!("{path}.sender_rewrite"),
                format!("\"{value}\" must be \"never\", \"when-not-allowed\" or \"always\""),
            );
            SenderRewrite::Never
        }),
    };
    let names = listed.unwrap_or_else(|| account.iter().cloned().collect());
    if let Some(default) = &account
        && !names.contains(default)
    {
        checker.error(
            format!("{path}.account"),
            format!("\"{default}\" (the default account) must also be in accounts"),
        );
    }
    let default = account.or_else(|| names.first().cloned())?;
    let routes: Vec<AccountRoute> = names
        .iter()
        .filter_map(|name| accounts.routes.get(name).cloned().flatten())
        .collect();
    indistinguishable_accounts(checker, path, &routes);
    let account_mailbox = accounts.routes.get(&default).cloned().flatten()?.mailbox;
    Some(Access {
        account: default,
        account_mailbox,
        allowed_senders,
        sender_rewrite,
        routes,
    })
}

/// The keys of a `[[user]]` or `[[network]]` that say what it may do.
struct AccessKeys<'a> {
    account: &'a Option<String>,
    accounts: &'a Option<Vec<String>>,
    allowed_senders: &'a Option<Vec<String>>,
    sender_rewrite: &'a Option<String>,
}

/// `accounts`: the names listed (`["*"]`: every account, in config order), each known and
/// listed once. `None` when the key is absent.
fn account_list(
    checker: &mut Checker<'_>,
    path: &str,
    accounts: &KnownAccounts,
    raw: &Option<Vec<String>>,
) -> Option<Vec<String>> {
    let list = raw.as_ref()?;
    if list.is_empty() {
        checker.error(
            format!("{path}.accounts"),
            "must name at least one account, or [\"*\"] for all",
        );
        return None;
    }
    if list.iter().any(|name| name == "*") {
        if list.len() > 1 {
            checker.error(
                format!("{path}.accounts"),
                "\"*\" (every account) stands alone: [\"*\"]",
            );
        }
        return Some(accounts.names.clone());
    }
    let mut names: Vec<String> = Vec::new();
    for (index, name) in list.iter().enumerate() {
        if !accounts.contains(name) {
            checker.error(
                format!("{path}.accounts[{index}]"),
                format!("there is no [[account]] named \"{name}\""),
            );
        } else if names.contains(name) {
            checker.error(
                format!("{path}.accounts[{index}]"),
                format!("\"{name}\" is listed twice"),
            );
        } else {
            names.push(name.clone());
        }
    }
    Some(names)
}

/// An error for every pair of `routes` that may send as the same address: the relay picks
/// the account by sender, so such a pair cannot be told apart.
fn indistinguishable_accounts(checker: &mut Checker<'_>, path: &str, routes: &[AccountRoute]) {
    for (index, first) in routes.iter().enumerate() {
        for second in routes.iter().skip(index + 1) {
            if let Some(shared) = shared_sender(first, second) {
                checker.error(
                    format!("{path}.accounts"),
                    format!(
                        "accounts \"{}\" and \"{}\" may both send as {shared}, so the relay cannot tell which one a message from it takes; keep the address in one account's mailbox/send_as only, or list the two accounts for different users or networks",
                        first.account, second.account
                    ),
                );
            }
        }
    }
}

/// What two accounts may both send as (mailboxes count as exact addresses), described for
/// the admin; `None` when nothing.
pub(super) fn shared_sender(first: &AccountRoute, second: &AccountRoute) -> Option<String> {
    let patterns = |route: &AccountRoute| {
        let mailbox = SenderPattern::Exact(route.mailbox.as_str().to_lowercase());
        std::iter::once(mailbox)
            .chain(route.send_as.iter().cloned())
            .collect::<Vec<_>>()
    };
    let (ours, theirs) = (patterns(first), patterns(second));
    ours.iter().find_map(|a| {
        theirs.iter().find_map(|b| match (a, b) {
            (SenderPattern::Exact(x), SenderPattern::Exact(y)) if x == y => Some(format!("<{x}>")),
            (SenderPattern::Exact(x), SenderPattern::Domain(_)) if b.matches(x) => Some(format!(
                "<{x}> (matched by {b:?} of \"{}\")",
                second.account
            )),
            (SenderPattern::Domain(_), SenderPattern::Exact(y)) if a.matches(y) => {
                Some(format!("<{y}> (matched by {a:?} of \"{}\")", first.account))
            }
            (SenderPattern::Domain(x), SenderPattern::Domain(y)) if x == y => {
                Some(format!("every address of {a:?}"))
            }
            (SenderPattern::Any, _) | (_, SenderPattern::Any) => Some("any address".into()),
            _ => None,
        })
    })
}

pub(super) fn user(
    checker: &mut Checker<'_>,
    policy: &mut Policy,
    accounts: &KnownAccounts,
    usernames: &mut HashSet<String>,
    index: usize,
    raw: &RawUser,
) {
    let path = format!("user[{index}]");
    let username = checker.required(&format!("{path}.username"), &raw.username);
    if let Some(name) = &username
        && (name.is_empty() || !usernames.insert(name.to_lowercase()))
    {
        checker.error(
            format!("{path}.username"),
            format!("\"{name}\" is empty or used by another user"),
        );
    }
    let placeholder = raw
        .password_hash
        .as_deref()
        .and_then(super::placeholders::password_hash);
    let credential = match (&raw.password_hash, &raw.password, placeholder) {
        (Some(_), None, Some(fix)) => {
            checker.error(format!("{path}.password_hash"), fix);
            None
        }
        (Some(hash), None, None) => match crate::policy::password::hash_parameters_acceptable(hash)
        {
            Ok(()) => Some(Credential::Hash(hash.clone())),
            Err(problem) => {
                let who = username.as_deref().unwrap_or("?");
                checker.error(
                    format!("{path}.password_hash"),
                    format!("user \"{who}\": {problem}"),
                );
                None
            }
        },
        (None, Some(password), _) if password.expose().trim().is_empty() => {
            checker.error(
                format!("{path}.password"),
                "is empty: anyone could log in as this user; set a password (better: password_hash from `smtp-oauth-relay hash-password`)",
            );
            None
        }
        (None, Some(password), _) => {
            checker.warnings.push(format!(
                "{path}: the password is stored in clear in the config; use password_hash from `smtp-oauth-relay hash-password`"
            ));
            Some(Credential::Clear(password.clone()))
        }
        (Some(_), Some(_), _) => {
            checker.error(
                format!("{path}.password"),
                "give password_hash or password, not both",
            );
            None
        }
        (None, None, _) => {
            checker.error(
                format!("{path}.password_hash"),
                "is required (from `smtp-oauth-relay hash-password`)",
            );
            None
        }
    };
    let access = access(
        checker,
        &path,
        accounts,
        AccessKeys {
            account: &raw.account,
            accounts: &raw.accounts,
            allowed_senders: &raw.allowed_senders,
            sender_rewrite: &raw.sender_rewrite,
        },
    );
    if let (Some(username), Some(credential), Some(access)) = (username, credential, access)
        && let Err(e) = policy.add_user(&username, credential, access)
    {
        checker.error(format!("{path}.password_hash"), e.to_string());
    }
}

pub(super) fn network(
    checker: &mut Checker<'_>,
    policy: &mut Policy,
    accounts: &KnownAccounts,
    index: usize,
    raw: &RawNetwork,
) {
    let path = format!("network[{index}]");
    let cidr = checker
        .required(&format!("{path}.cidr"), &raw.cidr)
        .and_then(|text| {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net),
                Err(_) => {
                    checker.error(
                        format!("{path}.cidr"),
                        format!("\"{text}\" is not a network like \"192.168.10.0/24\""),
                    );
                    None
                }
            }
        });
    if let Some(net) = cidr
        && net != net.trunc()
    {
        let text = raw.cidr.as_deref().unwrap_or_default();
        checker.warnings.push(format!(
            "{path}.cidr = \"{text}\" has host bits set: it means the whole network {} ({} to {}); write \"{}\" to say so, or a /{} for the one address",
            net.trunc(),
            net.network(),
            net.broadcast(),
            net.trunc(),
            net.max_prefix_len()
        ));
    }
    if let Some(net) = cidr
        && net.prefix_len() == 0
    {
        checker.warnings.push(format!(
            "{path}.cidr = {net}: every address on the internet is trusted; this is an open relay if the listener is reachable"
        ));
    }
    let access = access(
        checker,
        &path,
        accounts,
        AccessKeys {
            account: &raw.account,
            accounts: &raw.accounts,
            allowed_senders: &raw.allowed_senders,
            sender_rewrite: &raw.sender_rewrite,
        },
    );
    if let (Some(net), Some(access)) = (cidr, access) {
        policy.add_network(net, access);
    }
}
