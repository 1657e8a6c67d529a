//! `announce-addr-discovered`, as CLN's (`lightningd/peer_control.c`): peers tell us in
//! `init` the address they see us at (`remote_addr`; LDK sends and reads it, and drops
//! private ones). When enough of them agree on one public IPv4 (or IPv6) address, it is
//! added to our node announcement with `announce-addr-discovered-port`: a node behind NAT
//! becomes reachable without configuring its address. `auto` (CLN's default) does it only
//! when no address is configured for announcement; `--always-use-proxy` never does (it would
//! reveal the address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use bitcoin::secp256k1::PublicKey;
use lightning::ln::msgs::SocketAddress;

/// `announce-addr-discovered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// Never announce a discovered address.
    Off,
    /// Only when no address is configured for announcement (CLN's default).
    Auto,
    /// Always (besides the configured ones).
    On,
}

/// The discovery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovery {
    /// `announce-addr-discovered`.
    pub mode: DiscoveryMode,
    /// `announce-addr-discovered-port`.
    pub port: u16,
}

/// What peers said they see us at, and what was chosen.
#[derive(Default)]
pub struct Discovered {
    /// Per peer: the IP it gave and whether it has a channel with us (a channel peer's word
    /// weighs more).
    said: Mutex<HashMap<PublicKey, (IpAddr, bool)>>,
    /// The chosen IPv4 and IPv6 addresses.
    chosen: Mutex<(Option<IpAddr>, Option<IpAddr>)>,
}

/// The IP of a `remote_addr` worth considering (IPv4 or IPv6; LDK already dropped the
/// private ones).
pub fn ip_of(a: &SocketAddress) -> Option<IpAddr> {
    match a {
        SocketAddress::TcpIpV4 { addr, .. } => Some(IpAddr::from(*addr)),
        SocketAddress::TcpIpV6 { addr, .. } => Some(IpAddr::from(*addr)),
        _ => None,
    }
}

/// CLN's choice among what peers said, for one address family (`best_remote_addr`): the
/// most given address, counting a channel peer's word as much as all the others' together;
/// chosen when a channel peer and at least one other peer agree, or, without a channel
/// peer, when at least two peers agree but not all of those that answered (CLN's test).
pub fn best(said: &[(IpAddr, bool)]) -> Option<IpAddr> {
    let bonus = said.len();
    let mut scores: Vec<(IpAddr, usize)> = vec![];
    for (ip, preferred) in said {
        let add = if *preferred { bonus } else { 1 };
        match scores.iter_mut().find(|(a, _)| a == ip) {
            Some((_, s)) => *s += add,
            None => scores.push((*ip, add)),
        }
    }
    let (ip, score) = scores.into_iter().max_by_key(|(_, s)| *s)?;
    (score > bonus || (score < bonus && score > 1)).then_some(ip)
}

impl Discovered {
    /// Records what `peer` said; returns true when the chosen address of its family changed
    /// (our node announcement should be sent again).
    pub fn peer_said(&self, peer: PublicKey, ip: IpAddr, has_channel: bool) -> bool {
        let said: Vec<(IpAddr, bool)> = {
            let mut m = self.said.lock().unwrap_or_else(|p| p.into_inner());
            m.insert(peer, (ip, has_channel));
            m.values()
                .filter(|(a, _)| a.is_ipv4() == ip.is_ipv4())
                .copied()
                .collect()
        };
        let choice = best(&said);
        let mut chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        let slot = if ip.is_ipv4() {
            &mut chosen.0
        } else {
            &mut chosen.1
        };
        if *slot == choice {
            return false;
        }
        *slot = choice;
        true
    }

    /// The addresses to announce besides `configured`, at `port`.
    pub fn to_announce(&self, d: Discovery, configured: usize) -> Vec<SocketAddress> {
        match d.mode {
            DiscoveryMode::Off => return vec![],
            DiscoveryMode::Auto if configured > 0 => return vec![],
            _ => {}
        }
        let chosen = *self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        [chosen.0, chosen.1]
            .into_iter()
            .flatten()
            .map(|ip| match ip {
                IpAddr::V4(a) => SocketAddress::TcpIpV4 {
                    addr: a.octets(),
                    port: d.port,
                },
                IpAddr::V6(a) => SocketAddress::TcpIpV6 {
                    addr: a.octets(),
                    port: d.port,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    fn key(n: u8) -> PublicKey {
        let sk = SecretKey::from_slice(&[n; 32]).unwrap_or_else(|e| panic!("{e}"));
        PublicKey::from_secret_key(&Secp256k1::signing_only(), &sk)
    }

    #[test]
    fn two_peers_or_a_channel_peer_and_another_must_agree() {
        let a: IpAddr = "203.0.113.7".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: IpAddr = "198.51.100.1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(best(&[(a, false)]), None);
        assert_eq!(best(&[(a, true)]), None);
        // CLN's rule as written: without a channel peer, the agreeing peers must be fewer
        // than all the peers that answered (two out of two is not enough, two out of
        // three is).
        assert_eq!(best(&[(a, false), (a, false)]), None);
        assert_eq!(best(&[(a, false), (a, false), (b, false)]), Some(a));
        assert_eq!(best(&[(a, true), (a, false)]), Some(a));
        // A channel peer outweighs any number of others.
        assert_eq!(
            best(&[(a, true), (a, false), (b, false), (b, false)]),
            Some(a)
        );
        assert_eq!(best(&[(a, false), (b, false)]), None);
    }

    #[test]
    fn the_choice_is_announced_as_configured() {
        let d = Discovered::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.peer_said(key(1), ip, true));
        assert!(d.peer_said(key(2), ip, false));
        assert!(!d.peer_said(key(2), ip, false));
        let auto = Discovery {
            mode: DiscoveryMode::Auto,
            port: 9735,
        };
        assert_eq!(
            d.to_announce(auto, 0),
            vec![SocketAddress::TcpIpV4 {
                addr: [203, 0, 113, 7],
                port: 9735
            }]
        );
        assert!(d.to_announce(auto, 1).is_empty());
        let on = Discovery {
            mode: DiscoveryMode::On,
            ..auto
        };
        assert_eq!(d.to_announce(on, 1).len(), 1);
        let off = Discovery {
            mode: DiscoveryMode::Off,
            ..auto
        };
        assert!(d.to_announce(off, 0).is_empty());
    }
}
