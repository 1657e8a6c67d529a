#![no_main]
//! The SOCKS5 client's handshake (`fulgur_engine::socks`, used for `--proxy`) against what a
//! proxy may answer. The input is a port (2 bytes), a host's length (1 byte), the host
//! (lossy UTF-8) and the proxy's replies. A panic is a bug; so is a handshake that succeeds
//! on a reply that is not a success, or sends a request that does not say what was asked.

use fulgur_engine::socks::{self, SocksError};

fn check(port: u16, host: &str, replies: &[u8]) {
    let (sent, r) = socks::run_on(host, port, replies);
    let request = match socks::connect_request(host, port) {
        Ok(req) => req,
        Err(e) => {
            // Only a name that does not fit a length byte is refused.
            assert!(matches!(e, SocksError::BadTarget(_)));
            assert!(host.parse::<std::net::IpAddr>().is_err());
            assert!(host.is_empty() || host.len() > 255);
            assert!(sent.is_empty() && r.is_err());
            return;
        }
    };
    // The request says what was asked: an IP literal as an address, anything else as a name.
    assert_eq!(&request[..3], &[5, 1, 0]);
    assert_eq!(request[request.len() - 2..], port.to_be_bytes());
    let addr = &request[4..request.len() - 2];
    match (request[3], host.parse::<std::net::IpAddr>()) {
        (1, Ok(std::net::IpAddr::V4(a))) => assert_eq!(addr, a.octets()),
        (4, Ok(std::net::IpAddr::V6(a))) => assert_eq!(addr, a.octets()),
        (3, Err(_)) => {
            assert_eq!(usize::from(addr[0]), host.len());
            assert_eq!(&addr[1..], host.as_bytes());
        }
        (t, h) => panic!("address type {t} for {h:?}"),
    }
    // The greeting first; the request only once the proxy chose "no authentication".
    assert_eq!(&sent[..3], &[5, 1, 0]);
    let past_method = replies.get(..2) == Some(&[5, 0][..]);
    if past_method {
        assert_eq!(&sent[3..], &request[..]);
    } else {
        assert_eq!(sent.len(), 3);
    }
    match r {
        Ok(read) => {
            // Success only on version 5, method 0, version 5, code 0, a known address type,
            // with the whole reply read and nothing more.
            assert!(read <= replies.len());
            assert_eq!(&replies[..4], &[5, 0, 5, 0]);
            let len = match replies[5] {
                1 => 2 + 4 + 4 + 2,
                4 => 2 + 4 + 16 + 2,
                3 => 2 + 4 + 1 + usize::from(replies[6]) + 2,
                t => panic!("succeeded with address type {t}"),
            };
            assert_eq!(read, len);
        }
        Err(SocksError::Refused(code)) => {
            assert!(past_method && code != 0 && replies.get(3) == Some(&code));
            assert!(!SocksError::Refused(code).to_string().is_empty());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [p0, p1, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*n).min(rest.len());
    let (host, replies) = rest.split_at(n);
    check(
        u16::from_be_bytes([*p0, *p1]),
        &String::from_utf8_lossy(host),
        replies,
    );
});
