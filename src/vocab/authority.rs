//! `host[:port]` as it appears in an HTTP `Host` header, an origin, or the `[admin]
//! allowed_hosts` setting: parsed once into a canonical form (lower-case names without a
//! trailing dot, IPv4-mapped IPv6 made plain IPv4) so comparisons are exact. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The port HTTP means when a `Host` or origin names none.
pub const HTTP_DEFAULT_PORT: u16 = 80;

/// The host part of an HTTP authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// An IPv4 literal or a bracketed IPv6 literal (IPv4-mapped IPv6 made plain IPv4).
    Ip(IpAddr),
    /// A DNS name, lowercased, without a trailing dot.
    Name(String),
}

/// `host[:port]` as in a `Host` header, an origin or `[admin] allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: HostName,
    pub port: Option<u16>,
}

impl Authority {
    /// Parse `name`, `name:port`, `1.2.3.4[:port]` or `[v6][:port]`; `None` for anything else
    /// (user info, an unbracketed IPv6 address, characters no host name has, a bad port).
    pub fn parse(text: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inside.parse().ok()?;
            let port = match after {
                "" => None,
                after => Some(parse_port(after.strip_prefix(':')?)?),
            };
            (HostName::Ip(IpAddr::V6(ip).to_canonical()), port)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(parse_port(port)?)),
                None => (text, None),
            };
            let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
                HostName::Ip(IpAddr::V4(ip))
            } else {
                HostName::Name(dns_name(host)?)
            };
            (host, port)
        };
        Some(Authority { host, port })
    }

    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(HTTP_DEFAULT_PORT)
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A lowercased DNS name without its trailing dot; `None` if it is not one.
fn dns_name(text: &str) -> Option<String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}
