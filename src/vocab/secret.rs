//! Secrets in memory: client secrets, passwords, access tokens.
//!
//! Invariant: a [`Secret`] never prints its value. `Debug` and `Display` show `[redacted]`,
//! it has no `Serialize`, and the only way to read it is [`Secret::expose`], which makes every
//! place that handles the clear value easy to find. It deserializes from a plain string, so a
//! config value becomes a `Secret` the moment it is parsed.

use std::fmt;

/// A string that must never reach a log line, an error message, a metric or the spool.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a clear value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The clear value. Call only where the value is sent to the party it belongs to.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Takes a string; a value of another type is refused without echoing it (serde's default
/// message would quote a number or a boolean, i.e. the secret).
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: serde::de::Error>() -> Result<Secret, E> {
        Err(E::custom(
            "a secret must be a string in quotes (value not shown)",
        ))
    }
}

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret(value))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Self::refuse()
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Self::refuse()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Self::refuse()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Self::refuse()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn deserializes_from_a_string_and_stays_redacted() {
        #[derive(Debug, serde::Deserialize)]
        struct Holder {
            password: Secret,
        }
        let holder: Holder = toml::from_str("password = \"hunter2\"").unwrap();
        assert_eq!(holder.password.expose(), "hunter2");
        assert!(!format!("{holder:?}").contains("hunter2"));
        // A secret written without quotes is refused without being quoted back.
        for value in ["98765432", "987.654", "true"] {
            let error = toml::from_str::<Holder>(&format!("password = {value}"))
                .unwrap_err()
                .message()
                .to_string();
            assert!(!error.contains(value), "{error}");
            assert!(error.contains("string"), "{error}");
        }
    }
}
