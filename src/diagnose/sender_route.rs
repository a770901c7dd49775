//! `check --from ADDR`: which account the relay would choose for a sender (its mailbox or a
//! `send_as` entry, the same rule as delivery's routing), then every step of that account
//! with the probe `MAIL FROM:<ADDR>`.
//!
//! Invariant: the route step only reads the config; the steps after it are the account's
//! ordinary `check` steps, so the two commands never disagree about an account.

use crate::config::AccountSettings;
use crate::vocab::address::Address;

use super::{AccountReport, Step, check_account_as};

/// The accounts that may send as `sender` (its mailbox, or a `send_as` pattern), in config
/// order, each with what matched. Validation allows several only when no user or network
/// lists two of them.
pub fn accounts_for_sender<'a>(
    accounts: &'a [AccountSettings],
    sender: &Address,
) -> Vec<(&'a AccountSettings, String)> {
    accounts
        .iter()
        .filter_map(|account| {
            if account.mailbox.eq_ignore_case(sender.as_str()) {
                return Some((account, "its mailbox".to_string()));
            }
            account
                .send_as
                .iter()
                .find(|pattern| pattern.matches(sender.as_str()))
                .map(|pattern| (account, format!("its send_as entry {pattern:?}")))
        })
        .collect()
}

/// `check --from ADDR`: the account the relay would choose for `sender` (or the one named
/// with `--account`), then every step of that account with the probe `MAIL FROM:<sender>`.
/// A report without steps beyond the first when no account may send as `sender`.
pub async fn check_sender(
    accounts: &[AccountSettings],
    only: Option<&str>,
    sender: &Address,
    hostname: &str,
) -> Option<AccountReport> {
    let candidates = accounts_for_sender(accounts, sender);
    let named = match only {
        Some(name) => Some(accounts.iter().find(|a| a.name == name)?),
        None => None,
    };
    let chosen = named.or_else(|| candidates.first().map(|(account, _)| *account));
    let route = match (chosen, &candidates[..]) {
        (None, _) => {
            let step = Step::failed(
                "sender route",
                format!(
                    "no [[account]] may send as <{sender}>: it is no account's mailbox and in no send_as"
                ),
                vec![format!(
                    "add \"{sender}\" to send_as of the account whose mailbox has SendAs on it (Exchange: Add-RecipientPermission -Identity {sender} -Trustee <that mailbox> -AccessRights SendAs; Gmail: a \"Send mail as\" address of that mailbox), and list that account in accounts of the users or networks that send as it"
                )],
            );
            return Some(AccountReport {
                account: String::new(),
                provider: "",
                mailbox: String::new(),
                smtp_server: String::new(),
                ok: false,
                steps: vec![step],
            });
        }
        (Some(account), candidates) => {
            match candidates.iter().find(|(a, _)| a.name == account.name) {
                Some((_, matched)) => {
                    let others: Vec<&str> = candidates
                        .iter()
                        .filter(|(a, _)| a.name != account.name)
                        .map(|(a, _)| a.name.as_str())
                        .collect();
                    let mut detail = format!(
                        "<{sender}> goes out through account \"{}\" (mailbox {}), by {matched}, for a user or network that lists it",
                        account.name, account.mailbox
                    );
                    if !others.is_empty() {
                        detail.push_str(&format!(
                            "; also possible through {} for the users or networks that list those instead (--account NAME checks one)",
                            others.join(", ")
                        ));
                    }
                    Step::ok("sender route", detail)
                }
                None => Step::failed(
                    "sender route",
                    format!(
                        "account \"{}\" may not send as <{sender}>: it is not its mailbox and not in its send_as, so the relay would not choose it",
                        account.name
                    ),
                    vec![format!(
                        "add \"{sender}\" to send_as of account \"{}\" once its mailbox {} has SendAs on it: Add-RecipientPermission -Identity {sender} -Trustee {} -AccessRights SendAs",
                        account.name, account.mailbox, account.mailbox
                    )],
                ),
            }
        }
    };
    let account = chosen?;
    let mut report = check_account_as(account, hostname, Some(sender)).await;
    report.ok &= route.status != "failed";
    report.steps.insert(0, route);
    Some(report)
}
