//! fulgurd's configuration: command line and config files, with CLN's option names.
//!
//! Sources, later ones winning for single-valued options and adding up for multi options:
//! `<lightning-dir>/config` (or `--conf`), `<lightning-dir>/<network>/config`,
//! `<lightning-dir>/<network>/config.setconfig` (written by `setconfig`), then the command
//! line. Core options are parsed and validated by clap; options that clap does not know
//! are kept aside as [`RawOpt`]s until plugins have declared theirs in their manifests
//! (see `fulgur_plugins::options`), because `--greeting=hi` only means something once a plugin
//! registered `greeting`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::log::LevelFilter;

pub use fulgur_base::Network;

/// How a core option takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreKind {
    /// One string; the last one given wins.
    Str,
    /// One integer.
    Int,
    /// `true`/`false`.
    Bool,
    /// Present or not.
    Flag,
    /// Any number of strings, in order.
    Multi,
    /// Several values allowed, but shown as one (the last) in `listconfigs`, as CLN does
    /// for `log-level`.
    Levels,
    /// An amount in msat (`NNN`, `NNNmsat`, `NNNsat`), shown as `value_msat`.
    Msat,
    /// Any number of integers, in order (`values_int`).
    MultiInt,
}

/// What Fulgur does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It does what CLN's does.
    Works,
    /// Accepted so that a CLN configuration starts Fulgur, but it changes nothing here: one
    /// `UNUSUAL` line at start says so, with this reason.
    None(&'static str),
}

/// A core (non-plugin) option.
#[derive(Debug, Clone, Copy)]
pub struct CoreOption {
    /// The long name, without `--`.
    pub name: &'static str,
    /// How it takes values.
    pub kind: CoreKind,
    /// Its default, shown in `listconfigs` with source `default`.
    pub default: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
    /// Only valid on the command line (not in config files).
    pub cmdline_only: bool,
    /// Whether it has an effect in Fulgur.
    pub effect: Effect,
}

/// A CLN option Fulgur accepts without acting on it, for the reason `why`.
const fn inert(
    name: &'static str,
    kind: CoreKind,
    help: &'static str,
    why: &'static str,
) -> CoreOption {
    CoreOption {
        name,
        kind,
        default: None,
        help,
        cmdline_only: false,
        effect: Effect::None(why),
    }
}

const fn opt(
    name: &'static str,
    kind: CoreKind,
    default: Option<&'static str>,
    help: &'static str,
) -> CoreOption {
    CoreOption {
        name,
        kind,
        default,
        help,
        cmdline_only: false,
        effect: Effect::Works,
    }
}

