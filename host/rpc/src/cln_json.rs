//! CLN's JSON shapes shared by the RPC replies and the plugin notifications the engine
//! sends (the `connect` notification carries an address like `getinfo`'s): here, so that
//! neither `lightning` nor `rpc` reaches into the other for them.
//!
//! Addresses: `{"type", "address", "port"}`, as `getinfo`, `listnodes` and `connect` show them.
//! Channel types: `{"bits", "names"}`, as `fundchannel`, `listpeerchannels` and the
//! `openchannel` hook show them.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::lightning::net::{DEFAULT_PORT, NetAddr};

/// A host and port.
pub fn netaddr_json(a: &NetAddr) -> Value {
    json!({"type": a.kind(), "address": a.host, "port": a.port})
}

/// A socket address.
pub fn socket_json(a: &SocketAddr) -> Value {
    let kind = if a.is_ipv4() { "ipv4" } else { "ipv6" };
    json!({"type": kind, "address": a.ip().to_string(), "port": a.port()})
}

/// LDK's rendering of a peer address (`1.2.3.4:9735`, a DNS name), or null.
pub fn address_json(s: &str) -> Value {
    match s.parse::<SocketAddr>() {
        Ok(a) => socket_json(&a),
        Err(_) => match NetAddr::parse(s, DEFAULT_PORT) {
            Ok(n) if !s.is_empty() => netaddr_json(&n),
            _ => Value::Null,
        },
    }
}

/// A channel type as CLN shows it: `{"bits": [...], "names": [...]}`.
pub fn channel_type_json(ty: Option<&lightning::types::features::ChannelTypeFeatures>) -> Value {
    let (mut bits, mut names) = (vec![], vec![]);
    if let Some(t) = ty {
        let known = [
            (t.supports_static_remote_key(), 12, "static_remotekey/even"),
            (t.supports_anchors_zero_fee_htlc_tx(), 22, "anchors/even"),
            (t.supports_scid_privacy(), 46, "scid_alias/even"),
            (t.supports_zero_conf(), 50, "zeroconf/even"),
        ];
        for (_, bit, name) in known.into_iter().filter(|k| k.0) {
            bits.push(bit);
            names.push(name);
        }
    }
    json!({"bits": bits, "names": names})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_cln_shows_them() {
        assert_eq!(
            address_json("10.0.0.1:5"),
            json!({"type": "ipv4", "address": "10.0.0.1", "port": 5})
        );
        assert_eq!(address_json("[::1]:9")["type"], "ipv6");
        assert_eq!(
            address_json("example.com"),
            json!({"type": "dns", "address": "example.com", "port": DEFAULT_PORT})
        );
        assert_eq!(address_json(""), Value::Null);
    }
}
