//! A SOCKS5 client (RFC 1928) for `--proxy`: Tor's SOCKS port, or any SOCKS5 proxy, for
//! `.onion` peers and, with `--always-use-proxy`, for every outbound connection.
//!
//! The protocol is a [`Handshake`] that takes bytes and says what to send and how many bytes
//! to read next, without I/O (so it is unit-tested and fuzzed on its own); [`connect`] drives
//! it over a TCP stream to the proxy. Only what CLN's `connectd/tor.c` does: no
//! authentication (method `0x00`), the `CONNECT` command, the target as a domain name
//! (`ATYP 0x03`, resolved by the proxy, never here) or an IP literal (`0x01`, `0x04`).
//! It does not time out by itself: the caller bounds the whole exchange (the engine's
//! connect timeout).

use std::net::IpAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The version byte of every SOCKS5 message.
const VERSION: u8 = 5;
/// What we offer: one method, "no authentication required".
const GREETING: [u8; 3] = [VERSION, 1, 0x00];
/// The `CONNECT` command.
const CMD_CONNECT: u8 = 1;

/// Why a SOCKS5 exchange failed. The `Display` text is what `connect` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksError {
    /// The target's name does not fit the protocol (empty or over 255 bytes).
    BadTarget(String),
    /// The proxy answered with another version than 5 (not a SOCKS5 proxy).
    NotSocks5(u8),
    /// The proxy wants authentication (it chose a method other than "none").
    NoAcceptableMethod(u8),
    /// The proxy refused the `CONNECT`: the reply code (`0x01`–`0x08`, or another).
    Refused(u8),
    /// The proxy's reply names an address type that does not exist.
    BadAddressType(u8),
    /// Reading from or writing to the proxy failed (including a close mid-exchange).
    Io(String),
}

/// RFC 1928's text for a reply code, as CLN words them.
pub fn reply_text(code: u8) -> String {
    match code {
        0 => "success".into(),
        1 => "general SOCKS server failure".into(),
        2 => "connection not allowed by ruleset".into(),
        3 => "network unreachable".into(),
        4 => "host unreachable".into(),
        5 => "connection refused".into(),
        6 => "TTL expired".into(),
        7 => "command not supported".into(),
        8 => "address type not supported".into(),
        c => format!("unknown error: {c}"),
    }
}

impl std::fmt::Display for SocksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocksError::BadTarget(why) => write!(f, "cannot ask the proxy for it: {why}"),
            SocksError::NotSocks5(v) => {
                write!(f, "the proxy is not a SOCKS5 proxy (version {v})")
            }
            SocksError::NoAcceptableMethod(m) => write!(
                f,
                "the proxy wants authentication (method {m:#04x}); only 'none' is supported"
            ),
            SocksError::Refused(code) => {
                write!(f, "the proxy answered: {} ({code:#04x})", reply_text(*code))
            }
            SocksError::BadAddressType(t) => {
                write!(f, "the proxy's reply has an unknown address type {t}")
            }
            SocksError::Io(e) => write!(f, "talking to the proxy: {e}"),
        }
    }
}

impl std::error::Error for SocksError {}