/// Every core option, in `--help` order.
pub const CORE_OPTIONS: &[CoreOption] = &[
    CoreOption {
        cmdline_only: true,
        ..opt(
            "lightning-dir",
            CoreKind::Str,
            None,
            "Set base directory: network-specific subdirectory is under here (default ~/.fulgur)",
        )
    },
    CoreOption {
        cmdline_only: true,
        ..opt(
            "conf",
            CoreKind::Str,
            None,
            "Specify configuration file (default <lightning-dir>/config)",
        )
    },
    opt(
        "network",
        CoreKind::Str,
        Some("bitcoin"),
        "Select the network: bitcoin, testnet, testnet4, signet, regtest",
    ),
    opt(
        "mainnet",
        CoreKind::Flag,
        None,
        "Alias for --network=bitcoin",
    ),
    opt(
        "testnet",
        CoreKind::Flag,
        None,
        "Alias for --network=testnet",
    ),
    opt(
        "testnet4",
        CoreKind::Flag,
        None,
        "Alias for --network=testnet4",
    ),
    opt("signet", CoreKind::Flag, None, "Alias for --network=signet"),
    opt(
        "regtest",
        CoreKind::Flag,
        None,
        "Alias for --network=regtest",
    ),
    opt(
        "alias",
        CoreKind::Str,
        None,
        "Up to 32 bytes of UTF-8 characters to tag your node",
    ),
    opt("rgb", CoreKind::Str, None, "RRGGBB hex color for node"),
    opt(
        "rpc-file",
        CoreKind::Str,
        Some("lightning-rpc"),
        "Set JSON-RPC socket (relative to the network directory unless absolute)",
    ),
    opt(
        "rpc-file-mode",
        CoreKind::Str,
        Some("0600"),
        "Set the file mode (permissions) for the JSON-RPC socket",
    ),
    opt(
        "log-level",
        CoreKind::Levels,
        Some("info"),
        "Log level (io, trace, debug, info, unusual, broken) [:prefix], default info",
    ),
    opt(
        "log-file",
        CoreKind::Multi,
        None,
        "Log to this file (instead of stdout); '-' means stdout",
    ),
    opt(
        "plugin",
        CoreKind::Multi,
        None,
        "Add a plugin to be run (can be used multiple times)",
    ),
    opt(
        "plugin-dir",
        CoreKind::Multi,
        None,
        "Add a directory to load plugins from (can be used multiple times)",
    ),
    opt(
        "clear-plugins",
        CoreKind::Flag,
        None,
        "Remove all plugins added before this option",
    ),
    opt(
        "disable-plugin",
        CoreKind::Multi,
        None,
        "Disable a particular plugin by filename/name",
    ),
    opt(
        "important-plugin",
        CoreKind::Multi,
        None,
        "Add an important plugin to be run: if it dies the node shuts down",
    ),
    opt(
        "allow-deprecated-apis",
        CoreKind::Bool,
        Some("false"),
        "Enable deprecated options, JSONRPC commands, fields, etc.",
    ),
    opt(
        "plugin-timeout",
        CoreKind::Int,
        Some("60"),
        "Seconds a plugin has to answer getmanifest and, separately, init (Fulgur extension)",
    ),
    opt(
        "plugin-shutdown-grace",
        CoreKind::Int,
        Some("30"),
        "Seconds plugins subscribed to 'shutdown' have to exit (Fulgur extension)",
    ),
    opt(
        "bitcoin-rpcconnect",
        CoreKind::Str,
        Some("127.0.0.1"),
        "bitcoind RPC host to connect to",
    ),
    opt(
        "bitcoin-rpcport",
        CoreKind::Int,
        None,
        "bitcoind RPC port (default per network: 8332, 18332 testnet, 48332 testnet4, 38332 signet, 18443 regtest)",
    ),
    opt(
        "bitcoin-rpcuser",
        CoreKind::Str,
        None,
        "bitcoind RPC username (default: the cookie file in bitcoin-datadir)",
    ),
    opt(
        "bitcoin-rpcpassword",
        CoreKind::Str,
        None,
        "bitcoind RPC password",
    ),
    opt(
        "bitcoin-datadir",
        CoreKind::Str,
        None,
        "bitcoind data directory, for its .cookie file (default ~/.bitcoin)",
    ),
    opt(
        "bitcoin-retry-timeout",
        CoreKind::Int,
        Some("60"),
        "Seconds a broadcast keeps being retried while bitcoind is unreachable",
    ),
    opt(
        "hold-safety-blocks",
        CoreKind::Int,
        Some("6"),
        "Blocks before LDK's own claim deadline at which fulgurd fails back an HTLC a plugin still holds",
    ),
    opt(
        "max-concurrent-htlcs",
        CoreKind::Int,
        Some("483"),
        "Most HTLCs a peer may have in flight to us on one channel (BOLT 2's maximum is 483)",
    ),
    opt(
        "min-emergency-msat",
        CoreKind::Msat,
        Some("25000000"),
        "Amount to leave in the wallet for spending anchor closes",
    ),
    opt(
        "bind-addr",
        CoreKind::Multi,
        None,
        "Listen for Lightning peers on host:port (default 0.0.0.0:9735, none on regtest)",
    ),
    opt(
        "addr",
        CoreKind::Multi,
        None,
        "Listen on and announce host:port",
    ),
    opt(
        "announce-addr",
        CoreKind::Multi,
        None,
        "Announce host:port to the network without listening on it",
    ),
    opt(
        "pid-file",
        CoreKind::Str,
        None,
        "Specify pid file (default <lightning-dir>/lightningd-<network>.pid; relative to the network directory unless absolute)",
    ),
    opt(
        "developer",
        CoreKind::Flag,
        None,
        "Enable developer commands (dev)",
    ),
    opt(
        "fulgur-import-sqlite",
        CoreKind::Str,
        None,
        "On an empty PostgreSQL --wallet, first copy this SQLite node database into it (a node moving to PostgreSQL; Fulgur extension)",
    ),
    opt(
        "fulgur-rpc-max-connections",
        CoreKind::Int,
        Some("256"),
        "Most RPC connections open at once; more are answered with an error and closed (Fulgur extension)",
    ),
    opt(
        "fulgur-rpc-max-request",
        CoreKind::Int,
        Some("16777216"),
        "Largest RPC request in bytes; a bigger one is answered with an error and its connection closed (Fulgur extension)",
    ),
    opt(
        "fulgur-rpc-request-timeout",
        CoreKind::Int,
        Some("30"),
        "Seconds an RPC request may take to arrive once its first byte has; then its connection is closed (Fulgur extension)",
    ),
    opt(
        "wasm-sandbox",
        CoreKind::Multi,
        None,
        "PLUGIN:KEY=VALUE for a WASM plugin (or * for all): memory-mb, fuel, allow-rpc, add-rpc, hold, max-failures, failure-window-secs (docs/WASM.md)",
    ),
    // CLN's other lightningd options (lightningd/options.c, log.c; `bitcoin-*` are bcli's).
    opt(
        "fee-base",
        CoreKind::Int,
        Some("1000"),
        "Millisatoshi minimum to charge for HTLC forwarding, for new channels",
    ),
    opt(
        "fee-per-satoshi",
        CoreKind::Int,
        Some("0"),
        "Microsatoshi fee for every satoshi in HTLC forwarding, for new channels",
    ),
    opt(
        "cltv-delta",
        CoreKind::Int,
        Some("72"),
        "Number of blocks for cltv_expiry_delta (at least 48: LDK's minimum)",
    ),
    opt(
        "cltv-final",
        CoreKind::Int,
        Some("42"),
        "Number of blocks for final cltv_expiry of invoices (at least 42: LDK's minimum)",
    ),
    opt(
        "funding-confirms",
        CoreKind::Int,
        Some("3"),
        "Confirmations required for a channel funded by a peer",
    ),
    opt(
        "htlc-minimum-msat",
        CoreKind::Msat,
        Some("1"),
        "The default minimal value an HTLC must carry in order to be forwardable for new channels",
    ),
    inert(
        "htlc-maximum-msat",
        CoreKind::Msat,
        "The default maximal value an HTLC must carry in order to be forwardable for new channel",
        "LDK derives htlc_maximum_msat from the channel",
    ),
    opt(
        "max-dust-htlc-exposure-msat",
        CoreKind::Msat,
        None,
        "Max HTLC amount that can be trimmed (default: LDK's feerate-based limit)",
    ),
    opt(
        "min-capacity-sat",
        CoreKind::Int,
        Some("1000"),
        "Minimum capacity of a channel a peer opens to us (at least 1000: LDK's minimum)",
    ),
    opt(
        "watchtime-blocks",
        CoreKind::Int,
        Some("144"),
        "Blocks before peer can unilaterally spend funds (at least 144: LDK's minimum)",
    ),
    inert(
        "max-locktime-blocks",
        CoreKind::Int,
        "Maximum blocks funds may be locked for (deprecated in CLN)",
        "LDK's limit on a peer's to_self_delay is fixed",
    ),
    opt(
        "large-channels",
        CoreKind::Flag,
        None,
        "Allow channels larger than 2^24 satoshis (always on in Fulgur)",
    ),
    opt(
        "ignore-fee-limits",
        CoreKind::Bool,
        Some("false"),
        "Accept any commitment feerate a peer proposes (our estimates' limits are ignored)",
    ),
    inert(
        "commit-time",
        CoreKind::Int,
        "Time after changes before sending out COMMIT",
        "LDK sends commitments as soon as updates are processed",
    ),
    opt(
        "rescan",
        CoreKind::Int,
        None,
        "Number of blocks to rescan from the current head, or absolute blockheight if negative",
    ),
    opt(
        "daemon",
        CoreKind::Flag,
        None,
        "Run in the background, suppress stdout/stderr",
    ),
    opt(
        "log-timestamps",
        CoreKind::Bool,
        Some("true"),
        "Prefix log messages with timestamp",
    ),
    opt("log-prefix", CoreKind::Str, Some(""), "Log prefix string"),
    opt(
        "autolisten",
        CoreKind::Bool,
        Some("true"),
        "If true, listen on default port 0.0.0.0:9735 when no address is given",
    ),
    opt(
        "offline",
        CoreKind::Flag,
        None,
        "Start in offline-mode (do not listen for or reconnect to peers)",
    ),
    opt(
        "proxy",
        CoreKind::Str,
        None,
        "Set a socks v5 proxy IP address and port",
    ),
    opt(
        "always-use-proxy",
        CoreKind::Bool,
        Some("false"),
        "Use the proxy always",
    ),
    opt(
        "disable-dns",
        CoreKind::Flag,
        None,
        "Disable DNS lookups of peers",
    ),
    opt(
        "announce-addr-discovered",
        CoreKind::Str,
        Some("auto"),
        "Explicitly turns IP discovery 'on' or 'off' ('auto')",
    ),
    opt(
        "announce-addr-discovered-port",
        CoreKind::Int,
        None,
        "Sets the public TCP port to use for announcing discovered IPs",
    ),
    inert(
        "announce-addr-dns",
        CoreKind::Bool,
        "Use DNS entries in --announce-addr (deprecated in CLN)",
        "only configured addresses are announced",
    ),
    opt(
        "invoices-onchain-fallback",
        CoreKind::Flag,
        None,
        "Include an onchain address in invoices and mark them as paid if payment is received on-chain",
    ),
    inert(
        "require-confirmed-inputs",
        CoreKind::Bool,
        "Confirmed inputs for interactive tx negotiation",
        "no dual-funded channels",
    ),
    opt(
        "wallet",
        CoreKind::Str,
        None,
        "Location of the wallet database",
    ),
    inert(
        "database-upgrade",
        CoreKind::Bool,
        "Set to true to allow database upgrades even on non-final releases",
        "Fulgur's database has no such guard",
    ),
    inert(
        "experimental-dual-fund",
        CoreKind::Flag,
        "Enable dual-funding channels",
        "no dual-funded channels",
    ),
    inert(
        "experimental-simple-close",
        CoreKind::Flag,
        "Enable option_simple_close",
        "LDK closes with the legacy protocol",
    ),
    inert(
        "experimental-splicing",
        CoreKind::Flag,
        "Enable splicing",
        "no splicing",
    ),
    inert(
        "experimental-shutdown-wrong-funding",
        CoreKind::Flag,
        "Allow shutdown with alternate txids",
        "not supported by LDK",
    ),
    inert(
        "experimental-peer-storage",
        CoreKind::Flag,
        "Store and restore peers' backups",
        "peer storage follows LDK",
    ),
    opt(
        "experimental-anchors",
        CoreKind::Flag,
        None,
        "Anchor channels (always on in Fulgur)",
    ),
    inert(
        "encrypted-hsm",
        CoreKind::Flag,
        "Set the password and encrypt hsm_secret with it (deprecated in CLN)",
        "hsm_secret is not encrypted",
    ),
    inert(
        "hsm-passphrase",
        CoreKind::Flag,
        "Prompt for a passphrase for the hsm_secret",
        "hsm_secret is not encrypted",
    ),
    opt(
        "recover",
        CoreKind::Str,
        None,
        "Populate hsm_secret with the given codex32 secret or 64 hex characters, then recover channels from emergency.recover",
    ),
    inert(
        "force-feerates",
        CoreKind::Str,
        "Set testing feerates",
        "feerates come from bitcoind",
    ),
    inert(
        "subdaemon",
        CoreKind::Multi,
        "Arg specified as SUBDAEMON:PATH",
        "Fulgur has no subdaemons",
    ),
    inert(
        "tor-service-password",
        CoreKind::Str,
        "Set a Tor hidden service password",
        "no Tor control",
    ),
    inert(
        "commit-fee",
        CoreKind::Int,
        "Percentage of fee to request for their commitment",
        "commitment feerates come from the fee estimates",
    ),
    inert(
        "commit-feerate-offset",
        CoreKind::Int,
        "Additional feerate per kw to apply to feerate updates",
        "commitment feerates come from the fee estimates",
    ),
    inert(
        "autoconnect-seeker-peers",
        CoreKind::Int,
        "Seek to be connected to this many peers for gossip",
        "gossip comes from channel peers",
    ),
    inert(
        "message-padding",
        CoreKind::Bool,
        "Pad onion messages",
        "LDK pads onion messages itself",
    ),
    inert(
        "accept-htlc-tlv-type",
        CoreKind::MultiInt,
        "HTLC TLV type to accept (can be used multiple times)",
        "LDK accepts custom TLVs of its own accord",
    ),
    inert(
        "payment-fronting-node",
        CoreKind::Multi,
        "Node to use as a fronting node for BOLT12 payments",
        "no BOLT12 yet",
    ),
    inert(
        "i-promise-to-fix-broken-api-user",
        CoreKind::Multi,
        "Re-enable a long-deprecated API",
        "no deprecated APIs to re-enable",
    ),
    inert(
        "bookkeeper-dir",
        CoreKind::Str,
        "Old bookkeeper directory, for migration",
        "no bookkeeper database to migrate",
    ),
    inert(
        "bookkeeper-db",
        CoreKind::Str,
        "Old bookkeeper database, for migration",
        "no bookkeeper database to migrate",
    ),
    inert(
        "bitcoin-cli",
        CoreKind::Str,
        "bitcoin-cli pathname",
        "Fulgur talks to bitcoind's RPC itself",
    ),
    opt(
        "bitcoin-rpcclienttimeout",
        CoreKind::Int,
        Some("60"),
        "bitcoind RPC timeout in seconds during HTTP requests",
    ),
];

