//! `[relay] instances`: validated, then applied to every account in this one place, so that
//! everything downstream (the worker count, the pacer, the 432 session share, the recipient
//! budget, a reload) runs on this instance's share without knowing about instances.
//!
//! Invariant: after [`apply_share`], each account's `max_connections`,
//! `max_messages_per_minute` and `max_recipients_per_day` are `mailbox_budget.share(instances)`.

use super::{AccountSettings, Checker, RawConfig};
use crate::config::instances::MAX_INSTANCES;

/// `relay.instances` (default 1), or 1 after reporting an error.
pub(super) fn instances(checker: &mut Checker<'_>, raw: &RawConfig) -> usize {
    let instances = raw.relay.instances.unwrap_or(1);
    if (1..=MAX_INSTANCES).contains(&instances) {
        instances
    } else {
        checker.error(
            "relay.instances",
            format!(
                "must be between 1 and {MAX_INSTANCES}: each instance needs at least one of the 3 sessions Exchange Online allows per mailbox"
            ),
        );
        1
    }
}

/// Replace each account's limits by this instance's share of them; warn where the share had
/// to be rounded up to one, so that the instances together exceed what the account allows.
pub(super) fn apply_share(
    checker: &mut Checker<'_>,
    instances: usize,
    accounts: &mut [AccountSettings],
) {
    for (index, account) in accounts.iter_mut().enumerate() {
        let whole = account.mailbox_budget;
        let share = whole.share(instances);
        let path = format!("account[{index}]");
        if share.sessions * instances > whole.sessions {
            checker.warnings.push(format!(
                "{path}.max_connections = {}: with relay.instances = {instances} each instance still needs one session, so together they may open {}",
                whole.sessions,
                share.sessions * instances
            ));
        }
        let messages = u64::from(share.messages_per_minute) * instances as u64;
        if messages > u64::from(whole.messages_per_minute) {
            checker.warnings.push(format!(
                "{path}.max_messages_per_minute = {}: with relay.instances = {instances} each instance still sends one a minute, so together up to {messages}",
                whole.messages_per_minute
            ));
        }
        account.max_connections = share.sessions;
        account.max_messages_per_minute = share.messages_per_minute;
        account.max_recipients_per_day = share.recipients_per_day;
        account.max_messages_per_day = share.messages_per_day;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::instances::MailboxBudget;

    fn config(relay: &str, account: &str) -> String {
        format!(
            r#"
[relay]
hostname = "relay.example.lan"
state_dir = "spool"
{relay}

[[listener]]
address = "127.0.0.1:2525"

[[account]]
name = "m365"
mailbox = "scanner@contoso.com"
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = "abc~DEF.secret-value"
{account}

[[network]]
cidr = "127.0.0.0/8"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#
        )
    }

    #[test]
    fn one_instance_by_default_uses_the_whole_budget() {
        let config = Config::from_toml(&config("", ""), Path::new("/")).unwrap();
        assert_eq!(config.relay.instances, 1);
        let account = &config.accounts[0];
        assert_eq!(
            (
                account.max_connections,
                account.max_messages_per_minute,
                account.max_recipients_per_day
            ),
            (3, 30, 10_000)
        );
        assert_eq!(
            account.mailbox_budget,
            MailboxBudget {
                sessions: 3,
                messages_per_minute: 30,
                recipients_per_day: 10_000,
                messages_per_day: 0
            }
        );
    }

    #[test]
    fn each_account_runs_on_its_share_and_keeps_the_whole_for_display() {
        let text = config(
            "instances = 2",
            "max_connections = 2\nmax_messages_per_minute = 6\nmax_recipients_per_day = 1000",
        );
        let config = Config::from_toml(&text, Path::new("/")).unwrap();
        assert_eq!(config.relay.instances, 2);
        let account = &config.accounts[0];
        assert_eq!(
            (
                account.max_connections,
                account.max_messages_per_minute,
                account.max_recipients_per_day
            ),
            (1, 3, 500)
        );
        assert_eq!(
            account.mailbox_budget,
            MailboxBudget {
                sessions: 2,
                messages_per_minute: 6,
                recipients_per_day: 1000,
                messages_per_day: 0
            }
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn instances_outside_one_to_three_are_refused_by_key_path() {
        for value in ["0", "4", "100"] {
            let text = config(&format!("instances = {value}"), "");
            let errors = Config::from_toml(&text, Path::new("/")).unwrap_err().0;
            assert_eq!(errors.len(), 1, "{value}: {errors:?}");
            assert_eq!(errors[0].path, "relay.instances", "{value}");
        }
    }

    #[test]
    fn a_share_rounded_up_to_one_is_warned_about() {
        let text = config(
            "instances = 3",
            "max_connections = 2\nmax_messages_per_minute = 2",
        );
        let config = Config::from_toml(&text, Path::new("/")).unwrap();
        let account = &config.accounts[0];
        assert_eq!(
            (account.max_connections, account.max_messages_per_minute),
            (1, 1)
        );
        for key in ["max_connections = 2", "max_messages_per_minute = 2"] {
            assert!(
                config
                    .warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("account[0].{key}"))),
                "{key}: {:?}",
                config.warnings
            );
        }
    }
}
