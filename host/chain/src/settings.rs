//! Where the Bitcoin backend is and how to log in: `--bitcoin-*` options → URL and HTTP basic
//! credentials (user/password or bitcoind's cookie file), and the network name mappings.
//! Pure code: everything here is unit-tested.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fulgur_base::Network;

/// The `--bitcoin-*` options as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitcoinOptions {
    /// `--bitcoin-rpcconnect` (host name or address).
    pub rpcconnect: String,
    /// `--bitcoin-rpcport`; `None` means the network's default.
    pub rpcport: Option<u16>,
    /// `--bitcoin-rpcuser`.
    pub rpcuser: Option<String>,
    /// `--bitcoin-rpcpassword`.
    pub rpcpassword: Option<String>,
    /// `--bitcoin-datadir` (where bitcoind writes `.cookie`).
    pub datadir: Option<PathBuf>,
    /// `--bitcoin-retry-timeout`: how long one broadcast keeps being retried.
    pub retry_timeout: Duration,
    /// `--bitcoin-rpcclienttimeout`: how long one request to bitcoind may take.
    pub client_timeout: Duration,
}

impl Default for BitcoinOptions {
    fn default() -> Self {
        BitcoinOptions {
            rpcconnect: "127.0.0.1".into(),
            rpcport: None,
            rpcuser: None,
            rpcpassword: None,
            datadir: None,
            retry_timeout: Duration::from_secs(60),
            client_timeout: Duration::from_secs(60),
        }
    }
}

/// bitcoind's default RPC port for `network`.
pub fn default_rpcport(network: Network) -> u16 {
    match network {
        Network::Bitcoin => 8332,
        Network::Testnet => 18332,
        Network::Testnet4 => 48332,
        Network::Signet => 38332,
        Network::Regtest => 18443,
    }
}

/// The `chain` bitcoind reports in `getblockchaininfo` (BIP70 names) for `network`.
pub fn bitcoind_chain_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "main",
        Network::Testnet => "test",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

#[cfg(test)]
/// Our network for a `chain` name from bitcoind (or a backend plugin).
pub fn network_from_chain_name(chain: &str) -> Option<Network> {
    match chain {
        "main" => Some(Network::Bitcoin),
        "test" => Some(Network::Testnet),
        "testnet4" => Some(Network::Testnet4),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// rust-bitcoin's network, for lightning-block-sync's header checks.
pub fn bitcoin_network(network: Network) -> bitcoin::Network {
    match network {
        Network::Bitcoin => bitcoin::Network::Bitcoin,
        Network::Testnet => bitcoin::Network::Testnet,
        Network::Testnet4 => bitcoin::Network::Testnet4,
        Network::Signet => bitcoin::Network::Signet,
        Network::Regtest => bitcoin::Network::Regtest,
    }
}

/// bitcoind's per-network data subdirectory (empty on mainnet).
pub fn net_subdir(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "",
        Network::Testnet => "testnet3",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

/// How we authenticate to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `--bitcoin-rpcuser` and `--bitcoin-rpcpassword`.
    UserPass(String, String),
    /// bitcoind's cookie file: the candidate paths, first existing one wins. Re-read when
    /// authentication fails, since bitcoind writes a new cookie at every start.
    Cookie(Vec<PathBuf>),
}

/// Everything needed to reach the backend's JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port`.
    pub url: String,
    /// Credentials.
    pub auth: Auth,
    /// How long one request may take (`--bitcoin-rpcclienttimeout`).
    pub timeout: Duration,
}

/// The endpoint the options describe. Without a user and password, the cookie of
/// `--bitcoin-datadir` (default `~/.bitcoin`) is used: `<datadir>/<netsubdir>/.cookie`, or
/// `<datadir>/.cookie` when the datadir is already the network's.
pub fn endpoint(opts: &BitcoinOptions, network: Network, home: &Path) -> Endpoint {
    let port = opts.rpcport.unwrap_or_else(|| default_rpcport(network));
    let host = if opts.rpcconnect.contains(':') && !opts.rpcconnect.starts_with('[') {
        format!("[{}]", opts.rpcconnect)
    } else {
        opts.rpcconnect.clone()
    };
    let url = format!("http://{host}:{port}");
    let auth = match (&opts.rpcuser, &opts.rpcpassword) {
        (Some(u), Some(p)) => Auth::UserPass(u.clone(), p.clone()),
        (Some(u), None) => Auth::UserPass(u.clone(), String::new()),
        _ => {
            let dir = opts
                .datadir
                .clone()
                .unwrap_or_else(|| home.join(".bitcoin"));
            let sub = net_subdir(network);
            let mut paths = vec![];
            if !sub.is_empty() {
                paths.push(dir.join(sub).join(".cookie"));
            }
            paths.push(dir.join(".cookie"));
            Auth::Cookie(paths)
        }
    };
    Endpoint {
        url,
        auth,
        timeout: opts.client_timeout,
    }
}

/// The `user:password` in a cookie file's text (`__cookie__:hex`), trimmed; `None` if it
/// does not look like one.
pub fn parse_cookie(text: &str) -> Option<String> {
    let line = text.lines().next()?.trim();
    let (user, pass) = line.split_once(':')?;
    if user.is_empty() || pass.is_empty() {
        return None;
    }
    Some(line.to_string())
}

/// Reads the first readable cookie among `paths`: `Ok(user:password)` or why not.
pub fn read_cookie(paths: &[PathBuf]) -> Result<String, String> {
    let mut why = vec![];
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(t) => match parse_cookie(&t) {
                Some(c) => return Ok(c),
                None => why.push(format!("{}: not a cookie file", p.display())),
            },
            Err(e) => why.push(format!("{}: {e}", p.display())),
        }
    }
    Err(why.join("; "))
}