/// Options of CLN's built-in plugins that the node itself serves: `exposesecret` is a
/// built-in command here (host/rpc/src/rpc/commands/exposesecret.rs).
pub const CORE_SERVED_PLUGIN_OPTIONS: &[&str] = &["exposesecret-passphrase"];

/// The options of CLN's built-in plugins (autoclean, bcli's are core here, xpay, askrene,
/// funder, bookkeeper, offers, pay, renepay, exposesecret, cln-grpc, clnrest, lsps,
/// currencyrate). They are not core options: a plugin that declares one (a real cln-grpc, our
/// own plugins) takes it as in CLN. One that no plugin declares is accepted with an
/// `UNUSUAL` line instead of stopping fulgurd, and shown by `listconfigs` as given.
pub const CLN_PLUGIN_OPTIONS: &[CoreOption] = &[
    pinert("autoclean-cycle", CoreKind::Int),
    pinert("autoclean-succeededforwards-age", CoreKind::Int),
    pinert("autoclean-failedforwards-age", CoreKind::Int),
    pinert("autoclean-succeededpays-age", CoreKind::Int),
    pinert("autoclean-failedpays-age", CoreKind::Int),
    pinert("autoclean-paidinvoices-age", CoreKind::Int),
    pinert("autoclean-expiredinvoices-age", CoreKind::Int),
    pinert("autoclean-networkevents-age", CoreKind::Int),
    pinert("xpay-handle-pay", CoreKind::Bool),
    pinert("xpay-slow-mode", CoreKind::Bool),
    pinert("xpay-user-layer", CoreKind::Multi),
    pinert("askrene-timeout", CoreKind::Int),
    pinert("askrene-max-threads", CoreKind::Int),
    pinert("funder-policy", CoreKind::Str),
    pinert("funder-policy-mod", CoreKind::Str),
    pinert("funder-min-their-funding", CoreKind::Str),
    pinert("funder-max-their-funding", CoreKind::Str),
    pinert("funder-per-channel-min", CoreKind::Str),
    pinert("funder-per-channel-max", CoreKind::Str),
    pinert("funder-reserve-tank", CoreKind::Str),
    pinert("funder-fuzz-percent", CoreKind::Int),
    pinert("funder-fund-probability", CoreKind::Int),
    pinert("funder-lease-requests-only", CoreKind::Bool),
    pinert("lease-fee-base-sat", CoreKind::Str),
    pinert("lease-fee-basis", CoreKind::Int),
    pinert("lease-funding-weight", CoreKind::Int),
    pinert("channel-fee-max-base-msat", CoreKind::Str),
    pinert("channel-fee-max-proportional-thousandths", CoreKind::Int),
    pinert("bkpr-currency", CoreKind::Str),
    pinert("fetchinvoice-noconnect", CoreKind::Flag),
    pinert("disable-mpp", CoreKind::Flag),
    pinert("renepay-debug-mcf", CoreKind::Flag),
    pinert("renepay-debug-payflow", CoreKind::Flag),
    pinert("exposesecret-passphrase", CoreKind::Str),
    pinert("grpc-port", CoreKind::Int),
    pinert("grpc-host", CoreKind::Str),
    pinert("grpc-msg-buffer-size", CoreKind::Int),
    pinert("clnrest-port", CoreKind::Int),
    pinert("clnrest-certs", CoreKind::Str),
    pinert("clnrest-protocol", CoreKind::Str),
    pinert("clnrest-host", CoreKind::Str),
    pinert("clnrest-cors-origins", CoreKind::Multi),
    pinert("clnrest-csp", CoreKind::Str),
    pinert("clnrest-swagger-root", CoreKind::Str),
    pinert("experimental-lsps-client", CoreKind::Flag),
    pinert("experimental-lsps2-service", CoreKind::Flag),
    pinert("experimental-lsps2-promise-secret", CoreKind::Str),
    pinert("currencyrate-add-source", CoreKind::Multi),
    pinert("currencyrate-disable-source", CoreKind::Multi),
];

const fn pinert(name: &'static str, kind: CoreKind) -> CoreOption {
    inert(
        name,
        kind,
        "An option of one of CLN's built-in plugins",
        "no plugin registered it",
    )
}

/// The CLN plugin option called `name`, if it is one.
pub fn cln_plugin_option(name: &str) -> Option<&'static CoreOption> {
    CLN_PLUGIN_OPTIONS.iter().find(|o| o.name == name)
}

