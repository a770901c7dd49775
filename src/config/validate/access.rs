//! Validation of who may send: `[[user]]` (argon2 hash or a clear password, with a warning)
//! and `[[network]]` (CIDR), each bound to an existing account and its `allowed_senders`
//! patterns. Refuses what would make an open relay by accident, and says so by key path.
//!
//! A `password_hash` may not ask for more argon2 work than the bounds of
//! [`crate::policy::password`] (64 MiB, 10 iterations, 4 lanes), checked here so the error names
//! the user.

use super::*;

fn senders(checker: &mut Checker<'_>, path: &str, raw: &Option<Vec<String>>) -> Vec<SenderPattern> {
    let Some(list) = raw else {
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
    accounts: &HashMap<String, Option<Address>>,
    raw: &Option<String>,
) -> Option<String> {
    let account = checker.required(&format!("{path}.account"), raw)?;
    if !accounts.contains_key(&account) {
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
    accounts: &HashMap<String, Option<Address>>,
    account: &Option<String>,
    allowed_senders: &Option<Vec<String>>,
    sender_rewrite: &Option<String>,
) -> Option<Access> {
    let account = account_reference(checker, path, accounts, account);
    let allowed_senders = senders(checker, path, allowed_senders);
    let sender_rewrite = match sender_rewrite.as_deref() {
        None => SenderRewrite::Never,
        Some(value) => SenderRewrite::parse(value).unwrap_or_else(|| {
            checker.error(
                format!("{path}.sender_rewrite"),
                format!("\"{value}\" must be \"never\", \"when-not-allowed\" or \"always\""),
            );
            SenderRewrite::Never
        }),
    };
    let account = account?;
    let account_mailbox = accounts.get(&account).cloned().flatten()?;
    Some(Access {
        account,
        account_mailbox,
        allowed_senders,
        sender_rewrite,
    })
}

pub(super) fn user(
    checker: &mut Checker<'_>,
    policy: &mut Policy,
    accounts: &HashMap<String, Option<Address>>,
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
        &raw.account,
        &raw.allowed_senders,
        &raw.sender_rewrite,
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
    accounts: &HashMap<String, Option<Address>>,
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
        &raw.account,
        &raw.allowed_senders,
        &raw.sender_rewrite,
    );
    if let (Some(net), Some(access)) = (cidr, access) {
        policy.add_network(net, access);
    }
}
