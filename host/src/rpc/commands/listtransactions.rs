//! `listtransactions`: every transaction that pays or spends the wallet's coins.

use serde_json::json;

use super::{Command, CommandFuture, Ctx};
use crate::rpc::Reply;
use crate::rpc::params::Params;
use crate::wallet::tx_json;

pub const LISTTRANSACTIONS: Command = Command {
    name: "listtransactions",
    usage: "",
    category: "utility",
    description: "List transactions that we stored in the wallet",
    verbose: "Returns the wallet's transactions, oldest first: hash, rawtx, blockheight (0 while \
              unconfirmed), txindex, locktime, version, inputs and outputs.",
    params: &[],
    extra_params: false,
    run,
};

fn run(ctx: Ctx, _p: Params) -> CommandFuture {
    Box::pin(async move {
        let txs: Vec<_> = ctx
            .node
            .wallet
            .list_transactions()
            .iter()
            .map(tx_json)
            .collect();
        Reply::Ok(json!({"transactions": txs}))
    })
}