pub use fulgur_plugins::discovery::PluginDirective;
pub use fulgur_plugins::options::{RawOpt, Source};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network.
    pub network: Network,
    /// Base directory (`~/.fulgur`), absolute.
    pub lightning_dir: PathBuf,
    /// `<lightning-dir>/<network>`, absolute.
    pub net_dir: PathBuf,
    /// `rpc-file` as configured.
    pub rpc_file: String,
    /// Absolute path of the RPC socket.
    pub rpc_path: PathBuf,
    /// Socket permissions.
    pub rpc_file_mode: u32,
    /// Log level filters.
    pub log_filters: Vec<LevelFilter>,
    /// Log files (`-` is stdout); empty means stdout.
    pub log_files: Vec<PathBuf>,
    /// Node alias, if set.
    pub alias: Option<String>,
    /// Node color, if set (6 hex digits).
    pub rgb: Option<String>,
    /// Plugin directives in order.
    pub plugin_directives: Vec<PluginDirective>,
    /// `--allow-deprecated-apis`.
    pub allow_deprecated_apis: bool,
    /// Handshake timeout per step.
    pub plugin_timeout: Duration,
    /// Grace period for plugins at shutdown and `plugin stop`.
    pub plugin_shutdown_grace: Duration,
    /// Every core option occurrence that was given, in order, for `listconfigs`.
    pub core_given: Vec<RawOpt>,
    /// Options no core option claims: plugin options, checked once manifests are in.
    pub plugin_opts: Vec<RawOpt>,
    /// The config files that were read, for `setconfig` persistence.
    pub setconfig_file: PathBuf,
    /// The `--bitcoin-*` options.
    pub bitcoin: crate::chain::BitcoinOptions,
    /// Where to listen for Lightning peers (`--bind-addr`, `--addr`, or the default).
    pub bind_addrs: Vec<crate::lightning::net::NetAddr>,
    /// What to announce (`--addr`, `--announce-addr`).
    pub announce_addrs: Vec<crate::lightning::net::NetAddr>,
    /// `--hold-safety-blocks`: margin before the claim deadline of a held HTLC.
    pub hold_safety_blocks: u32,
    /// The channel options (`--max-concurrent-htlcs`, `--fee-base`, `--fee-per-satoshi`,
    /// `--cltv-delta`, `--funding-confirms`, `--htlc-minimum-msat`,
    /// `--max-dust-htlc-exposure-msat`, `--min-capacity-sat`, `--watchtime-blocks`).
    pub channels: crate::lightning::ChannelSettings,
    /// `--cltv-final`: the `min_final_cltv_expiry` of invoices that give no `cltv`, raised
    /// to LDK's minimum ([`crate::lightning::MIN_FINAL_CLTV`]).
    pub cltv_final: u32,
    /// `--ignore-fee-limits`: accept any commitment feerate a peer proposes.
    pub ignore_fee_limits: bool,
    /// `--log-timestamps`: log lines start with their time.
    pub log_timestamps: bool,
    /// `--log-prefix`: text at the start of every log line.
    pub log_prefix: String,
    /// `--offline`: neither listen for peers nor reconnect to them.
    pub offline: bool,
    /// `--recover`: the secret (codex32 or hex) to write `hsm_secret` from; the node then
    /// fires the `recover` hook and recovers the channels of `emergency.recover`.
    pub recover: Option<String>,
    /// `--proxy` with `--always-use-proxy`: the SOCKS5 proxy for `.onion` peers (and for
    /// every peer when `always` is set).
    pub proxy: Option<crate::lightning::net::Proxy>,
    /// `--daemon`: run in the background (it needs `--log-file`).
    pub daemon: bool,
    /// `--invoices-onchain-fallback`: invoices carry a fresh wallet address, and a deposit
    /// there pays them.
    pub invoices_onchain_fallback: bool,
    /// `--announce-addr-discovered` and `--announce-addr-discovered-port`.
    pub discovery: crate::lightning::discovery::Discovery,
    /// `--rescan`: the on-chain wallet scans again from this many blocks below the tip
    /// (positive) or from this height (negative, as CLN).
    pub rescan: Option<i64>,
    /// `--disable-dns`: peers' host names are not resolved (a name given to `connect` fails,
    /// unless the proxy resolves it).
    pub disable_dns: bool,
    /// What to log at `UNUSUAL` once the log is open: options given that have no effect
    /// here, and values raised to LDK's minimums.
    pub notes: Vec<String>,
    /// `--min-emergency-msat`: what the wallet keeps for anchor fee bumps (CLN's option).
    pub min_emergency_msat: u64,
    /// `--wasm-sandbox` rules, in the order given.
    pub wasm_sandbox: Vec<crate::plugin::wasm::SandboxRule>,
    /// `--pid-file`, absolute (default `<lightning-dir>/lightningd-<network>.pid`).
    pub pid_file: PathBuf,
    /// The database `--wallet` names: an SQLite file, absolute (`sqlite3://PATH`, relative
    /// to the network directory, as CLN's; default `<network dir>/fulgur.sqlite3`), or a
    /// PostgreSQL database (`postgres://...`).
    pub database: Database,
    /// `--fulgur-import-sqlite`: an SQLite node database (relative to the network
    /// directory) copied into an empty PostgreSQL `--wallet` at start.
    pub import_sqlite: Option<PathBuf>,
    /// `--developer`: the `dev` command is available.
    pub developer: bool,
    /// The RPC server's limits (`--fulgur-rpc-*`).
    pub rpc_limits: RpcLimits,
}

/// Limits on RPC clients, so that a buggy or hostile one cannot exhaust the node's memory
/// or file descriptors (CLN has none of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Largest request, in bytes.
    pub max_request: usize,
    /// Time a request may take to arrive, from its first byte.
    pub request_timeout: Duration,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_connections: 256,
            max_request: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What `fulgurd` was asked to do.
#[derive(Debug)]
pub enum Invocation {
    /// Run the node.
    Run(Box<Config>),
    /// Print help (needs the plugins' manifests for their options).
    Help(Box<Config>),
    /// Print the version.
    Version,
}

/// A configuration error: printed and fulgurd exits with code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the node keeps its state (`--wallet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (absolute path), and the second file every transaction is written
    /// to as well (`sqlite3://MAIN:BACKUP`).
    Sqlite(PathBuf, Option<PathBuf>),
    /// A PostgreSQL database, by its connection string (`postgres://user:pw@host:port/db`).
    Postgres(String),
}

impl Database {
    /// How logs and errors name it: the file, or the DSN without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(p, None) => p.display().to_string(),
            Database::Sqlite(p, Some(b)) => format!("{} (backup {})", p.display(), b.display()),
            Database::Postgres(dsn) => hide_password(dsn),
        }
    }
}

/// `dsn` with the password of its `user:password@` part replaced by `***`.
pub fn hide_password(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return dsn.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return dsn.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => dsn.to_string(),
    }
}

/// The database `--wallet` names, with CLN's DSNs: `sqlite3://PATH` and
/// `postgres://user:password@host:port/dbname` (also `postgresql://`), and
/// `sqlite3://MAIN:BACKUP`, a second SQLite file written in the same transactions (both
/// relative to the network directory).
pub fn database_path(wallet: Option<&str>, net_dir: &Path) -> Result<Database, ConfigError> {
    let Some(dsn) = wallet else {
        return Ok(Database::Sqlite(net_dir.join("fulgur.sqlite3"), None));
    };
    if let Some(path) = dsn.strip_prefix("sqlite3://") {
        if path.is_empty() {
            return Err(err("--wallet: sqlite3:// needs a file path"));
        }
        if let Some((main, backup)) = path.split_once(':') {
            if main.is_empty() || backup.is_empty() || backup.contains(':') {
                return Err(err(format!(
                    "--wallet={dsn}: expected sqlite3://MAIN:BACKUP, two file paths"
                )));
            }
            let (main, backup) = (net_dir.join(main), net_dir.join(backup));
            if main == backup {
                return Err(err(format!(
                    "--wallet={dsn}: the backup must be another file than the main one"
                )));
            }
            return Ok(Database::Sqlite(main, Some(backup)));
        }
        return Ok(Database::Sqlite(net_dir.join(path), None));
    }
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        return Ok(Database::Postgres(dsn.to_string()));
    }
    Err(err(format!(
        "--wallet={}: unknown DSN scheme (expected sqlite3://PATH or postgres://...)",
        hide_password(dsn)
    )))
}

fn err(s: impl Into<String>) -> ConfigError {
    ConfigError(s.into())
}

/// The clap command for the core options (also renders `--help`).
pub fn command() -> Command {
    let mut cmd = Command::new("fulgurd")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Fulgur: a plugin-first Lightning node, CLN-compatible RPC and plugin protocol")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args_override_self(true)
        .no_binary_name(true);
    for o in CORE_OPTIONS {
        let mut arg = Arg::new(o.name).long(o.name).help(o.help);
        arg = match o.kind {
            CoreKind::Flag => arg.action(ArgAction::SetTrue),
            CoreKind::Multi | CoreKind::Levels => arg.action(ArgAction::Append).num_args(1),
            CoreKind::MultiInt => arg
                .action(ArgAction::Append)
                .num_args(1)
                .value_parser(clap::value_parser!(i64)),
            CoreKind::Str => arg.action(ArgAction::Set).num_args(1),
            CoreKind::Int => arg
                .action(ArgAction::Set)
                .num_args(1)
                .value_parser(clap::value_parser!(i64)),
            CoreKind::Bool => arg
                .action(ArgAction::Set)
                .num_args(1)
                .value_parser(parse_bool),
            CoreKind::Msat => arg
                .action(ArgAction::Set)
                .num_args(1)
                .value_parser(parse_msat),
        };
        if o.name == "network" {
            arg = arg.value_parser([
                "bitcoin", "mainnet", "testnet", "testnet4", "signet", "regtest",
            ]);
        }
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        Arg::new("help")
            .short('h')
            .long("help")
            .action(ArgAction::SetTrue)
            .help("Print help, including plugin options"),
    )
    .arg(
        Arg::new("version")
            .short('V')
            .long("version")
            .action(ArgAction::SetTrue)
            .help("Print version"),
    )
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(format!("'{s}' is not a bool, must be true or false")),
    }
}

