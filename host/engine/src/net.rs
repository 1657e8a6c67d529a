//! Network addresses: `--bind-addr`, `--addr`, `--announce-addr` values and CLN's address
//! objects (`{"type": "ipv4", "address": "127.0.0.1", "port": 9735}`), and how an outbound
//! connection reaches its target ([`route`]: directly, or through the `--proxy`).

use std::net::{IpAddr, SocketAddr};

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

/// `--proxy` and `--always-use-proxy`: a SOCKS5 proxy (Tor's, typically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's address (`--proxy`, port 9050 by default).
    pub addr: NetAddr,
    /// `--always-use-proxy`: every outbound connection goes through it, and no name is
    /// resolved here.
    pub always: bool,
}

/// The default port of `--proxy` (Tor's SOCKS port), as CLN.
pub const DEFAULT_PROXY_PORT: u16 = 9050;

/// How one outbound connection reaches its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// A TCP connection to this address.
    Direct(SocketAddr),
    /// Through the proxy, which is given the host as it is (a name, never resolved here,
    /// or an IP literal).
    Proxied(NetAddr),
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::Direct(a) => write!(f, "{a}"),
            Dial::Proxied(a) if a.host.contains(':') => write!(f, "[{}]:{}", a.host, a.port),
            Dial::Proxied(a) => write!(f, "{}:{}", a.host, a.port),
        }
    }
}

/// What to do with a target before dialling it, CLN's rules (`connectd.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Dial it: an IP address, or anything through the proxy.
    Dial(Dial),
    /// A name to resolve here, then each address dialled directly.
    Resolve,
}

/// How to reach `target` given the proxy settings: a `.onion` always through the proxy
/// (an error without one, in CLN's words), everything through it with
/// `--always-use-proxy`, otherwise IP addresses directly and names resolved here.
pub fn route(target: &NetAddr, proxy: Option<&Proxy>) -> Result<Route, String> {
    let proxied = Route::Dial(Dial::Proxied(target.clone()));
    match (target.kind(), proxy) {
        ("torv3", Some(_)) => Ok(proxied),
        ("torv3", None) => Err(format!("{}: need a proxy.", Dial::Proxied(target.clone()))),
        (_, Some(p)) if p.always => Ok(proxied),
        ("dns", _) => Ok(Route::Resolve),
        _ => match target.host.parse::<IpAddr>() {
            Ok(ip) => Ok(Route::Dial(Dial::Direct(SocketAddr::new(ip, target.port)))),
            Err(_) => Ok(Route::Resolve),
        },
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

    #[test]
    fn onions_go_through_the_proxy_and_everything_with_always_use_proxy() {
        let a = |s| NetAddr::parse(s, 9735).unwrap();
        let proxy = |always| Proxy {
            addr: a("127.0.0.1:9050"),
            always,
        };
        let direct = |s: &str| Ok(Route::Dial(Dial::Direct(s.parse().unwrap())));
        let proxied = |s| Ok(Route::Dial(Dial::Proxied(a(s))));
        // No proxy: IPs directly, names resolved, onions refused as CLN does.
        assert_eq!(route(&a("10.0.0.1:5"), None), direct("10.0.0.1:5"));
        assert_eq!(route(&a("[::1]:5"), None), direct("[::1]:5"));
        assert_eq!(route(&a("example.com"), None), Ok(Route::Resolve));
        assert_eq!(
            route(&a("xyz.onion:7"), None),
            Err("xyz.onion:7: need a proxy.".into())
        );
        // A proxy for onions only.
        let p = proxy(false);
        assert_eq!(route(&a("xyz.onion:7"), Some(&p)), proxied("xyz.onion:7"));
        assert_eq!(route(&a("10.0.0.1:5"), Some(&p)), direct("10.0.0.1:5"));
        assert_eq!(route(&a("example.com"), Some(&p)), Ok(Route::Resolve));
        // Always: nothing resolved or dialled here.
        let p = proxy(true);
        for t in ["xyz.onion:7", "10.0.0.1:5", "[::1]:5", "example.com:1"] {
            assert_eq!(route(&a(t), Some(&p)), proxied(t));
        }
        assert_eq!(Dial::Proxied(a("[::1]:5")).to_string(), "[::1]:5");
    }
}
