//! Which cloud an account sends through (`provider` in `[[account]]`): Microsoft (Entra and
//! Exchange Online, the default) or Google (a Workspace service account and Gmail). The
//! config parses it; the token provider, the SMTP reply catalogue and `check` choose their
//! rules by it. Nothing on the inbound side, in the spool or in the queue looks at it.

/// The cloud behind an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Microsoft Entra ID tokens, Exchange Online SMTP (`provider = "microsoft"`).
    #[default]
    Microsoft,
    /// A Google Cloud service account with domain-wide delegation, Gmail SMTP
    /// (`provider = "google"`).
    Google,
}

impl Provider {
    /// The config value (`"microsoft"` or `"google"`).
    pub fn name(self) -> &'static str {
        match self {
            Provider::Microsoft => "microsoft",
            Provider::Google => "google",
        }
    }

    /// The provider a config value names, if any.
    pub fn parse(text: &str) -> Option<Provider> {
        match text {
            "microsoft" => Some(Provider::Microsoft),
            "google" => Some(Provider::Google),
            _ => None,
        }
    }

    /// The mail service, in log lines and verdicts ("Exchange Online", "Gmail").
    pub fn mail_service(self) -> &'static str {
        match self {
            Provider::Microsoft => "Exchange Online",
            Provider::Google => "Gmail",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for provider in [Provider::Microsoft, Provider::Google] {
            assert_eq!(Provider::parse(provider.name()), Some(provider));
        }
        for other in ["Google", "gmail", "", "azure"] {
            assert_eq!(Provider::parse(other), None, "{other}");
        }
        assert_eq!(Provider::default(), Provider::Microsoft);
    }
}