/// An amount as CLN takes it for msat options: `NNN` or `NNNmsat` (msat), `NNNsat`.
pub fn parse_msat(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' should be a millisatoshi amount");
    if let Some(n) = s.strip_suffix("msat") {
        n.parse::<u64>().map_err(|_| bad())
    } else if let Some(n) = s.strip_suffix("sat") {
        n.parse::<u64>()
            .ok()
            .and_then(|v| v.checked_mul(1000))
            .ok_or_else(bad)
    } else {
        s.parse::<u64>().map_err(|_| bad())
    }
}

fn core(name: &str) -> Option<&'static CoreOption> {
    CORE_OPTIONS.iter().find(|o| o.name == name)
}

/// Splits the command line into option occurrences. Core options that take a value may
/// have it in the next argument; unknown (plugin) options too, unless it starts with `-`.
pub fn split_cmdline(args: &[String]) -> Result<Vec<RawOpt>, ConfigError> {
    let mut out = vec![];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let body = match a.as_str() {
            "-h" => "help",
            "-V" => "version",
            s if s.starts_with("--") && s.len() > 2 => s.trim_start_matches("--"),
            s => {
                return Err(err(format!(
                    "unexpected argument '{s}': options look like --name=value"
                )));
            }
        };
        let (name, mut value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        let takes_value = match core(&name) {
            Some(o) => o.kind != CoreKind::Flag,
            None => !matches!(name.as_str(), "help" | "version"),
        };
        if value.is_none()
            && takes_value
            && let Some(next) = args
                .get(i)
                .filter(|n| !n.starts_with('-') || core(&name).is_some())
        {
            value = Some(next.clone());
            i += 1;
        }
        out.push(RawOpt {
            name,
            value,
            source: Source::Cmdline,
        });
    }
    Ok(out)
}

/// Reads a config file: `key=value` or `key` lines, `#` comments. A missing file gives
/// `Ok(None)`.
pub fn read_config_file(path: &Path) -> Result<Option<Vec<RawOpt>>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(err(format!(
                "cannot read config file {}: {e}",
                path.display()
            )));
        }
    };
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("--").unwrap_or(line);
        let (name, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (line.to_string(), None),
        };
        if core(&name).is_some_and(|o| o.cmdline_only) {
            return Err(err(format!(
                "{}:{}: {name} can only be given on the command line",
                path.display(),
                n + 1
            )));
        }
        out.push(RawOpt {
            name,
            value,
            source: Source::File(path.to_path_buf(), n + 1),
        });
    }
    Ok(Some(out))
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn absolute(p: &Path) -> PathBuf {
    let p = if let Ok(rest) = p.strip_prefix("~") {
        home_dir().join(rest)
    } else {
        p.to_path_buf()
    };
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
    }
}

fn last<'a>(raw: &'a [RawOpt], name: &str) -> Option<&'a RawOpt> {
    raw.iter().rev().find(|o| o.name == name)
}

fn network_from(raw: &[RawOpt]) -> Result<Option<Network>, ConfigError> {
    let mut net = None;
    for o in raw {
        let n = match o.name.as_str() {
            "network" => {
                let v = o.value.as_deref().unwrap_or("");
                Some(Network::parse(v).ok_or_else(|| {
                    err(format!(
                        "unknown network '{v}' (bitcoin, testnet, testnet4, signet, regtest)"
                    ))
                })?)
            }
            "mainnet" => Some(Network::Bitcoin),
            "testnet" => Some(Network::Testnet),
            "testnet4" => Some(Network::Testnet4),
            "signet" => Some(Network::Signet),
            "regtest" => Some(Network::Regtest),
            _ => None,
        };
        if n.is_some() {
            net = n;
        }
    }
    Ok(net)
}

