//! CLN's PSBT commands: `reserveinputs psbt [exclusive] [reserve]`,
//! `unreserveinputs psbt [reserve]`, `fundpsbt satoshi feerate startweight ...`,
//! `utxopsbt satoshi feerate startweight utxos ...`, `addpsbtoutput satoshi [initialpsbt]
//! [locktime] [destination]`, `signpsbt psbt [signonly]`, `sendpsbt psbt [reserve]` and
//! `setpsbtversion psbt version`. PSBTs come in version 0 or 2 and go out in version 0, as
//! CLN's do (`signpsbt` answers in the version it was given).

use bitcoin::psbt::Psbt;
use bitcoin::{Amount, OutPoint, TxOut};
use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::onchain::{self, wallet_error};
use crate::rpc::params::{Params, opt, req};
use crate::rpc::psbt;
use crate::wallet::{Amt, FundRequest, Funded, P2TR_OUTPUT_WEIGHT, RESERVE_BLOCKS, Reservation};

pub const RESERVEINPUTS: Command = Command::new(
    "reserveinputs",
    &[req("psbt"), opt("exclusive"), opt("reserve")],
    run_reserve,
);

pub const UNRESERVEINPUTS: Command = Command::new(
    "unreserveinputs",
    &[req("psbt"), opt("reserve")],
    run_unreserve,
);

pub const FUNDPSBT: Command = Command::new(
    "fundpsbt",
    &[
        req("satoshi"),
        req("feerate"),
        req("startweight"),
        opt("minconf"),
        opt("reserve"),
        opt("locktime"),
        opt("min_witness_weight"),
        opt("excess_as_change"),
        opt("nonwrapped"),
        opt("opening_anchor_channel"),
    ],
    run_fundpsbt,
);

pub const UTXOPSBT: Command = Command::new(
    "utxopsbt",
    &[
        req("satoshi"),
        req("feerate"),
        req("startweight"),
        req("utxos"),
        opt("reserve"),
        opt("reservedok"),
        opt("locktime"),
        opt("min_witness_weight"),
        opt("excess_as_change"),
        opt("opening_anchor_channel"),
    ],
    run_utxopsbt,
);

pub const ADDPSBTOUTPUT: Command = Command::new(
    "addpsbtoutput",
    &[
        req("satoshi"),
        opt("initialpsbt"),
        opt("locktime"),
        opt("destination"),
    ],
    run_addpsbtoutput,
);

pub const SIGNPSBT: Command = Command::new("signpsbt", &[req("psbt"), opt("signonly")], run_sign);

pub const SENDPSBT: Command = Command::new("sendpsbt", &[req("psbt"), opt("reserve")], run_send);

pub const SETPSBTVERSION: Command = Command::new(
    "setpsbtversion",
    &[req("psbt"), req("version")],
    run_setversion,
);

/// CLN's `FUNDING_PSBT_INVALID`.
const PSBT_INVALID: i64 = 309;

/// The PSBT named `name`, with the version it came in.
pub(crate) fn psbt_param(p: &Params, name: &str) -> Result<(Psbt, u32), RpcError> {
    let s = p.str(name)?;
    psbt::decode(&s).map_err(|_| {
        RpcError::invalid_params(format!("{name}: Expected a PSBT: invalid token '{s}'"))
    })
}

fn render(psbt: &Psbt, version: u32) -> Result<String, RpcError> {
    psbt::encode(psbt, version).map_err(|e| RpcError::new(-1, e))
}

/// A u32 parameter (CLN's `param_number`).
fn u32_param(p: &Params, name: &str) -> Result<Option<u32>, RpcError> {
    match p.opt_u64(name)? {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            RpcError::invalid_params(format!("{name}: should be an integer: invalid token '{n}'"))
        }),
    }
}

fn inputs(psbt: &Psbt) -> Vec<OutPoint> {
    psbt.unsigned_tx
        .input
        .iter()
        .map(|i| i.previous_output)
        .collect()
}

