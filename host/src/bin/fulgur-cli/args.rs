//! Command-line options of `fulgur-cli`, modelled on CLN's `lightning-cli`.

use clap::{ArgAction, Parser};

/// The command line as typed. Mutually exclusive flags (formats, param styles, networks)
/// override each other: the last one given wins, as with `lightning-cli`.
#[derive(Debug, Parser)]
#[command(
    name = "fulgur-cli",
    version,
    about = "Send one JSON-RPC command to fulgurd and print its answer.",
    long_about = "Send one JSON-RPC command to fulgurd and print its answer.\n\n\
        Run `fulgur-cli help` (no hyphens) for the list of RPC commands.",
    allow_negative_numbers = true,
    after_help = "Exit codes: 0 success, 1 fulgurd returned an error, 2 cannot talk to fulgurd, \
        3 usage error."
)]
pub struct Cli {
    /// Base directory; the network's subdirectory is under it [default: ~/.fulgur]
    #[arg(long = "lightning-dir", value_name = "DIR")]
    pub lightning_dir: Option<String>,

    /// Network: bitcoin, testnet, testnet4, signet or regtest [default: bitcoin]
    #[arg(long, value_name = "NETWORK",
          overrides_with_all = ["mainnet", "testnet", "testnet4", "signet", "regtest"])]
    pub network: Option<String>,

    /// Alias for --network=bitcoin
    #[arg(long, action = ArgAction::SetTrue,
          overrides_with_all = ["network", "testnet", "testnet4", "signet", "regtest"])]
    pub mainnet: bool,

    /// Alias for --network=testnet
    #[arg(long, action = ArgAction::SetTrue,
          overrides_with_all = ["network", "mainnet", "testnet4", "signet", "regtest"])]
    pub testnet: bool,

    /// Alias for --network=testnet4
    #[arg(long, action = ArgAction::SetTrue,
          overrides_with_all = ["network", "mainnet", "testnet", "signet", "regtest"])]
    pub testnet4: bool,

    /// Alias for --network=signet
    #[arg(long, action = ArgAction::SetTrue,
          overrides_with_all = ["network", "mainnet", "testnet", "testnet4", "regtest"])]
    pub signet: bool,

    /// Alias for --network=regtest
    #[arg(long, action = ArgAction::SetTrue,
          overrides_with_all = ["network", "mainnet", "testnet", "testnet4", "signet"])]
    pub regtest: bool,

    /// Configuration file to read instead of <lightning-dir>/config and
    /// <lightning-dir>/<network>/config
    #[arg(long, value_name = "FILE")]
    pub conf: Option<String>,

    /// JSON-RPC socket, relative to <lightning-dir>/<network> unless absolute
    /// [default: lightning-rpc]
    #[arg(long = "rpc-file", value_name = "FILE")]
    pub rpc_file: Option<String>,

    /// Use key=value for <PARAMS>
    #[arg(short = 'k', long, action = ArgAction::SetTrue, overrides_with_all = ["order", "json_params"])]
    pub keywords: bool,

    /// Use params in order for <PARAMS>
    #[arg(short = 'o', long, action = ArgAction::SetTrue, overrides_with_all = ["keywords", "json_params"])]
    pub order: bool,

    /// The single argument after METHOD is the whole JSON params value (object or array)
    #[arg(short = 'j', id = "json_params", action = ArgAction::SetTrue,
          overrides_with_all = ["keywords", "order"])]
    pub json_params: bool,

    /// Human-readable output (default for 'help')
    #[arg(short = 'H', long = "human-readable", action = ArgAction::SetTrue,
          overrides_with_all = ["json", "flat", "raw"])]
    pub human: bool,

    /// JSON output, indented (default unless 'help')
    #[arg(short = 'J', long, action = ArgAction::SetTrue,
          overrides_with_all = ["human", "flat", "raw"])]
    pub json: bool,

    /// Flatten output ('x.y[0].z=value' lines)
    #[arg(short = 'F', long, action = ArgAction::SetTrue,
          overrides_with_all = ["human", "json", "raw"])]
    pub flat: bool,

    /// Raw result, exactly as fulgurd sent it
    #[arg(short = 'R', long, action = ArgAction::SetTrue,
          overrides_with_all = ["human", "json", "flat"])]
    pub raw: bool,

    /// Notification level to show (io, trace, debug, info, unusual, broken), or none
    #[arg(short = 'N', long, value_name = "LEVEL", default_value = "info")]
    pub notifications: String,

    /// JSON filter restricting the fields of the reply
    #[arg(short = 'l', long, value_name = "JSON")]
    pub filter: Option<String>,

    /// The RPC command to run
    #[arg(value_name = "METHOD")]
    pub method: Option<String>,

    /// Its parameters: values in order, or key=value
    #[arg(value_name = "PARAMS")]
    pub params: Vec<String>,
}

/// How the answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Nothing chosen: JSON, or human for `help` and `"format-hint":"simple"` results.
    Default,
    Json,
    Human,
    Flat,
    Raw,
}

/// How the positional words after the method become `params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Keywords if the first word contains `=`, else ordered.
    Default,
    Keywords,
    Ordered,
    /// One word holding the whole params JSON.
    Json,
}

impl Cli {
    pub fn format(&self) -> Format {
        if self.human {
            Format::Human
        } else if self.json {
            Format::Json
        } else if self.flat {
            Format::Flat
        } else if self.raw {
            Format::Raw
        } else {
            Format::Default
        }
    }

    pub fn input(&self) -> Input {
        if self.keywords {
            Input::Keywords
        } else if self.order {
            Input::Ordered
        } else if self.json_params {
            Input::Json
        } else {
            Input::Default
        }
    }

    /// The network given on the command line, if any.
    pub fn network(&self) -> Option<String> {
        if self.mainnet {
            Some("bitcoin".into())
        } else if self.testnet {
            Some("testnet".into())
        } else if self.testnet4 {
            Some("testnet4".into())
        } else if self.signet {
            Some("signet".into())
        } else if self.regtest {
            Some("regtest".into())
        } else {
            self.network.clone()
        }
    }
}

/// Message levels as CLN names them, lowest first.
const LEVELS: [&str; 6] = ["io", "trace", "debug", "info", "unusual", "broken"];

/// Parses a log level name (case-insensitive; `error` and `warn` are accepted as CLN
/// does), giving its rank.
pub fn parse_level(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "error" => return Some(5),
        "warn" => return Some(4),
        _ => {}
    }
    LEVELS.iter().position(|l| *l == lower)
}

/// The `-N` setting: `None` means notifications are off.
pub fn notification_threshold(arg: &str) -> Result<Option<usize>, String> {
    if arg.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    parse_level(arg).map(Some).ok_or_else(|| {
        format!("invalid notification level '{arg}': use io, trace, debug, info, unusual, broken or none")
    })
}