/// Parses the command line (without the program name) and the config files it points to.
pub fn load(args: &[String]) -> Result<Invocation, ConfigError> {
    let cmdline = split_cmdline(args)?;
    if cmdline.iter().any(|o| o.name == "version") {
        return Ok(Invocation::Version);
    }
    let lightning_dir = absolute(Path::new(
        last(&cmdline, "lightning-dir")
            .and_then(|o| o.value.as_deref())
            .unwrap_or("~/.fulgur"),
    ));
    let (base_conf, explicit) = match last(&cmdline, "conf").and_then(|o| o.value.as_deref()) {
        Some(c) => (absolute(Path::new(c)), true),
        None => (lightning_dir.join("config"), false),
    };
    let base = read_config_file(&base_conf)?;
    if base.is_none() && explicit {
        return Err(err(format!(
            "config file {} does not exist",
            base_conf.display()
        )));
    }
    let base = base.unwrap_or_default();
    let network = network_from(&cmdline)?
        .or(network_from(&base)?)
        .unwrap_or(Network::Bitcoin);
    let net_dir = lightning_dir.join(network.as_str());
    let net_conf = read_config_file(&net_dir.join("config"))?.unwrap_or_default();
    let setconfig_file = net_dir.join("config.setconfig");
    let setconf = read_config_file(&setconfig_file)?.unwrap_or_default();
    if network_from(&net_conf)?.is_some_and(|n| n != network) {
        return Err(err(format!(
            "{}: network setting does not match the directory",
            net_dir.join("config").display()
        )));
    }

    let all: Vec<RawOpt> = base
        .into_iter()
        .chain(net_conf)
        .chain(setconf)
        .chain(cmdline)
        .collect();
    let (core_given, plugin_opts): (Vec<RawOpt>, Vec<RawOpt>) = all
        .into_iter()
        .partition(|o| core(&o.name).is_some() || o.name == "help");

    // Let clap validate every core occurrence, in order.
    let argv: Vec<String> = core_given
        .iter()
        .map(|o| match &o.value {
            Some(v) => format!("--{}={v}", o.name),
            None => format!("--{}", o.name),
        })
        .collect();
    let m = command()
        .try_get_matches_from(&argv)
        .map_err(|e| err(clap_message(&e)))?;
    let help = m.get_flag("help");
    let core_given: Vec<RawOpt> = core_given
        .into_iter()
        .filter(|o| o.name != "help")
        .collect();

    let rpc_file = m
        .get_one::<String>("rpc-file")
        .cloned()
        .unwrap_or_else(|| "lightning-rpc".into());
    let rpc_path = if Path::new(&rpc_file).is_absolute() {
        PathBuf::from(&rpc_file)
    } else {
        net_dir.join(&rpc_file)
    };
    let mode_s = m
        .get_one::<String>("rpc-file-mode")
        .map(String::as_str)
        .unwrap_or("0600");
    let rpc_file_mode = u32::from_str_radix(mode_s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            err(format!(
                "rpc-file-mode: '{mode_s}' is not a valid octal mode"
            ))
        })?;
    let log_filters = m
        .get_many::<String>("log-level")
        .into_iter()
        .flatten()
        .map(|s| LevelFilter::parse(s).map_err(|e| err(format!("log-level: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let log_files: Vec<PathBuf> = m
        .get_many::<String>("log-file")
        .into_iter()
        .flatten()
        .map(|s| {
            if s == "-" {
                PathBuf::from("-")
            } else {
                absolute(Path::new(s))
            }
        })
        .collect();
    let alias = m.get_one::<String>("alias").cloned();
    if alias.as_ref().is_some_and(|a| a.len() > 32) {
        return Err(err("alias: must be at most 32 bytes"));
    }
    let rgb = m.get_one::<String>("rgb").cloned();
    if let Some(c) = &rgb
        && (c.len() != 6 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(err(format!("rgb: '{c}' is not six hex digits")));
    }
    let plugin_directives = directives(&m);
    let secs = |name: &str, default: i64| -> Result<Duration, ConfigError> {
        let v = m.get_one::<i64>(name).copied().unwrap_or(default);
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| err(format!("{name}: must not be negative")))
    };
    let bitcoin = crate::chain::BitcoinOptions {
        rpcconnect: m
            .get_one::<String>("bitcoin-rpcconnect")
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into()),
        rpcport: match m.get_one::<i64>("bitcoin-rpcport") {
            None => None,
            Some(p) => Some(
                u16::try_from(*p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| err(format!("bitcoin-rpcport: '{p}' is not a port")))?,
            ),
        },
        rpcuser: m.get_one::<String>("bitcoin-rpcuser").cloned(),
        rpcpassword: m.get_one::<String>("bitcoin-rpcpassword").cloned(),
        datadir: m
            .get_one::<String>("bitcoin-datadir")
            .map(|d| absolute(Path::new(d))),
        retry_timeout: secs("bitcoin-retry-timeout", 60)?,
        client_timeout: secs("bitcoin-rpcclienttimeout", 60)?.max(Duration::from_secs(1)),
    };
    let addrs = |name: &str| -> Result<Vec<crate::lightning::net::NetAddr>, ConfigError> {
        m.get_many::<String>(name)
            .into_iter()
            .flatten()
            .map(|s| {
                crate::lightning::net::NetAddr::parse(s, crate::lightning::net::DEFAULT_PORT)
                    .map_err(|e| err(format!("{name}: {e}")))
            })
            .collect()
    };
    let hold_safety_blocks = m.get_one::<i64>("hold-safety-blocks").copied().unwrap_or(6);
    let hold_safety_blocks = u32::try_from(hold_safety_blocks)
        .ok()
        .filter(|b| *b <= 1000)
        .ok_or_else(|| err("hold-safety-blocks: must be between 0 and 1000"))?;
    let max_concurrent_htlcs = m
        .get_one::<i64>("max-concurrent-htlcs")
        .copied()
        .unwrap_or(483);
    let max_concurrent_htlcs = u16::try_from(max_concurrent_htlcs)
        .ok()
        .filter(|n| (1..=483).contains(n))
        .ok_or_else(|| err("max-concurrent-htlcs: must be between 1 and 483"))?;
    let mut notes = inert_notes(&core_given);
    let (channels, cltv_final) = channel_settings(&m, max_concurrent_htlcs, &mut notes)?;
    let flag_or_bool =
        |name: &str, default: bool| m.get_one::<bool>(name).copied().unwrap_or(default);
    let proxy = proxy_settings(
        m.get_one::<String>("proxy").map(String::as_str),
        flag_or_bool("always-use-proxy", false),
    )
    .map_err(err)?;
    let offline = m.get_flag("offline");
    let recover = m.get_one::<String>("recover").cloned();
    let daemon = m.get_flag("daemon");
    // As CLN: a daemon's stdout and stderr go nowhere, so its log must go to a file.
    if daemon && !log_files.iter().any(|f: &PathBuf| f != Path::new("-")) {
        return Err(err("--daemon needs --log-file"));
    }
    let autolisten = flag_or_bool("autolisten", true);
    let min_emergency_msat = m
        .get_one::<u64>("min-emergency-msat")
        .copied()
        .unwrap_or(crate::wallet::DEFAULT_MIN_EMERGENCY_SAT * 1000);
    let both = addrs("addr")?;
    let mut bind_addrs = addrs("bind-addr")?;
    bind_addrs.extend(both.iter().cloned());
    let mut announce_addrs = both;
    announce_addrs.extend(addrs("announce-addr")?);
    if offline {
        // CLN's offline mode: no incoming connections (announcements stay as configured).
        bind_addrs.clear();
    } else if bind_addrs.is_empty()
        && announce_addrs.is_empty()
        && network != Network::Regtest
        && autolisten
    {
        bind_addrs.push(crate::lightning::net::NetAddr {
            host: "0.0.0.0".into(),
            port: crate::lightning::net::DEFAULT_PORT,
        });
    }
    let wasm_sandbox = m
        .get_many::<String>("wasm-sandbox")
        .into_iter()
        .flatten()
        .map(|r| crate::plugin::wasm::SandboxRule::parse(r).map_err(err))
        .collect::<Result<Vec<_>, _>>()?;
    let pid_file = match m.get_one::<String>("pid-file") {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => net_dir.join(p),
        None => lightning_dir.join(format!("lightningd-{}.pid", network.as_str())),
    };
    let database = database_path(m.get_one::<String>("wallet").map(String::as_str), &net_dir)?;
    if m.get_one::<String>("fulgur-import-sqlite").is_some()
        && !matches!(database, Database::Postgres(_))
    {
        return Err(err(
            "--fulgur-import-sqlite copies a node into PostgreSQL: it needs --wallet=postgres://...",
        ));
    }
    let positive = |name: &str, default: i64, max: i64| -> Result<u64, ConfigError> {
        let v = m.get_one::<i64>(name).copied().unwrap_or(default);
        u64::try_from(v)
            .ok()
            .filter(|v| (1..=max.unsigned_abs()).contains(v))
            .ok_or_else(|| err(format!("{name}: must be between 1 and {max}")))
    };
    let rpc_limits = RpcLimits {
        max_connections: usize::try_from(positive("fulgur-rpc-max-connections", 256, 65_536)?)
            .unwrap_or(256),
        max_request: usize::try_from(positive(
            "fulgur-rpc-max-request",
            16 * 1024 * 1024,
            1 << 30,
        )?)
        .unwrap_or(16 * 1024 * 1024),
        request_timeout: Duration::from_secs(positive("fulgur-rpc-request-timeout", 30, 86_400)?),
    };
    let config = Config {
        pid_file,
        database,
        developer: m.get_flag("developer"),
        rpc_limits,
        wasm_sandbox,
        bind_addrs,
        announce_addrs,
        hold_safety_blocks,
        channels,
        cltv_final,
        ignore_fee_limits: flag_or_bool("ignore-fee-limits", false),
        log_timestamps: flag_or_bool("log-timestamps", true),
        log_prefix: m
            .get_one::<String>("log-prefix")
            .cloned()
            .unwrap_or_default(),
        offline,
        recover,
        proxy,
        disable_dns: m.get_flag("disable-dns"),
        daemon,
        invoices_onchain_fallback: m.get_flag("invoices-onchain-fallback"),
        discovery: discovery_settings(
            m.get_one::<String>("announce-addr-discovered")
                .map(String::as_str),
            m.get_one::<i64>("announce-addr-discovered-port").copied(),
            network,
        )?,
        rescan: m.get_one::<i64>("rescan").copied(),
        import_sqlite: m
            .get_one::<String>("fulgur-import-sqlite")
            .map(|p| net_dir.join(p)),
        notes,
        min_emergency_msat,
        network,
        lightning_dir,
        net_dir,
        rpc_file,
        rpc_path,
        rpc_file_mode,
        log_filters,
        log_files,
        alias,
        rgb,
        plugin_directives,
        allow_deprecated_apis: m
            .get_one::<bool>("allow-deprecated-apis")
            .copied()
            .unwrap_or(false),
        plugin_timeout: secs("plugin-timeout", 60)?,
        plugin_shutdown_grace: secs("plugin-shutdown-grace", 30)?,
        core_given,
        plugin_opts,
        setconfig_file,
        bitcoin,
    };
    Ok(if help {
        Invocation::Help(Box::new(config))
    } else {
        Invocation::Run(Box::new(config))
    })
}

/// One `UNUSUAL` line per core option given that has no effect in Fulgur.
/// `--announce-addr-discovered` (`auto` by default, `true`, `false`) and its port (by
/// default the network's Lightning port, as CLN's: 9735, 19735 on testnet, 39735 on signet,
/// 19846 on regtest).
fn discovery_settings(
    mode: Option<&str>,
    port: Option<i64>,
    network: Network,
) -> Result<crate::lightning::discovery::Discovery, ConfigError> {
    use crate::lightning::discovery::{Discovery, DiscoveryMode};
    let mode = match mode.unwrap_or("auto") {
        "auto" => DiscoveryMode::Auto,
        "true" | "on" => DiscoveryMode::On,
        "false" | "off" => DiscoveryMode::Off,
        other => {
            return Err(err(format!(
                "announce-addr-discovered: '{other}' should be 'true', 'false' or 'auto'"
            )));
        }
    };
    let default = match network {
        Network::Bitcoin => 9735,
        Network::Testnet | Network::Testnet4 => 19735,
        Network::Signet => 39735,
        Network::Regtest => 19846,
    };
    let port = match port {
        None => default,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| err(format!("announce-addr-discovered-port: {p} is not a port")))?,
    };
    Ok(Discovery { mode, port })
}