fn reservations(rs: &[Reservation]) -> Value {
    Value::Array(
        rs.iter()
            .map(|r| {
                let mut v = json!({
                    "txid": r.outpoint.txid.to_string(),
                    "vout": r.outpoint.vout,
                    "was_reserved": r.was_reserved,
                    "reserved": r.reserved,
                });
                if let Some(b) = r.reserved_to_block {
                    v["reserved_to_block"] = json!(b);
                }
                v
            })
            .collect(),
    )
}

fn run_reserve(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (psbt, _) = psbt_param(&p, "psbt")?;
        let exclusive = p.opt_bool("exclusive")?.unwrap_or(true);
        let blocks = u32_param(&p, "reserve")?.unwrap_or(RESERVE_BLOCKS);
        let rs = ctx
            .node
            .wallet
            .reserve_inputs(&inputs(&psbt), exclusive, blocks)
            .await
            .map_err(wallet_error)?;
        Ok(json!({ "reservations": reservations(&rs) }))
    })
}

fn run_unreserve(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (psbt, _) = psbt_param(&p, "psbt")?;
        let blocks = u32_param(&p, "reserve")?.unwrap_or(RESERVE_BLOCKS);
        let rs = ctx
            .node
            .wallet
            .unreserve_inputs(&inputs(&psbt), blocks)
            .await
            .map_err(wallet_error)?;
        Ok(json!({ "reservations": reservations(&rs) }))
    })
}

/// The parameters `fundpsbt` and `utxopsbt` share.
fn fund_request(
    ctx: &Ctx,
    p: &Params,
    utxos: Option<Vec<OutPoint>>,
) -> Result<FundRequest, RpcError> {
    let wallet = &ctx.node.wallet;
    let amount = onchain::sat_or_all(
        "satoshi",
        p.get("satoshi")
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: satoshi"))?,
    )?;
    let feerate = p
        .get("feerate")
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: feerate"))?;
    Ok(FundRequest {
        amount,
        feerate_perkw: onchain::feerate(Some(feerate), wallet.fees().as_ref())?,
        startweight: u64::from(
            u32_param(p, "startweight")?.ok_or_else(|| {
                RpcError::invalid_params("missing required parameter: startweight")
            })?,
        ),
        minconf: u32_param(p, "minconf")?.unwrap_or(1),
        reserve: u32_param(p, "reserve")?.unwrap_or(RESERVE_BLOCKS),
        locktime: u32_param(p, "locktime")?,
        min_witness_weight: u64::from(u32_param(p, "min_witness_weight")?.unwrap_or(0)),
        excess_as_change: p.opt_bool("excess_as_change")?.unwrap_or(false),
        reserved_ok: p.opt_bool("reservedok")?.unwrap_or(false),
        opening_anchor: p.opt_bool("opening_anchor_channel")?.unwrap_or(false),
        utxos,
    })
}

fn funded(f: Funded) -> Result<Value, RpcError> {
    let mut v = json!({
        "psbt": render(&f.psbt, 0)?,
        "feerate_per_kw": f.feerate_perkw,
        "estimated_final_weight": f.estimated_final_weight,
        "excess_msat": f.excess_sat * 1000,
    });
    if let Some(n) = f.change_outnum {
        v["change_outnum"] = json!(n);
    }
    if let Some(rs) = &f.reservations {
        v["reservations"] = reservations(rs);
    }
    Ok(v)
}

fn run_fundpsbt(ctx: Ctx, p: Params) -> CommandFuture {
    run_funding(ctx, p, false)
}

fn run_utxopsbt(ctx: Ctx, p: Params) -> CommandFuture {
    run_funding(ctx, p, true)
}

/// `fundpsbt`, or `utxopsbt` (`named`: the coins are given).
fn run_funding(ctx: Ctx, p: Params, named: bool) -> CommandFuture {
    command(async move {
        let utxos = match p.get("utxos") {
            _ if !named => {
                p.opt_bool("nonwrapped")?;
                None
            }
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(RpcError::invalid_params(
                    "Please specify an array of 'txid:output_index', not \"[]\"",
                ));
            }
            v => onchain::utxos(v)?,
        };
        let req = fund_request(&ctx, &p, utxos)?;
        let f = ctx
            .node
            .wallet
            .fund_psbt(&req)
            .await
            .map_err(wallet_error)?;
        funded(f)
    })
}

