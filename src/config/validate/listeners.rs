//! `[[listener]]`: each listener's address, TLS mode and certificate, AUTH without TLS, and
//! when DATA is acknowledged; and the check that no two listeners collide.
//!
//! Invariants: a listener that offers TLS has a certificate and key that load and match; two
//! listeners never claim the same socket (including `0.0.0.0`/`[::]` overlaps), since the
//! second could not bind; a listener with an error is left out of the result, its errors
//! reported.

use std::net::SocketAddr;
use std::time::Duration;

use super::Checker;
use crate::config::ListenerSettings;
use crate::config::raw::{RawConfig, RawListener};
use crate::vocab::tls_mode::TlsMode;

/// Every valid listener, in configuration order, with an error for each one that overlaps an
/// earlier one.
pub(super) fn listeners(checker: &mut Checker<'_>, raw: &RawConfig) -> Vec<ListenerSettings> {
    if raw.listener.is_empty() {
        checker.error("listener", "at least one [[listener]] is required");
    }
    let listeners: Vec<ListenerSettings> = raw
        .listener
        .iter()
        .enumerate()
        .filter_map(|(index, listener)| self::listener(checker, index, listener))
        .collect();
    for (index, listener) in listeners.iter().enumerate() {
        if let Some(other) = listeners
            .get(..index)
            .unwrap_or_default()
            .iter()
            .position(|earlier| same_socket(earlier.address, listener.address))
        {
            checker.error(
                format!("listener[{index}].address"),
                format!(
                    "{} overlaps listener[{other}] ({}): the second cannot bind",
                    listener.address,
                    listeners
                        .get(other)
                        .map_or(String::new(), |l| l.address.to_string())
                ),
            );
        }
    }
    listeners
}

fn listener(
    checker: &mut Checker<'_>,
    index: usize,
    raw: &RawListener,
) -> Option<ListenerSettings> {
    let path = format!("listener[{index}]");
    let address = checker
        .required(&format!("{path}.address"), &raw.address)
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                checker.error(
                    format!("{path}.address"),
                    format!("\"{text}\" is not an IP:port like \"127.0.0.1:2525\" or \"[::]:587\""),
                );
                None
            }
        });
    let tls = match raw.tls.as_deref().unwrap_or("none") {
        "none" => Some(TlsMode::None),
        "starttls" => Some(TlsMode::Starttls),
        "implicit" => Some(TlsMode::Implicit),
        other => {
            checker.error(
                format!("{path}.tls"),
                format!("\"{other}\" must be \"none\", \"starttls\" or \"implicit\""),
            );
            None
        }
    };
    let mut tls_config = None;
    if matches!(tls, Some(TlsMode::Starttls | TlsMode::Implicit)) {
        let certificate = checker.required(&format!("{path}.certificate"), &raw.certificate);
        let private_key = checker.required(&format!("{path}.private_key"), &raw.private_key);
        let chain = certificate.and_then(|file| {
            crate::tls::load_certificates(&checker.resolve(&file))
                .map_err(|e| checker.error(format!("{path}.certificate"), e))
                .ok()
        });
        let key = private_key.and_then(|file| {
            crate::tls::load_private_key(&checker.resolve(&file))
                .map_err(|e| checker.error(format!("{path}.private_key"), e))
                .ok()
        });
        if let (Some(chain), Some(key)) = (chain, key) {
            match crate::tls::server_config_from(chain, key) {
                Ok(config) => tls_config = Some(config),
                Err(e) => checker.error(format!("{path}.private_key"), e),
            }
        }
    }
    let allow_auth_without_tls = raw.allow_auth_without_tls.unwrap_or(false);
    if let (Some(address), Some(TlsMode::None)) = (address, tls)
        && allow_auth_without_tls
        && !address.ip().is_loopback()
    {
        checker.warnings.push(format!(
            "{path}: passwords will cross the network in clear on {address} (allow_auth_without_tls = true)"
        ));
    }
    let timeout = raw.acknowledge_timeout.unwrap_or(Duration::from_secs(30));
    let acknowledge_delivered = match raw.acknowledge.as_deref().unwrap_or("queued") {
        "queued" => None,
        "delivered" => Some(timeout),
        other => {
            checker.error(
                format!("{path}.acknowledge"),
                format!("\"{other}\" must be \"queued\" or \"delivered\""),
            );
            None
        }
    };
    if timeout > Duration::from_secs(5 * 60) {
        checker.error(
            format!("{path}.acknowledge_timeout"),
            "must be at most 5m (clients give up on DATA replies after 10 minutes)",
        );
    }
    Some(ListenerSettings {
        acknowledge_delivered,
        address: address?,
        tls: tls?,
        tls_config,
        certificate: raw.certificate.as_ref().map(|p| checker.resolve(p)),
        private_key: raw.private_key.as_ref().map(|p| checker.resolve(p)),
        allow_auth_without_tls,
    })
}

/// True when two bind addresses would collide: the same port, and the same IP, or one of
/// them the unspecified address of the same family (0.0.0.0 or ::), or `[::]` (dual-stack on
/// Linux, so it takes the IPv4 port too) with any address. Port 0 never collides.
pub(super) fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let v6_any = |s: SocketAddr| s.is_ipv6() && s.ip().is_unspecified();
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || v6_any(a)
            || v6_any(b)
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

#[cfg(test)]
mod tests {
    use super::same_socket;

    #[test]
    fn colliding_bind_addresses() {
        let cases = [
            ("127.0.0.1:25", "127.0.0.1:25", true),
            ("0.0.0.0:25", "127.0.0.1:25", true),
            ("[::]:25", "0.0.0.0:25", true),
            ("[::]:25", "127.0.0.1:25", true),
            ("[::1]:25", "127.0.0.1:25", false),
            ("127.0.0.1:25", "127.0.0.2:25", false),
            ("0.0.0.0:25", "0.0.0.0:587", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
        ];
        for (a, b, collide) in cases {
            assert_eq!(
                same_socket(a.parse().unwrap(), b.parse().unwrap()),
                collide,
                "{a} {b}"
            );
        }
    }
}