/// `--proxy` and `--always-use-proxy`, with CLN's checks: the port defaults to 9050, and
/// `--always-use-proxy` needs a proxy given as an IP address (`localhost` counts as
/// 127.0.0.1, as in CLN), since it forbids DNS lookups.
fn proxy_settings(
    proxy: Option<&str>,
    always: bool,
) -> Result<Option<crate::lightning::net::Proxy>, String> {
    use crate::lightning::net::{DEFAULT_PROXY_PORT, NetAddr, Proxy};
    let Some(raw) = proxy else {
        return match always {
            true => Err("--always-use-proxy needs --proxy".into()),
            false => Ok(None),
        };
    };
    let mut addr = NetAddr::parse(raw, DEFAULT_PROXY_PORT).map_err(|e| format!("proxy: {e}"))?;
    match addr.host.as_str() {
        "localhost" => addr.host = "127.0.0.1".into(),
        "ip6-localhost" => addr.host = "::1".into(),
        _ => {}
    }
    if always && addr.host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "proxy: '{raw}': Needed DNS, but lookups suppressed (--always-use-proxy)"
        ));
    }
    Ok(Some(Proxy { addr, always }))
}

fn inert_notes(given: &[RawOpt]) -> Vec<String> {
    let mut seen: Vec<&str> = vec![];
    let mut notes = vec![];
    for r in given {
        if let Some(CoreOption {
            effect: Effect::None(why),
            ..
        }) = core(&r.name)
            && !seen.contains(&r.name.as_str())
        {
            seen.push(&r.name);
            notes.push(format!(
                "Option --{} has no effect in Fulgur ({why})",
                r.name
            ));
        }
    }
    notes
}

/// The channel options, each checked against its type and raised to LDK's minimum (with a
/// note) where LDK has one; and `--cltv-final`, likewise.
fn channel_settings(
    m: &ArgMatches,
    max_concurrent_htlcs: u16,
    notes: &mut Vec<String>,
) -> Result<(crate::lightning::ChannelSettings, u32), ConfigError> {
    use crate::lightning::{ChannelSettings, MIN_CLTV_DELTA, MIN_FINAL_CLTV, MIN_WATCHTIME_BLOCKS};
    fn int<T: TryFrom<i64>>(m: &ArgMatches, name: &str, default: T) -> Result<T, ConfigError> {
        match m.get_one::<i64>(name) {
            None => Ok(default),
            Some(v) => T::try_from(*v).map_err(|_| err(format!("{name}: '{v}' is out of range"))),
        }
    }
    let given = |name: &str| m.value_source(name) == Some(clap::parser::ValueSource::CommandLine);
    let mut floor = |name: &str, v: u64, min: u64| -> u64 {
        if given(name) && v < min {
            notes.push(format!(
                "Option --{name}={v} is below LDK's minimum of {min}: using {min}"
            ));
        }
        v.max(min)
    };
    let d = ChannelSettings::default();
    let cltv_delta = int(m, "cltv-delta", u64::from(d.cltv_expiry_delta))?;
    let cltv_delta = floor("cltv-delta", cltv_delta, u64::from(MIN_CLTV_DELTA));
    let watchtime = int(m, "watchtime-blocks", u64::from(d.watchtime_blocks))?;
    let watchtime = floor(
        "watchtime-blocks",
        watchtime,
        u64::from(MIN_WATCHTIME_BLOCKS),
    );
    let htlc_minimum_msat = m
        .get_one::<u64>("htlc-minimum-msat")
        .copied()
        .unwrap_or(d.htlc_minimum_msat);
    let htlc_minimum_msat = floor("htlc-minimum-msat", htlc_minimum_msat, 1);
    let min_capacity_sat = int(m, "min-capacity-sat", d.min_capacity_sat)?;
    let min_capacity_sat = floor("min-capacity-sat", min_capacity_sat, 1000);
    let cltv_final = int(m, "cltv-final", u64::from(MIN_FINAL_CLTV))?;
    let cltv_final = floor("cltv-final", cltv_final, u64::from(MIN_FINAL_CLTV));
    let settings = ChannelSettings {
        max_concurrent_htlcs,
        fee_base_msat: int(m, "fee-base", d.fee_base_msat)?,
        fee_proportional_millionths: int(m, "fee-per-satoshi", d.fee_proportional_millionths)?,
        cltv_expiry_delta: u16::try_from(cltv_delta).unwrap_or(u16::MAX),
        funding_confirms: int(m, "funding-confirms", d.funding_confirms)?,
        htlc_minimum_msat,
        max_dust_htlc_exposure_msat: m.get_one::<u64>("max-dust-htlc-exposure-msat").copied(),
        min_capacity_sat,
        watchtime_blocks: u16::try_from(watchtime).unwrap_or(u16::MAX),
    };
    Ok((settings, u32::try_from(cltv_final).unwrap_or(u32::MAX)))
}

fn clap_message(e: &clap::Error) -> String {
    let s = e.to_string();
    let first = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid option");
    first.trim_start_matches("error: ").to_string()
}