/// The `CONNECT` request for `host:port`: an IP literal as `ATYP 0x01`/`0x04`, anything else
/// as a domain name (`ATYP 0x03`) for the proxy to resolve.
pub fn connect_request(host: &str, port: u16) -> Result<Vec<u8>, SocksError> {
    let mut out = vec![VERSION, CMD_CONNECT, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.octets());
        }
        Ok(IpAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        Err(_) => {
            let len = u8::try_from(host.len())
                .ok()
                .filter(|l| *l > 0)
                .ok_or_else(|| {
                    SocksError::BadTarget(format!(
                        "a name must be 1 to 255 bytes, not {}",
                        host.len()
                    ))
                })?;
            out.push(3);
            out.push(len);
            out.extend_from_slice(host.as_bytes());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// Where a [`Handshake`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the method choice (2 bytes).
    Method,
    /// Waiting for the reply's first 5 bytes (version, code, reserved, address type, and the
    /// first byte of the bound address, which is a name's length).
    ReplyHead,
    /// Waiting for the rest of the bound address and port (discarded).
    ReplyRest(usize),
    /// The proxy connected us: the stream now carries the target's bytes.
    Done,
}

/// One SOCKS5 `CONNECT` exchange, without I/O: send [`Handshake::greeting`], then read
/// [`Handshake::wants`] bytes and hand them to [`Handshake::take`], sending what it returns,
/// until [`Handshake::is_done`]. A failed step leaves the handshake failed for good (the
/// connection to the proxy is to be dropped).
#[derive(Debug, Clone)]
pub struct Handshake {
    request: Vec<u8>,
    state: State,
}

impl Handshake {
    /// A handshake asking the proxy for `host:port`.
    pub fn new(host: &str, port: u16) -> Result<Handshake, SocksError> {
        Ok(Handshake {
            request: connect_request(host, port)?,
            state: State::Method,
        })
    }

    /// The first bytes to send: version 5, one method, "no authentication".
    pub fn greeting(&self) -> &'static [u8] {
        &GREETING
    }

    /// How many bytes to read next: 0 once done.
    pub fn wants(&self) -> usize {
        match self.state {
            State::Method => 2,
            State::ReplyHead => 5,
            State::ReplyRest(n) => n,
            State::Done => 0,
        }
    }

    /// Whether the proxy has connected us to the target.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the [`Handshake::wants`] bytes just read; returns what to send next (empty
    /// when nothing). Fewer or more bytes than wanted is a caller's bug and an error.
    pub fn take(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SocksError> {
        if bytes.len() != self.wants() {
            return Err(SocksError::Io(format!(
                "expected {} bytes, got {}",
                self.wants(),
                bytes.len()
            )));
        }
        match (&self.state, bytes) {
            (State::Method, [v, m]) => {
                if *v != VERSION {
                    return Err(SocksError::NotSocks5(*v));
                }
                if *m != 0x00 {
                    return Err(SocksError::NoAcceptableMethod(*m));
                }
                self.state = State::ReplyHead;
                Ok(self.request.clone())
            }
            (State::ReplyHead, [v, code, _reserved, atyp, first]) => {
                if *v != VERSION {
                    return Err(SocksError::NotSocks5(*v));
                }
                if *code != 0 {
                    return Err(SocksError::Refused(*code));
                }
                // The bound address (its first byte is already read) and the port.
                let rest = match atyp {
                    1 => 4 - 1 + 2,
                    4 => 16 - 1 + 2,
                    3 => usize::from(*first) + 2,
                    t => return Err(SocksError::BadAddressType(*t)),
                };
                self.state = State::ReplyRest(rest);
                Ok(vec![])
            }
            (State::ReplyRest(_), _) => {
                self.state = State::Done;
                Ok(vec![])
            }
            _ => Err(SocksError::Io("the handshake is over".into())),
        }
    }
}

/// Asks the SOCKS5 proxy at the other end of `stream` to connect to `host:port`; on success
/// the stream carries the target's bytes. Not bounded in time here: the caller's timeout is.
pub async fn connect<S>(stream: &mut S, host: &str, port: u16) -> Result<(), SocksError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| SocksError::Io(e.to_string());
    let mut hs = Handshake::new(host, port)?;
    stream.write_all(hs.greeting()).await.map_err(io)?;
    let mut buf = Vec::new();
    while !hs.is_done() {
        buf.resize(hs.wants(), 0);
        stream.read_exact(&mut buf).await.map_err(io)?;
        let out = hs.take(&buf)?;
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(io)?;
        }
    }
    Ok(())
}

