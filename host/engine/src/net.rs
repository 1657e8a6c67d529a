//! Network addresses: `--bind-addr`, `--addr`, `--announce-addr` values and CLN's address
//! objects (`{"type": "ipv4", "address": "127.0.0.1", "port": 9735}`).

use std::net::IpAddr;

/// The default Lightning port.
pub const DEFAULT_PORT: u16 = 9735;

/// A host and port as given on the command line or to `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAddr {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl NetAddr {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal.
    pub fn parse(s: &str, default_port: u16) -> Result<NetAddr, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty address".into());
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, tail) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}': missing ']'"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if tail.is_empty() => default_port,
                None => return Err(format!("'{s}': junk after ']'")),
            };
            return Ok(NetAddr {
                host: host.to_string(),
                port,
            });
        }
        if s.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(NetAddr {
                host: s.to_string(),
                port: default_port,
            });
        }
        match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => Ok(NetAddr {
                host: h.to_string(),
                port: parse_port(p)?,
            }),
            Some(_) => Err(format!("'{s}': missing host")),
            None => Ok(NetAddr {
                host: s.to_string(),
                port: default_port,
            }),
        }
    }

    /// As LDK's announced address (IP addresses and DNS names).
    pub fn to_socket_address(&self) -> lightning::ln::msgs::SocketAddress {
        use lightning::ln::msgs::SocketAddress as S;
        match self.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => S::TcpIpV4 {
                addr: a.octets(),
                port: self.port,
            },
            Ok(std::net::IpAddr::V6(a)) => S::TcpIpV6 {
                addr: a.octets(),
                port: self.port,
            },
            Err(_) => match lightning::util::ser::Hostname::try_from(self.host.clone()) {
                Ok(hostname) => S::Hostname {
                    hostname,
                    port: self.port,
                },
                Err(_) => S::TcpIpV4 {
                    addr: [127, 0, 0, 1],
                    port: self.port,
                },
            },
        }
    }

    /// Its kind, with CLN's names: `ipv4`, `ipv6`, `torv3` or `dns`.
    pub fn kind(&self) -> &'static str {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => "ipv4",
            Ok(IpAddr::V6(_)) => "ipv6",
            Err(_) if self.host.ends_with(".onion") => "torv3",
            Err(_) => "dns",
        }
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("'{p}' is not a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_ports() {
        let p = |s| NetAddr::parse(s, 9735);
        assert_eq!(
            p("127.0.0.1:1234"),
            Ok(NetAddr {
                host: "127.0.0.1".into(),
                port: 1234
            })
        );
        assert_eq!(p("example.com").map(|a| a.port), Ok(9735));
        assert_eq!(p("[::1]:99").map(|a| a.host), Ok("::1".into()));
        assert_eq!(p("::1").map(|a| a.port), Ok(9735));
        assert!(p("1.2.3.4:0").is_err());
        assert!(p("1.2.3.4:x").is_err());
        assert!(p(":5").is_err());
        assert!(p("").is_err());
        assert_eq!(p("10.0.0.1:5").map(|a| a.kind()), Ok("ipv4"));
    }
}