fn directives(m: &ArgMatches) -> Vec<PluginDirective> {
    let mut ev: Vec<(usize, PluginDirective)> = vec![];
    for name in ["plugin", "plugin-dir", "important-plugin", "disable-plugin"] {
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(name), m.indices_of(name)) {
            for (v, i) in vals.zip(idx) {
                let d = match name {
                    "plugin" => PluginDirective::Plugin(absolute(Path::new(v))),
                    "plugin-dir" => PluginDirective::Dir(absolute(Path::new(v))),
                    "important-plugin" => PluginDirective::Important(absolute(Path::new(v))),
                    _ => PluginDirective::Disable(v.clone()),
                };
                ev.push((i, d));
            }
        }
    }
    if m.get_flag("clear-plugins")
        && let Some(idx) = m.indices_of("clear-plugins")
    {
        for i in idx {
            ev.push((i, PluginDirective::Clear));
        }
    }
    ev.sort_by_key(|(i, _)| *i);
    ev.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fulgur-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("regtest")).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    fn run(inv: Invocation) -> Config {
        match inv {
            Invocation::Run(c) => *c,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ip_discovery_is_auto_on_the_networks_port_by_default() {
        use crate::lightning::discovery::DiscoveryMode;
        let d = discovery_settings(None, None, Network::Bitcoin).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.mode, d.port), (DiscoveryMode::Auto, 9735));
        let d = discovery_settings(Some("false"), Some(1234), Network::Regtest)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.mode, d.port), (DiscoveryMode::Off, 1234));
        assert_eq!(
            discovery_settings(None, None, Network::Regtest)
                .map(|d| d.port)
                .ok(),
            Some(19846)
        );
        assert!(discovery_settings(Some("maybe"), None, Network::Regtest).is_err());
        assert!(discovery_settings(None, Some(0), Network::Regtest).is_err());
    }

    #[test]
    fn proxy_defaults_its_port_and_always_use_proxy_needs_an_ip_proxy() {
        use crate::lightning::net::{NetAddr, Proxy};
        let at = |h: &str, port| NetAddr {
            host: h.into(),
            port,
        };
        assert_eq!(proxy_settings(None, false), Ok(None));
        assert_eq!(
            proxy_settings(None, true),
            Err("--always-use-proxy needs --proxy".into())
        );
        assert_eq!(
            proxy_settings(Some("127.0.0.1"), false),
            Ok(Some(Proxy {
                addr: at("127.0.0.1", 9050),
                always: false
            }))
        );
        assert_eq!(
            proxy_settings(Some("localhost:9150"), true),
            Ok(Some(Proxy {
                addr: at("127.0.0.1", 9150),
                always: true
            }))
        );
        assert_eq!(
            proxy_settings(Some("tor.lan:9050"), false).map(|p| p.map(|p| p.addr)),
            Ok(Some(at("tor.lan", 9050)))
        );
        assert!(proxy_settings(Some("tor.lan:9050"), true).is_err());
        assert!(proxy_settings(Some("1.2.3.4:x"), false).is_err());
    }

    #[test]
    fn wallet_names_the_database_file() {
        let net = Path::new("/ln/regtest");
        let file = |p: PathBuf| Database::Sqlite(p, None);
        assert_eq!(
            database_path(None, net).unwrap_or_else(|e| panic!("{e}")),
            file(net.join("fulgur.sqlite3"))
        );
        assert_eq!(
            database_path(Some("sqlite3://other.sqlite3"), net).unwrap_or_else(|e| panic!("{e}")),
            file(net.join("other.sqlite3"))
        );
        assert_eq!(
            database_path(Some("sqlite3:///var/db/node.sqlite3"), net)
                .unwrap_or_else(|e| panic!("{e}")),
            file(PathBuf::from("/var/db/node.sqlite3"))
        );
        let pg = database_path(Some("postgres://u:secret@localhost:5432/db"), net)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pg,
            Database::Postgres("postgres://u:secret@localhost:5432/db".into())
        );
        assert_eq!(pg.describe(), "postgres://u:***@localhost:5432/db");
        assert_eq!(hide_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            database_path(Some("sqlite3://a.sqlite3:/backup/b.sqlite3"), net)
                .unwrap_or_else(|e| panic!("{e}")),
            Database::Sqlite(
                net.join("a.sqlite3"),
                Some(PathBuf::from("/backup/b.sqlite3"))
            )
        );
        for bad in [
            "sqlite3://",
            "sqlite3://a.sqlite3:",
            "sqlite3://a.sqlite3:a.sqlite3",
            "sqlite3://a:b:c",
            "mysql://x",
            "fulgur.sqlite3",
        ] {
            assert!(database_path(Some(bad), net).is_err(), "{bad}");
        }
    }

    #[test]
    fn pid_file_developer_and_rpc_limits() {
        let d = tmpdir("pidfile");
        let dir = d.to_str().unwrap_or("");
        let c =
            run(load(&args(&["--lightning-dir", dir, "--regtest"]))
                .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.pid_file, d.join("lightningd-regtest.pid"));
        assert!(!c.developer);
        assert_eq!(c.rpc_limits, RpcLimits::default());
        let c = run(load(&args(&[
            "--lightning-dir",
            dir,
            "--regtest",
            "--pid-file=my.pid",
            "--developer",
            "--fulgur-rpc-max-connections=3",
            "--fulgur-rpc-max-request=1000",
            "--fulgur-rpc-request-timeout=2",
        ]))
        .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.pid_file, d.join("regtest/my.pid"));
        assert!(c.developer);
        assert_eq!(
            c.rpc_limits,
            RpcLimits {
                max_connections: 3,
                max_request: 1000,
                request_timeout: Duration::from_secs(2),
            }
        );
        let c = run(
            load(&args(&["--lightning-dir", dir, "--pid-file=/tmp/x.pid"]))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(c.pid_file, PathBuf::from("/tmp/x.pid"));
        for bad in [
            "--fulgur-rpc-max-connections=0",
            "--fulgur-rpc-request-timeout=-1",
        ] {
            assert!(
                load(&args(&["--lightning-dir", dir, bad])).is_err(),
                "{bad}"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn files_then_cmdline() {
        let d = tmpdir("files");
        std::fs::write(
            d.join("config"),
            "# base\nnetwork=regtest\nalias=fromfile\ngreeting=hi\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("regtest/config"), "rgb=aabbcc\nplugin=/x/a\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = run(load(&args(&[
            "--lightning-dir",
            d.to_str().unwrap_or(""),
            "--alias=cli",
            "--plugin=/x/b",
            "--flag-opt",
        ]))
        .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.network, Network::Regtest);
        assert_eq!(c.alias.as_deref(), Some("cli"));
        assert_eq!(c.rgb.as_deref(), Some("aabbcc"));
        assert_eq!(c.rpc_path, d.join("regtest/lightning-rpc"));
        assert_eq!(
            c.plugin_directives,
            vec![
                PluginDirective::Plugin("/x/a".into()),
                PluginDirective::Plugin("/x/b".into())
            ]
        );
        let names: Vec<_> = c
            .plugin_opts
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_deref()))
            .collect();
        assert_eq!(names, vec![("greeting", Some("hi")), ("flag-opt", None)]);
        assert!(matches!(c.plugin_opts[0].source, Source::File(_, 4)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn min_emergency_msat_from_file_and_cmdline() {
        let d = tmpdir("emergency");
        let dir = format!("--lightning-dir={}", d.display());
        let c = run(load(&args(&[&dir, "--network=regtest"])).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.min_emergency_msat, 25_000_000);
        std::fs::write(d.join("config"), "min-emergency-msat=30000sat\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = run(load(&args(&[&dir, "--network=regtest"])).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.min_emergency_msat, 30_000_000);
        let c = run(load(&args(&[
            &dir,
            "--network=regtest",
            "--min-emergency-msat=40000000msat",
        ]))
        .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.min_emergency_msat, 40_000_000);
        assert!(load(&args(&[&dir, "--min-emergency-msat=lots"])).is_err());
        assert_eq!(parse_msat("7"), Ok(7));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn peer_addresses_and_their_defaults() {
        use crate::lightning::net::NetAddr;
        let d = tmpdir("addrs");
        let dir = format!("--lightning-dir={}", d.display());
        let na = |h: &str, p| NetAddr {
            host: h.into(),
            port: p,
        };
        let c = run(load(&args(&[&dir, "--network=regtest"])).unwrap_or_else(|e| panic!("{e}")));
        assert!(c.bind_addrs.is_empty() && c.announce_addrs.is_empty());
        let c = run(load(&args(&[&dir, "--network=signet"])).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(c.bind_addrs, vec![na("0.0.0.0", 9735)]);
        let c = run(load(&args(&[
            &dir,
            "--network=regtest",
            "--bind-addr=127.0.0.1:1000",
            "--addr=10.0.0.1:2000",
            "--announce-addr=example.com",
        ]))
        .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            c.bind_addrs,
            vec![na("127.0.0.1", 1000), na("10.0.0.1", 2000)]
        );
        assert_eq!(
            c.announce_addrs,
            vec![na("10.0.0.1", 2000), na("example.com", 9735)]
        );
        assert!(load(&args(&[&dir, "--bind-addr=1.2.3.4:notaport"])).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn clear_plugins_keeps_order() {
        let d = tmpdir("clear");
        let c = run(load(&args(&[
            &format!("--lightning-dir={}", d.display()),
            "--regtest",
            "--plugin=/a",
            "--clear-plugins",
            "--plugin=/b",
            "--disable-plugin=c",
        ]))
        .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            c.plugin_directives,
            vec![
                PluginDirective::Plugin("/a".into()),
                PluginDirective::Clear,
                PluginDirective::Plugin("/b".into()),
                PluginDirective::Disable("c".into())
            ]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_values_are_errors() {
        let d = tmpdir("bad");
        let dir = format!("--lightning-dir={}", d.display());
        assert!(load(&args(&[&dir, "--network=moon"])).is_err());
        assert!(load(&args(&[&dir, "--allow-deprecated-apis=1"])).is_err());
        assert!(load(&args(&[&dir, "--log-level=loud"])).is_err());
        assert!(load(&args(&[&dir, "--rgb=zzzzzz"])).is_err());
        assert!(load(&args(&[&dir, "positional"])).is_err());
        assert!(matches!(
            load(&args(&["--version"])),
            Ok(Invocation::Version)
        ));
        assert!(matches!(
            load(&args(&[&dir, "--help"])),
            Ok(Invocation::Help(_))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
