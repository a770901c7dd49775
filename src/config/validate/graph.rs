//! Validation of the Microsoft Graph keys of an `[[account]]` (issue 13): `transport` and
//! `graph_endpoint`; the rest of the account is checked in `accounts`.
//!
//! Invariants: an unknown `transport` is an error (the account is then treated as SMTP so
//! that the other checks still run); `graph_endpoint` is an `https://` base URL without a
//! path, kept without its trailing slash.

use super::*;
use crate::config::{CloudPreset, TransportKind};

/// `transport`: `"smtp"` (the default) or `"graph"`.
pub(super) fn transport_kind(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
) -> TransportKind {
    match raw.transport.as_deref().unwrap_or("smtp") {
        "smtp" => TransportKind::Smtp,
        "graph" => TransportKind::Graph,
        other => {
            checker.error(
                format!("{path}.transport"),
                format!("\"{other}\" must be \"smtp\" or \"graph\""),
            );
            TransportKind::Smtp
        }
    }
}

/// `graph_endpoint`: an `https://` base URL (default: the cloud's Graph root), without a
/// trailing slash or a path of its own; a warning when it is given for an SMTP account.
pub(super) fn graph_endpoint(
    checker: &mut Checker<'_>,
    path: &str,
    raw: &RawAccount,
    cloud: CloudPreset,
    transport: TransportKind,
) -> String {
    let Some(given) = &raw.graph_endpoint else {
        return cloud.graph_endpoint.to_string();
    };
    if transport == TransportKind::Smtp {
        checker.warnings.push(format!(
            "{path}.graph_endpoint is set but transport is \"smtp\": it is not used (add transport = \"graph\")"
        ));
    }
    let endpoint = given.trim_end_matches('/').to_string();
    let host = endpoint.strip_prefix("https://").unwrap_or_default();
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        checker.error(
            format!("{path}.graph_endpoint"),
            format!(
                "\"{given}\" must be an https:// base URL without a path, like {} (the relay adds /v1.0/users/…)",
                cloud.graph_endpoint
            ),
        );
    }
    endpoint
}
