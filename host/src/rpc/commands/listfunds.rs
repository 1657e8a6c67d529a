//! `listfunds [spent]`: the wallet's outputs (channels come with the Lightning engine).

use serde_json::json;

use super::{Command, CommandFuture, Ctx};
use crate::rpc::Reply;
use crate::rpc::params::{Params, opt};
use crate::wallet::fund_json;

pub const LISTFUNDS: Command = Command {
    name: "listfunds",
    usage: "[spent]",
    category: "utility",
    description: "Show available funds from the internal wallet",
    verbose: "Lists the wallet's outputs (status unconfirmed, confirmed, immature, or spent with \
              {spent}=true), whether they are reserved by a pending transaction and until which \
              block, and the channels (none until the Lightning engine arrives).",
    params: &[opt("spent")],
    extra_params: false,
    run,
};

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    Box::pin(async move {
        let spent = match p.opt_bool("spent") {
            Ok(s) => s.unwrap_or(false),
            Err(e) => return Reply::Err(e),
        };
        let outputs: Vec<_> = ctx
            .node
            .wallet
            .list_funds(spent)
            .iter()
            .map(fund_json)
            .collect();
        Reply::Ok(json!({"outputs": outputs, "channels": []}))
    })
}
