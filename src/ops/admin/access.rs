//! Who may ask the admin endpoint what: the `Host`, `Origin` and bearer-token rules (pure, no
//! I/O, table-tested).
//!
//! - **Host** (every route, `/healthz` and `/metrics` included): a browser on the relay's host
//!   can be made to send requests here under a name an attacker controls (DNS rebinding); such
//!   a request names the attacker's host in `Host`. A request is answered only when its `Host`
//!   (and the authority of an absolute request target) is the endpoint's own address: its IP
//!   with its port (any IP literal with its port when it listens on `0.0.0.0` / `[::]`, which is
//!   what kubelet probes and Prometheus send when they connect to a pod or target by IP),
//!   `localhost` with its port when it listens on loopback or on every address, or an entry of
//!   `[admin] allowed_hosts` (`name` for any port, `name:port` for that port). A request
//!   without `Host` (HTTP/1.0 scripts) is answered: browsers always send one.
//! - **Origin** (state-changing methods only: anything but GET, HEAD and OPTIONS): a request a
//!   web page sends on its own (CSRF) carries its page's `Origin`. When present it must be the
//!   same origin as the request (`http://` + the request's `Host`); `null` or any other origin is
//!   refused.
//! - **Token** (`[admin] token_file`): when set, every queue API request must carry
//!   `Authorization: Bearer <token>`, whatever its address. It is compared in constant time (of
//!   SHA-256 digests, so its length leaks nothing either) and never logged or echoed.
//!
//! Invariant: every refusal is a [`Refusal`] with a 4xx status and a plain-text reason that
//! names neither the token nor anything else secret.

use std::net::SocketAddr;

use hyper::http::HeaderValue;
use hyper::{HeaderMap, Method, StatusCode};
use subtle::ConstantTimeEq;

use crate::vocab::authority::{Authority, HostName};
use crate::vocab::secret::Secret;

/// A request the endpoint does not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }
}

/// The rules for one bound endpoint. Rebuilt on configuration reload.
pub struct AdminAccess {
    /// The address the endpoint is bound to (its real port, even when configured as `:0`).
    bound: SocketAddr,
    allowed_hosts: Vec<Authority>,
    /// SHA-256 of the token, when `token_file` is set.
    token_digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("bound", &self.bound)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("token", &self.token_digest.map(|_| "[redacted]"))
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl AdminAccess {
    pub fn new(bound: SocketAddr, allowed_hosts: Vec<Authority>, token: Option<&Secret>) -> Self {
        AdminAccess {
            bound,
            allowed_hosts,
            token_digest: token.map(|t| sha256(t.expose().as_bytes())),
        }
    }

    /// True when the queue API requires a bearer token.
    pub fn requires_token(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Whether `authority` names this endpoint (see the module docs).
    pub fn is_own(&self, authority: &Authority) -> bool {
        let port = authority.effective_port();
        let configured = self.allowed_hosts.iter().any(|allowed| {
            allowed.host == authority.host && allowed.port.is_none_or(|p| p == port)
        });
        if configured {
            return true;
        }
        if port != self.bound.port() {
            return false;
        }
        let own_ip = self.bound.ip().to_canonical();
        match &authority.host {
            HostName::Ip(ip) => own_ip.is_unspecified() || ip.to_canonical() == own_ip,
            HostName::Name(name) => {
                name == "localhost" && (own_ip.is_loopback() || own_ip.is_unspecified())
            }
        }
    }

    /// The `Host` and `Origin` rules, for every request.
    ///
    /// # Errors
    /// The refusal to send instead of an answer.
    pub fn check_request(
        &self,
        method: &Method,
        target_authority: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let mut hosts = headers.get_all(hyper::header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "more than one Host header",
            ));
        }
        let misdirected = || {
            Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                "this Host is not the admin endpoint's address nor one of [admin] allowed_hosts (requests under other names are refused against DNS rebinding)",
            )
        };
        let host = match host_header {
            Some(value) => {
                let authority = header_authority(value).ok_or_else(misdirected)?;
                if !self.is_own(&authority) {
                    return Err(misdirected());
                }
                Some(authority)
            }
            None => None,
        };
        if let Some(target) = target_authority {
            let authority = Authority::parse(target).ok_or_else(misdirected)?;
            if !self.is_own(&authority) {
                return Err(misdirected());
            }
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let Some(origin) = headers.get(hyper::header::ORIGIN) else {
            return Ok(());
        };
        let foreign = || {
            Refusal::new(
                StatusCode::FORBIDDEN,
                "changes are refused from another origin (a web page's request); use the `queue` command or a client that sends no Origin",
            )
        };
        let origin = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .and_then(Authority::parse)
            .ok_or_else(foreign)?;
        match host {
            Some(host)
                if host.host == origin.host && host.effective_port() == origin.effective_port() =>
            {
                Ok(())
            }
            _ => Err(foreign()),
        }
    }