fn run_addpsbtoutput(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let wallet = ctx.node.wallet.clone();
        let sat = match onchain::sat_or_all(
            "satoshi",
            p.get("satoshi")
                .ok_or_else(|| RpcError::invalid_params("missing required parameter: satoshi"))?,
        )? {
            Amt::Sat(s) => s,
            Amt::All => {
                return Err(RpcError::invalid_params(
                    "satoshi: should be a satoshi amount: invalid token 'all'",
                ));
            }
        };
        let locktime = u32_param(&p, "locktime")?;
        let destination = match p.opt_str("destination")? {
            Some(a) => Some(onchain::address("destination", &a, wallet.network())?.script_pubkey()),
            None => None,
        };
        let mut psbt = match p.get("initialpsbt") {
            Some(_) => {
                if locktime.is_some() {
                    return Err(RpcError::new(
                        PSBT_INVALID,
                        "Can't set locktime of an existing {initialpsbt}",
                    ));
                }
                psbt_param(&p, "initialpsbt")?.0
            }
            None => {
                let tx = bitcoin::Transaction {
                    version: bitcoin::transaction::Version::TWO,
                    lock_time: bitcoin::absolute::LockTime::from_consensus(
                        locktime.unwrap_or(ctx.node.chain.height()),
                    ),
                    input: vec![],
                    output: vec![],
                };
                Psbt::from_unsigned_tx(tx).map_err(|e| RpcError::new(-1, e.to_string()))?
            }
        };
        if sat < 546 {
            return Err(RpcError::new(
                302,
                "Receive amount is below dust limit (546sat)",
            ));
        }
        let script = match destination {
            Some(s) => s,
            None => wallet.fresh_change_script().await.map_err(wallet_error)?,
        };
        let outnum = psbt.unsigned_tx.output.len();
        psbt.unsigned_tx.output.push(TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: script,
        });
        psbt.outputs.push(Default::default());
        Ok(json!({
            "psbt": render(&psbt, 0)?,
            "estimated_added_weight": P2TR_OUTPUT_WEIGHT,
            "outnum": outnum,
        }))
    })
}

fn run_sign(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (psbt, version) = psbt_param(&p, "psbt")?;
        let only = match p.get("signonly") {
            None => None,
            Some(Value::Array(a)) => {
                let mut v = vec![];
                for (i, n) in a.iter().enumerate() {
                    let n = n
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            RpcError::invalid_params(format!(
                                "signonly: should be an integer: invalid token '{n}'"
                            ))
                        })?;
                    if n as usize >= psbt.inputs.len() {
                        return Err(RpcError::invalid_params(format!(
                            "signonly[{i}]: {n} out of range"
                        )));
                    }
                    v.push(n as usize);
                }
                Some(v)
            }
            Some(other) => {
                return Err(RpcError::invalid_params(format!(
                    "signonly: should be an array: invalid token '{other}'"
                )));
            }
        };
        let signed = ctx
            .node
            .wallet
            .sign_psbt(psbt, only.as_deref())
            .map_err(wallet_error)?;
        Ok(json!({ "signed_psbt": render(&signed, version)? }))
    })
}

fn run_send(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (psbt, _) = psbt_param(&p, "psbt")?;
        let blocks = u32_param(&p, "reserve")?.unwrap_or(RESERVE_BLOCKS);
        let tx = ctx
            .node
            .wallet
            .send_psbt(psbt, blocks)
            .await
            .map_err(wallet_error)?;
        Ok(json!({
            "tx": bitcoin::consensus::encode::serialize_hex(&tx),
            "txid": tx.compute_txid().to_string(),
        }))
    })
}

fn run_setversion(_ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (psbt, _) = psbt_param(&p, "psbt")?;
        let version = u32_param(&p, "version")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: version"))?;
        if version != 0 && version != 2 {
            return Err(RpcError::invalid_params("Could not set PSBT version"));
        }
        Ok(json!({ "psbt": render(&psbt, version)? }))
    })
}
