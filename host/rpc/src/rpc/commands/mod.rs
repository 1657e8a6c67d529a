//! Built-in RPC commands: one file per command or family, one table to dispatch.
//! Adding a command is adding a file and a line in [`COMMANDS`].

mod addgossip;
mod batching;
mod channels;
mod check;
mod datastore;
pub(crate) mod decode;
mod dev;
mod exposesecret;
mod feerates;
pub(crate) mod forwards;
mod funding;
mod getinfo;
mod getlog;
mod graceful;
mod graph;
mod help;
mod invoice;
mod keysend;
pub(crate) mod listconfigs;
mod listfunds;
mod listtransactions;
mod moves;
mod netevents;
mod newaddr;
mod notifications;
pub(crate) mod pay;
mod peers;
mod plugin;
mod preapprove;
mod psbt;
mod recovery;
pub(crate) mod runes;
mod setconfig;
pub(crate) mod sign;
mod signwith;
mod stop;
mod txprepare;
mod wait;
mod waitblockheight;
mod withdraw;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fulgur_protocol::RpcError;
use serde_json::Value;

use super::Conn;
use super::params::{ParamSpec, Params};
use crate::node::Node;

/// What a command gets.
pub struct Ctx {
    /// The node.
    pub node: Arc<Node>,
    /// The caller's connection.
    pub conn: Arc<Conn>,
    /// The caller's request id.
    pub id: Value,
}

/// A command's future: its result, or the error with CLN's code.
pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;

/// A command's body as its future (`?` works inside: the error type is fixed here).
pub fn command(
    body: impl Future<Output = Result<Value, RpcError>> + Send + 'static,
) -> CommandFuture {
    Box::pin(body)
}

/// A built-in command. Its help (usage, category, description, a paragraph) is documentation
/// kept as data in `help.json`, read by `help`.
pub struct Command {
    /// Its name.
    pub name: &'static str,
    /// Parameters, in positional order.
    pub params: &'static [ParamSpec],
    /// Accepts keyword parameters not in `params` (`plugin start greeting=hi`).
    pub extra_params: bool,
    /// The implementation.
    pub run: fn(Ctx, Params) -> CommandFuture,
}

impl Command {
    /// Command `name` taking `params`, run by `run`.
    pub const fn new(
        name: &'static str,
        params: &'static [ParamSpec],
        run: fn(Ctx, Params) -> CommandFuture,
    ) -> Command {
        Command {
            name,
            params,
            extra_params: false,
            run,
        }
    }

    /// The same command, also accepting keyword parameters not in its list.
    pub const fn with_extra_params(self) -> Command {
        Command {
            extra_params: true,
            ..self
        }
    }
}

/// Every built-in command, sorted by name.
pub const COMMANDS: &[&Command] = &[
    &addgossip::ADDGOSSIP,
    &psbt::ADDPSBTOUTPUT,
    &batching::BATCHING,
    &runes::BLACKLISTRUNE,
    &check::CHECK,
    &sign::CHECKMESSAGE,
    &runes::CHECKRUNE,
    &channels::CLOSE,
    &peers::CONNECT,
    &runes::CREATERUNE,
    &datastore::DATASTORE,
    &datastore::DATASTOREUSAGE,
    &decode::DECODE,
    &datastore::DELDATASTORE,
    &invoice::DELEXPIREDINVOICE,
    &forwards::DELFORWARD,
    &invoice::DELINVOICE,
    &netevents::DELNETWORKEVENT,
    &pay::DELPAY,
    &notifications::DEPRECATIONS,
    &peers::DISCONNECT,
    &recovery::EMERGENCYRECOVER,
    &feerates::FEERATES,
    &channels::FUNDCHANNEL,
    &funding::FUNDCHANNEL_CANCEL,
    &funding::FUNDCHANNEL_COMPLETE,
    &funding::FUNDCHANNEL_START,
    &psbt::FUNDPSBT,
    &recovery::GETEMERGENCYRECOVERDATA,
    &getinfo::GETINFO,
    &getlog::GETLOG,
    &graceful::GRACEFUL,
    &graph::GETROUTE,
    &help::HELP,
    &invoice::INVOICE,
    &keysend::KEYSEND,
    &newaddr::LISTADDRESSES,
    &moves::LISTCHAINMOVES,
    &moves::LISTCHANNELMOVES,
    &graph::LISTCHANNELS,
    &channels::LISTCLOSEDCHANNELS,
    &listconfigs::LISTCONFIGS,
    &datastore::LISTDATASTORE,
    &forwards::LISTFORWARDS,
    &listfunds::LISTFUNDS,
    &forwards::LISTHTLCS,
    &invoice::LISTINVOICES,
    &netevents::LISTNETWORKEVENTS,
    &graph::LISTNODES,
    &channels::LISTPEERCHANNELS,
    &peers::LISTPEERS,
    &pay::LISTSENDPAYS,
    &listtransactions::LISTTRANSACTIONS,
    &sign::MAKESECRET,
    &exposesecret::EXPOSESECRET,
    &funding::MULTIFUNDCHANNEL,
    &withdraw::MULTIWITHDRAW,
    &newaddr::NEWADDR,
    &notifications::NOTIFICATIONS,
    &feerates::PARSEFEERATE,
    &plugin::PLUGIN,
    &preapprove::PREAPPROVEINVOICE,
    &preapprove::PREAPPROVEKEYSEND,
    &recovery::RECOVERCHANNEL,
    &psbt::RESERVEINPUTS,
    &peers::SENDCUSTOMMSG,
    &pay::SENDPAY,
    &psbt::SENDPSBT,
    &channels::SETCHANNEL,
    &setconfig::SETCONFIG,
    &psbt::SETPSBTVERSION,
    &runes::SHOWRUNES,
    &signwith::SIGNINVOICE,
    &sign::SIGNMESSAGE,
    &signwith::SIGNMESSAGEWITHKEY,
    &psbt::SIGNPSBT,
    &recovery::STATICBACKUP,
    &stop::STOP,
    &txprepare::TXDISCARD,
    &txprepare::TXPREPARE,
    &txprepare::TXSEND,
    &psbt::UNRESERVEINPUTS,
    &withdraw::UPGRADEWALLET,
    &psbt::UTXOPSBT,
    &wait::WAIT,
    &invoice::WAITANYINVOICE,
    &waitblockheight::WAITBLOCKHEIGHT,
    &invoice::WAITINVOICE,
    &pay::WAITSENDPAY,
    &withdraw::WITHDRAW,
];