    /// The bearer-token rule, for the queue API.
    ///
    /// # Errors
    /// 401 when a token is required and the request carries none or another one.
    pub fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(expected) = &self.token_digest else {
            return Ok(());
        };
        let presented = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            });
        let Some(presented) = presented else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "the queue API requires Authorization: Bearer <the token in [admin] token_file>",
            ));
        };
        if bool::from(sha256(presented.as_bytes()).ct_eq(expected)) {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "wrong bearer token (it must be the content of [admin] token_file)",
            ))
        }
    }
}

fn header_authority(value: &HeaderValue) -> Option<Authority> {
    Authority::parse(value.to_str().ok()?.trim())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn access(bound: &str, allowed: &[&str], token: Option<&str>) -> AdminAccess {
        AdminAccess::new(
            bound.parse().unwrap(),
            allowed
                .iter()
                .map(|a| Authority::parse(a).unwrap())
                .collect(),
            token.map(Secret::new).as_ref(),
        )
    }

    type Parsed = Option<(HostName, Option<u16>)>;
    type RequestCase<'a> = (
        Method,
        Option<&'a str>,
        &'a [(&'static str, &'a str)],
        Option<u16>,
    );

    #[test]
    fn authorities_parse() {
        let ip = |s: &str| HostName::Ip(s.parse().unwrap());
        let name = |s: &str| HostName::Name(s.into());
        let cases: [(&str, Parsed); 14] = [
            ("127.0.0.1:8025", Some((ip("127.0.0.1"), Some(8025)))),
            ("127.0.0.1", Some((ip("127.0.0.1"), None))),
            ("[::1]:8025", Some((ip("::1"), Some(8025)))),
            ("[::ffff:10.0.0.1]:80", Some((ip("10.0.0.1"), Some(80)))),
            (
                "Relay.Example.LAN.:9",
                Some((name("relay.example.lan"), Some(9))),
            ),
            ("localhost", Some((name("localhost"), None))),
            ("::1", None),
            ("[::1", None),
            ("[::1]x", None),
            ("a:b", None),
            ("user@host:80", None),
            ("host:99999", None),
            ("", None),
            ("evil.example:80/path", None),
        ];
        for (text, expected) in cases {
            let parsed = Authority::parse(text).map(|a| (a.host, a.port));
            assert_eq!(parsed, expected, "{text}");
        }
    }

    #[test]
    fn own_hosts() {
        let cases: [(&str, &[&str], &str, bool); 18] = [
            ("127.0.0.1:8025", &[], "127.0.0.1:8025", true),
            ("127.0.0.1:8025", &[], "localhost:8025", true),
            ("127.0.0.1:8025", &[], "LOCALHOST.:8025", true),
            ("127.0.0.1:8025", &[], "127.0.0.1:8026", false),
            ("127.0.0.1:8025", &[], "127.0.0.2:8025", false),
            ("127.0.0.1:8025", &[], "127.0.0.1", false),
            ("127.0.0.1:8025", &[], "attacker.example:8025", false),
            ("127.0.0.1:8025", &[], "attacker.example", false),
            ("0.0.0.0:8025", &[], "10.1.2.3:8025", true),
            ("0.0.0.0:8025", &[], "[fd00::7]:8025", true),
            ("0.0.0.0:8025", &[], "localhost:8025", true),
            ("0.0.0.0:8025", &[], "relay.example.lan:8025", false),
            ("[::]:8025", &[], "[::ffff:10.1.2.3]:8025", true),
            ("10.0.0.5:8025", &[], "localhost:8025", false),
            ("10.0.0.5:8025", &[], "10.0.0.5:8025", true),
            (
                "0.0.0.0:8025",
                &["relay.example.lan"],
                "relay.example.lan:8025",
                true,
            ),
            (
                "0.0.0.0:8025",
                &["relay.example.lan:18025"],
                "relay.example.lan:18025",
                true,
            ),
            (
                "0.0.0.0:8025",
                &["relay.example.lan:18025"],
                "relay.example.lan:8025",
                false,
            ),
        ];
        for (bound, allowed, host, own) in cases {
            let access = access(bound, allowed, None);
            assert_eq!(
                access.is_own(&Authority::parse(host).unwrap()),
                own,
                "{bound} {allowed:?} {host}"
            );
        }
        // Port 80 is what a Host without a port means.
        let on_80 = access("127.0.0.1:80", &[], None);
        assert!(on_80.is_own(&Authority::parse("127.0.0.1").unwrap()));
    }

    #[test]
    fn host_and_origin_rules() {
        let access = access("127.0.0.1:8025", &["relay.example.lan"], None);
        let own = ("host", "127.0.0.1:8025");
        let cases: [RequestCase<'_>; 14] = [
            (Method::GET, None, &[own], None),
            (Method::GET, None, &[], None),
            (
                Method::GET,
                None,
                &[("host", "attacker.example")],
                Some(421),
            ),
            (
                Method::GET,
                None,
                &[("host", "attacker.example:8025")],
                Some(421),
            ),
            (Method::GET, None, &[("host", "not a host")], Some(421)),
            (Method::GET, None, &[own, own], Some(400)),
            (Method::GET, Some("attacker.example"), &[own], Some(421)),
            (
                Method::GET,
                None,
                &[own, ("origin", "http://evil.example")],
                None,
            ),
            (
                Method::POST,
                None,
                &[own, ("origin", "http://evil.example")],
                Some(403),
            ),
            (Method::DELETE, None, &[own, ("origin", "null")], Some(403)),
            (
                Method::POST,
                None,
                &[own, ("origin", "https://127.0.0.1:8025")],
                Some(403),
            ),
            (
                Method::POST,
                None,
                &[own, ("origin", "http://127.0.0.1:8025")],
                None,
            ),
            (Method::POST, None, &[own], None),
            (
                Method::POST,
                None,
                &[
                    ("host", "relay.example.lan:8025"),
                    ("origin", "http://localhost:8025"),
                ],
                Some(403),
            ),
        ];
        for (method, target, pairs, refused) in cases {
            let result = access.check_request(&method, target, &headers(pairs));
            assert_eq!(
                result.err().map(|r| r.status.as_u16()),
                refused,
                "{method} {target:?} {pairs:?}"
            );
        }
    }

    #[test]
    fn token_rule() {
        let open = access("127.0.0.1:8025", &[], None);
        assert!(!open.requires_token());
        assert!(open.check_token(&headers(&[])).is_ok());
        let guarded = access("127.0.0.1:8025", &[], Some("s3cret-Token-Value"));
        assert!(guarded.requires_token());
        let cases: [(&[(&str, &str)], bool); 7] = [
            (&[("authorization", "Bearer s3cret-Token-Value")], true),
            (&[("authorization", "bearer  s3cret-Token-Value ")], true),
            (&[], false),
            (&[("authorization", "Bearer s3cret-Token-Valu")], false),
            (&[("authorization", "Bearer s3cret-Token-Value2")], false),
            (&[("authorization", "Basic s3cret-Token-Value")], false),
            (&[("authorization", "s3cret-Token-Value")], false),
        ];
        for (pairs, accepted) in cases {
            let result = guarded.check_token(&headers(pairs));
            assert_eq!(result.is_ok(), accepted, "{pairs:?}");
            if let Err(refusal) = result {
                assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
                assert!(!refusal.reason.contains("s3cret"));
            }
        }
        assert!(!format!("{guarded:?}").contains("s3cret"));
    }
}
