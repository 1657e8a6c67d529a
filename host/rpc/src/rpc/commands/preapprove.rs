//! `preapproveinvoice` and `preapprovekeysend`: ask the signer whether it would sign for a
//! payment, before paying. CLN asks its `hsmd`, whose default policy approves everything
//! (a policy signer such as VLS declines with 213/214); Fulgur's keys are in-process with
//! the same policy, so a well-formed request is approved. The parameters are checked as
//! CLN checks them, so a client's mistake is reported here rather than at `pay`.

use fulgur_protocol::RpcError;
use serde_json::json;

use super::keysend::msat;
use super::pay::opt_hex32;
use super::peers::parse_id;
use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const PREAPPROVEINVOICE: Command =
    Command::new("preapproveinvoice", &[req("bolt11")], run_invoice);

pub const PREAPPROVEKEYSEND: Command = Command::new(
    "preapprovekeysend",
    &[req("destination"), req("payment_hash"), req("amount_msat")],
    run_keysend,
);

fn run_invoice(_ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        // CLN takes any string here (`param_invstring`); its signer reads it.
        p.str("bolt11")?;
        Ok(json!({}))
    })
}

fn run_keysend(_ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let dest = p.str("destination")?;
        parse_id(&dest).map_err(|_| {
            RpcError::invalid_params(format!(
                "destination: should be a node id: invalid token '{dest}'"
            ))
        })?;
        opt_hex32(&p, "payment_hash")?;
        msat(&p, "amount_msat")?;
        Ok(json!({}))
    })
}