/// HTTP basic credentials (base64 of `user:password`) for `auth`; with no readable cookie,
/// empty credentials (the server will say 401 and we will look for the cookie again).
pub fn credentials(auth: &Auth) -> String {
    let plain = match auth {
        Auth::UserPass(u, p) => format!("{u}:{p}"),
        Auth::Cookie(paths) => read_cookie(paths).unwrap_or_else(|_| ":".into()),
    };
    base64(plain.as_bytes())
}

/// Standard base64 (RFC 4648, padded), as HTTP Basic auth wants it.
pub fn base64(data: &[u8]) -> String {
    use bitcoin::base64::Engine;
    bitcoin::base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn endpoint_defaults_per_network() {
        let home = Path::new("/home/u");
        let e = endpoint(&BitcoinOptions::default(), Network::Regtest, home);
        assert_eq!(e.url, "http://127.0.0.1:18443");
        assert_eq!(
            e.auth,
            Auth::Cookie(vec![
                "/home/u/.bitcoin/regtest/.cookie".into(),
                "/home/u/.bitcoin/.cookie".into()
            ])
        );
        let e = endpoint(&BitcoinOptions::default(), Network::Bitcoin, home);
        assert_eq!(e.url, "http://127.0.0.1:8332");
        assert_eq!(
            e.auth,
            Auth::Cookie(vec!["/home/u/.bitcoin/.cookie".into()])
        );
        assert_eq!(default_rpcport(Network::Testnet), 18332);
        assert_eq!(default_rpcport(Network::Testnet4), 48332);
        assert_eq!(default_rpcport(Network::Signet), 38332);
        let e = endpoint(
            &BitcoinOptions {
                rpcconnect: "::1".into(),
                rpcport: Some(1234),
                rpcuser: Some("u".into()),
                rpcpassword: Some("p".into()),
                datadir: Some("/d".into()),
                ..Default::default()
            },
            Network::Testnet,
            home,
        );
        assert_eq!(e.url, "http://[::1]:1234");
        assert_eq!(e.auth, Auth::UserPass("u".into(), "p".into()));
        assert_eq!(credentials(&e.auth), base64(b"u:p"));
        let e = endpoint(
            &BitcoinOptions {
                datadir: Some("/d".into()),
                ..Default::default()
            },
            Network::Signet,
            home,
        );
        assert_eq!(
            e.auth,
            Auth::Cookie(vec!["/d/signet/.cookie".into(), "/d/.cookie".into()])
        );
    }

    #[test]
    fn cookie_parsing_and_fallback() {
        assert_eq!(
            parse_cookie("__cookie__:abc123\n").as_deref(),
            Some("__cookie__:abc123")
        );
        assert_eq!(parse_cookie(""), None);
        assert_eq!(parse_cookie("nocolon"), None);
        assert_eq!(parse_cookie("__cookie__:"), None);
        let dir = std::env::temp_dir().join(format!("fulgur-cookie-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let paths = vec![dir.join("regtest/.cookie"), dir.join(".cookie")];
        assert!(read_cookie(&paths).is_err());
        assert_eq!(credentials(&Auth::Cookie(paths.clone())), base64(b":"));
        std::fs::write(dir.join(".cookie"), "__cookie__:s3cret").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_cookie(&paths).as_deref(), Ok("__cookie__:s3cret"));
        assert_eq!(
            credentials(&Auth::Cookie(paths)),
            base64(b"__cookie__:s3cret")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn chain_names_round_trip() {
        for n in [
            Network::Bitcoin,
            Network::Testnet,
            Network::Testnet4,
            Network::Signet,
            Network::Regtest,
        ] {
            assert_eq!(network_from_chain_name(bitcoind_chain_name(n)), Some(n));
        }
        assert_eq!(bitcoind_chain_name(Network::Testnet), "test");
        assert_eq!(bitcoind_chain_name(Network::Bitcoin), "main");
        assert_eq!(network_from_chain_name("testnet"), None);
        assert_eq!(
            bitcoin_network(Network::Testnet4),
            bitcoin::Network::Testnet4
        );
    }
}
