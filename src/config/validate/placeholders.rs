//! The values `relay.toml.example` ships as placeholders, refused with what to put instead:
//! an unedited example must not start a relay, and its sample password must never log in.
//!
//! Only the example's own markers are refused (the all-zero GUID, text starting with
//! `REPLACE-WITH`, the hash of "change-me" an older example shipped), never a value a real
//! tenant could hold.

/// The all-zero GUID: no Entra tenant or application has it.
const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// How the example marks a value to replace (`replace-with-the-secret-value`,
/// `$argon2id$REPLACE-WITH-OUTPUT-OF-hash-password`); compared case-insensitively.
const REPLACE_MARKER: &str = "replace-with";

/// The hash of the password "change-me" that relay.toml.example shipped until the example
/// used a placeholder: everyone who read the example knows the password.
const PUBLISHED_EXAMPLE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$DpLbegwJ5VPTCRm+xnPfRg$2/9Mc/K1pjWNEkfEaZdKqu4l8di2epmBrf75owKVr7w";

fn is_marked(text: &str) -> bool {
    text.trim()
        .trim_start_matches("$argon2id$")
        .to_ascii_lowercase()
        .starts_with(REPLACE_MARKER)
}

/// `tenant_id` left at the example's placeholder: what to put there instead.
pub(super) fn tenant_id(value: &str) -> Option<&'static str> {
    (value.trim() == NIL_GUID || is_marked(value)).then_some(
        "is the example's placeholder: put your Directory (tenant) ID GUID from the Entra admin center → Overview, or a verified domain such as contoso.onmicrosoft.com",
    )
}

/// `client_id` left at the example's placeholder: what to put there instead.
pub(super) fn client_id(value: &str) -> Option<&'static str> {
    (value.trim() == NIL_GUID || is_marked(value)).then_some(
        "is the example's placeholder: put the Application (client) ID GUID from the app registration's Overview page",
    )
}

/// A client secret left at the example's placeholder: what to put there instead.
pub(super) fn client_secret(value: &str) -> Option<&'static str> {
    is_marked(value).then_some(
        "is the example's placeholder: put the client secret's Value (app registration → Certificates & secrets → New client secret; its Value, not its ID), better in client_secret_file",
    )
}

/// A `password_hash` that is the example's placeholder or its published sample hash.
pub(super) fn password_hash(value: &str) -> Option<&'static str> {
    if is_marked(value) {
        Some(
            "is the example's placeholder: run `smtp-oauth-relay hash-password` and put the hash it prints here",
        )
    } else if value.trim() == PUBLISHED_EXAMPLE_HASH {
        Some(
            "is the sample hash of \"change-me\" published in relay.toml.example, so anyone could log in: run `smtp-oauth-relay hash-password` and put the hash it prints here",
        )
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// relay.toml.example with its placeholders filled in, the user's hash replaced by `hash`.
    fn example_with_hash(hash: &str) -> String {
        include_str!("../../../relay.toml.example")
            .replace(
                "tenant_id = \"00000000-0000-0000-0000-000000000000\"",
                "tenant_id = \"contoso.onmicrosoft.com\"",
            )
            .replace(
                "client_id = \"00000000-0000-0000-0000-000000000000\"",
                "client_id = \"3f2504e0-4f89-11d3-9a0c-0305e82c3301\"",
            )
            .replace("replace-with-the-secret-value", "abc~DEF.secret-value")
            .replace("$argon2id$REPLACE-WITH-OUTPUT-OF-hash-password", hash)
    }

    #[test]
    fn the_published_example_hash_never_loads_so_change_me_never_logs_in() {
        let path = std::path::Path::new("/");
        let published =
            crate::config::Config::from_toml(&example_with_hash(PUBLISHED_EXAMPLE_HASH), path)
                .unwrap_err();
        assert_eq!(published.0.len(), 1, "{published}");
        assert_eq!(published.0[0].path, "user[0].password_hash");
        assert!(
            published.0[0].message.contains("hash-password"),
            "{published}"
        );
        let own =
            crate::policy::hash_password(&crate::vocab::secret::Secret::new("s3cret")).unwrap();
        assert!(crate::config::Config::from_toml(&example_with_hash(&own), path).is_ok());
    }

    #[test]
    fn only_the_example_markers_are_placeholders() {
        type Check = fn(&str) -> Option<&'static str>;
        let cases: &[(Check, &str, bool)] = &[
            (tenant_id, "00000000-0000-0000-0000-000000000000", true),
            (tenant_id, "contoso.onmicrosoft.com", false),
            (tenant_id, "00000000-0000-0000-0000-000000000001", false),
            (client_id, "00000000-0000-0000-0000-000000000000", true),
            (client_id, "00000000-0000-0000-0000-000000000001", false),
            (client_id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", false),
            (client_secret, "replace-with-the-secret-value", true),
            (client_secret, "REPLACE-WITH-THE-SECRET-VALUE ", true),
            (client_secret, "abc~DEF.secret-value", false),
            (
                password_hash,
                "$argon2id$REPLACE-WITH-OUTPUT-OF-hash-password",
                true,
            ),
            (password_hash, PUBLISHED_EXAMPLE_HASH, true),
            (
                password_hash,
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
                false,
            ),
        ];
        for (check, value, refused) in cases {
            assert_eq!(check(value).is_some(), *refused, "{value}");
        }
    }
}
