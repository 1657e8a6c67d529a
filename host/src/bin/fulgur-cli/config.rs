//! Where the RPC socket is: `<lightning-dir>/<network>/<rpc-file>`, learned from the
//! command line and the same configuration files `fulgurd` reads.

use std::path::{Path, PathBuf};

use crate::CliError;

/// Networks with a data directory of their own (CLN's chain names).
const NETWORKS: [&str; 7] = [
    "bitcoin",
    "testnet",
    "testnet4",
    "signet",
    "regtest",
    "liquid",
    "liquid-regtest",
];

/// What the command line says about the socket's location.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub lightning_dir: Option<String>,
    pub network: Option<String>,
    pub conf: Option<String>,
    pub rpc_file: Option<String>,
}

/// The resolved location of the socket.
#[derive(Debug, Clone)]
pub struct Location {
    /// `<lightning-dir>` as used (with `~` expanded).
    pub lightning_dir: PathBuf,
    /// The network name, which is also its subdirectory's name.
    pub network: String,
    /// The socket's full path.
    pub socket: PathBuf,
}

/// Settings found in a configuration file.
#[derive(Debug, Default)]
struct FileSettings {
    network: Option<String>,
    rpc_file: Option<String>,
}

/// Expands a leading `~` or `~/` to the home directory.
pub fn expand_tilde(path: &str) -> PathBuf {
    let rest = if path == "~" {
        Some("")
    } else {
        path.strip_prefix("~/")
    };
    match (rest, home_dir()) {
        (Some(""), Some(home)) => home,
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Some(PathBuf::from(h)),
        _ => std::env::home_dir(),
    }
}

fn check_network(name: &str, origin: &str) -> Result<String, CliError> {
    if NETWORKS.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(CliError::Usage(format!(
            "{origin}: unknown network name '{name}' (expected one of {})",
            NETWORKS.join(", ")
        )))
    }
}

/// Reads `key=value` settings. `must_exist` is for an explicit `--conf`; the implicit
/// files are optional. Unknown keys are ignored; `network` is honoured only where
/// `network_allowed` (CLN refuses it in a network's own config file).
fn read_config(
    path: &Path,
    must_exist: bool,
    network_allowed: bool,
) -> Result<FileSettings, CliError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileSettings::default());
        }
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            )));
        }
    };
    let mut out = FileSettings::default();
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        let origin = format!("{}:{}", path.display(), lineno + 1);
        match (key, value) {
            ("network", Some(v)) if network_allowed => {
                out.network = Some(check_network(v, &origin)?);
            }
            ("mainnet", None) if network_allowed => out.network = Some("bitcoin".into()),
            ("testnet" | "testnet4" | "signet" | "regtest", None) if network_allowed => {
                out.network = Some(key.to_string());
            }
            ("rpc-file", Some(v)) if !v.is_empty() => out.rpc_file = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(out)
}

/// Works out the socket path as `lightning-cli` does: command line first, then the
/// network's config file, then the base config file, then the defaults.
pub fn resolve(cli: &Overrides) -> Result<Location, CliError> {
    let lightning_dir = expand_tilde(cli.lightning_dir.as_deref().unwrap_or("~/.fulgur"));
    let cli_network = match &cli.network {
        Some(n) => Some(check_network(n, "--network")?),
        None => None,
    };

    let network;
    let mut rpc_file = cli.rpc_file.clone();
    if let Some(conf) = &cli.conf {
        let settings = read_config(&expand_tilde(conf), true, true)?;
        network = cli_network
            .or(settings.network)
            .unwrap_or_else(|| "bitcoin".into());
        rpc_file = rpc_file.or(settings.rpc_file);
    } else {
        let base = read_config(&lightning_dir.join("config"), false, true)?;
        network = cli_network
            .or(base.network)
            .unwrap_or_else(|| "bitcoin".into());
        let net = read_config(&lightning_dir.join(&network).join("config"), false, false)?;
        rpc_file = rpc_file.or(net.rpc_file).or(base.rpc_file);
    }
    let rpc_file = rpc_file.unwrap_or_else(|| "lightning-rpc".into());
    let rpc_path = expand_tilde(&rpc_file);
    let socket = if rpc_path.is_absolute() {
        rpc_path
    } else {
        lightning_dir.join(&network).join(rpc_path)
    };
    Ok(Location {
        lightning_dir,
        network,
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_expands_only_at_the_start() {
        let home = home_dir().expect("a home directory");
        assert_eq!(expand_tilde("~/x/y"), home.join("x/y"));
        assert_eq!(expand_tilde("~"), home);
        assert_eq!(expand_tilde("a/~/b"), PathBuf::from("a/~/b"));
        assert_eq!(expand_tilde("~user/b"), PathBuf::from("~user/b"));
    }

    #[test]
    fn unknown_networks_are_refused() {
        let o = Overrides {
            network: Some("mars".into()),
            ..Default::default()
        };
        assert!(matches!(resolve(&o), Err(CliError::Usage(_))));
    }
}