/// Runs a handshake for `host:port` against `replies` (what a proxy sends), as [`connect`]
/// does over a stream: the bytes sent, and how it ended with how many reply bytes it read.
/// For the fuzz target and tests.
pub fn run_on(host: &str, port: u16, replies: &[u8]) -> (Vec<u8>, Result<usize, SocksError>) {
    let mut hs = match Handshake::new(host, port) {
        Ok(h) => h,
        Err(e) => return (vec![], Err(e)),
    };
    let mut sent = hs.greeting().to_vec();
    let mut at: usize = 0;
    while !hs.is_done() {
        let Some(chunk) = replies.get(at..at.saturating_add(hs.wants())) else {
            return (sent, Err(SocksError::Io("early eof".into())));
        };
        at += chunk.len();
        match hs.take(chunk) {
            Ok(out) => sent.extend_from_slice(&out),
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_names_as_domains_and_ips_as_addresses() {
        assert_eq!(
            connect_request("ab.onion", 9735).unwrap(),
            [&[5, 1, 0, 3, 8][..], b"ab.onion", &[0x26, 0x07]].concat()
        );
        assert_eq!(
            connect_request("127.0.0.1", 1).unwrap(),
            vec![5, 1, 0, 1, 127, 0, 0, 1, 0, 1]
        );
        let v6 = connect_request("::1", 2).unwrap();
        assert_eq!(v6[3], 4);
        assert_eq!(v6.len(), 4 + 16 + 2);
        assert!(matches!(
            connect_request("", 1),
            Err(SocksError::BadTarget(_))
        ));
        assert!(connect_request(&"a".repeat(255), 1).is_ok());
        assert!(connect_request(&"a".repeat(256), 1).is_err());
    }

    #[test]
    fn a_successful_exchange_reads_the_whole_reply() {
        // IPv4 bound address.
        let ok4 = [5, 0, 5, 0, 0, 1, 1, 2, 3, 4, 0, 80];
        let (sent, r) = run_on("x.onion", 9735, &ok4);
        assert_eq!(r, Ok(ok4.len()));
        assert_eq!(&sent[..3], &GREETING);
        assert_eq!(&sent[3..], &connect_request("x.onion", 9735).unwrap()[..]);
        // Domain bound address (length 3), bytes after the reply are the target's.
        let okd = [5, 0, 5, 0, 0, 3, 3, b'a', b'b', b'c', 0, 1, 0xff];
        assert_eq!(run_on("h", 1, &okd).1, Ok(okd.len() - 1));
        // IPv6 bound address.
        let mut ok6 = vec![5, 0, 5, 0, 0, 4];
        ok6.extend_from_slice(&[0; 18]);
        assert_eq!(run_on("h", 1, &ok6).1, Ok(ok6.len()));
    }

    #[test]
    fn proxy_errors_are_named() {
        for code in 1..=8u8 {
            let r = run_on("h", 1, &[5, 0, 5, code, 0, 1, 0, 0, 0, 0, 0, 0]).1;
            assert_eq!(r, Err(SocksError::Refused(code)));
        }
        let refused = SocksError::Refused(5).to_string();
        assert!(refused.contains("connection refused"), "{refused}");
        assert_eq!(run_on("h", 1, &[4, 0]).1, Err(SocksError::NotSocks5(4)));
        assert_eq!(
            run_on("h", 1, &[5, 0xff]).1,
            Err(SocksError::NoAcceptableMethod(0xff))
        );
        assert_eq!(
            run_on("h", 1, &[5, 0, 5, 0, 0, 9, 0]).1,
            Err(SocksError::BadAddressType(9))
        );
        assert!(matches!(
            run_on("h", 1, &[5, 0, 5, 0, 0, 1]).1,
            Err(SocksError::Io(_))
        ));
        let mut hs = Handshake::new("h", 1).unwrap();
        assert!(hs.take(&[5]).is_err());
    }

    #[tokio::test]
    async fn connect_drives_the_handshake_over_a_stream() {
        let (mut ours, mut proxy) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            let mut hello = [0u8; 3];
            proxy.read_exact(&mut hello).await.unwrap();
            proxy.write_all(&[5, 0]).await.unwrap();
            let mut req = [0u8; 4 + 1 + 7 + 2];
            proxy.read_exact(&mut req).await.unwrap();
            proxy
                .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0, b'!'])
                .await
                .unwrap();
            (hello, req)
        });
        connect(&mut ours, "x.onion", 7).await.unwrap();
        let mut after = [0u8; 1];
        ours.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"!");
        let (hello, req) = server.await.unwrap();
        assert_eq!(hello, GREETING);
        assert_eq!(&req[..], &connect_request("x.onion", 7).unwrap()[..]);
    }
}
