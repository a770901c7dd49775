//! Whether the trusted `[[network]]` ranges can reach the relay at all: a range of LAN
//! addresses next to listeners that all listen on loopback can never connect, which is a
//! configuration mistake worth a warning (the example config once shipped it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// A warning per network that no listener can be reached from: every listener is bound to a
/// loopback address and the range holds no loopback address.
pub(super) fn unreachable_networks(
    listeners: &[SocketAddr],
    networks: &[(usize, IpNet)],
) -> Vec<String> {
    if listeners.is_empty() || !listeners.iter().all(|l| l.ip().is_loopback()) {
        return Vec::new();
    }
    let addresses: Vec<String> = listeners.iter().map(ToString::to_string).collect();
    networks
        .iter()
        .filter(|(_, net)| !holds_loopback(net))
        .map(|(index, net)| {
            format!(
                "network[{index}].cidr: {net} can never reach a listener that listens on loopback only ({}): those clients cannot connect; listen on \"0.0.0.0:PORT\" or a LAN address for them",
                addresses.join(", ")
            )
        })
        .collect()
}

fn holds_loopback(net: &IpNet) -> bool {
    net.network().is_loopback()
        || net.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST))
        || net.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_networks_no_listener_can_reach_are_warned_about() {
        let loopback: SocketAddr = "127.0.0.1:2525".parse().unwrap();
        let loopback6: SocketAddr = "[::1]:2525".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:2525".parse().unwrap();
        let lan: SocketAddr = "192.168.10.5:25".parse().unwrap();
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let cases: &[(&[SocketAddr], &str, bool)] = &[
            (&[loopback], "192.168.10.0/24", true),
            (&[loopback, loopback6], "10.0.0.0/8", true),
            (&[loopback], "127.0.0.0/8", false),
            (&[loopback], "0.0.0.0/0", false),
            (&[loopback6], "::1/128", false),
            (&[any], "192.168.10.0/24", false),
            (&[loopback, lan], "192.168.10.0/24", false),
            (&[], "192.168.10.0/24", false),
        ];
        for (listeners, cidr, warned) in cases {
            let warnings = unreachable_networks(listeners, &[(0, net(cidr))]);
            assert_eq!(!warnings.is_empty(), *warned, "{listeners:?} {cidr}");
            if *warned {
                assert!(warnings[0].starts_with("network[0].cidr: "), "{warnings:?}");
            }
        }
    }
}