/// Developer-only commands: refused without `--developer`, never listed by `help`.
pub const DEV_COMMANDS: &[&Command] = &[&dev::DEV, &dev::DEV_FAIL];

/// The built-in command named `name` (developer-only ones included: see [`is_dev_only`]).
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .chain(DEV_COMMANDS)
        .copied()
        .find(|c| c.name == name)
}

/// Whether `name` is a developer-only command.
pub fn is_dev_only(name: &str) -> bool {
    DEV_COMMANDS.iter().any(|c| c.name == name)
}

/// Names of every built-in command (plugins cannot register these).
pub fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().chain(DEV_COMMANDS).map(|c| c.name)
}

/// Runs the parameter checks `method` makes before it touches the node, for the fuzz
/// targets (`crate::fuzzing`); `None` for commands without such checks.
pub fn check_params(
    method: &str,
    p: &Params,
    network: crate::config::Network,
) -> Option<Result<(), fulgur_protocol::RpcError>> {
    use fulgur_protocol::RpcError;
    Some(match method {
        "invoice" => invoice::parse_invoice_request(p, network).map(drop),
        "sendpay" => pay::sendpay_request(p).map(drop),
        "listsendpays" => pay::list_filter(p).map(drop),
        "getroute" => graph::getroute_request(p).map(drop),
        "listchannels" => graph::channel_filter(p).map(drop),
        "plugin" => plugin::start_options(p).map(drop),
        "datastore" => datastore::key(p, true).and_then(|_| match p.opt_str("hex")? {
            Some(h) if fulgur_base::unhex(&h).is_none() => {
                Err(RpcError::invalid_params("hex: should be hex"))
            }
            _ => Ok(()),
        }),
        "listdatastore" => datastore::key(p, false).map(drop),
        "deldatastore" => datastore::key(p, true).and_then(|_| p.opt_u64("generation").map(drop)),
        "txsend" | "txdiscard" => txprepare::txid(p).map(drop),
        "reserveinputs" | "unreserveinputs" | "signpsbt" | "sendpsbt" | "setpsbtversion" => {
            psbt::psbt_param(p, "psbt").map(drop)
        }
        "withdraw" | "txprepare" | "multiwithdraw" => withdraw::minconf(p).map(drop),
        "connect" => p.str("id").and_then(|raw| {
            let id = raw.split_once('@').map_or(raw.as_str(), |(i, _)| i);
            peers::parse_id(id)?;
            p.opt_str("host")?;
            peers::port_param(p).map(drop)
        }),
        "disconnect" => p.str("id").and_then(|s| peers::parse_id(&s)).map(drop),
        "listforwards" | "listhtlcs" => forwards::index_param(p).map(drop),
        "notifications" | "deprecations" => notifications::enable(p).map(drop),
        "decode" => p.str("string").and_then(|s| decode::decode(&s)).map(drop),
        "addgossip" => p.str("message").map(drop),
        "createrune" => runes::rune_param(p, "rune")
            .and_then(|_| runes::restrictions_param(p))
            .map(drop),
        "checkrune" => runes::check_args(p).map(drop),
        "showrunes" => runes::rune_param(p, "rune").map(drop),
        "blacklistrune" => runes::blacklist_args(p).map(drop),
        "checkmessage" => p.str("zbase").and_then(|z| {
            p.str("message")?;
            pay::opt_pubkey(p, "pubkey")?;
            sign::parse_zbase(&z)
                .map(drop)
                .map_err(RpcError::invalid_params)
        }),
        _ => return None,
    })
}
