//! Built-in `bookkeeper` plugin, as CLN's: an accountant's view of the node's funds, kept
//! per account (`wallet`, each channel by its channel id, `external`), with the income
//! statement, CSV exports, reports and channel yields worked out from it.
//!
//! It reads the node's `listchainmoves` and `listchannelmoves` a page at a time by
//! `created_index` before answering each command (and when a `coin_movement` notification
//! says something moved), and keeps the books in memory, rebuilt from those lists at start.
//! Descriptions (looked up in `listinvoices`/`listsendpays` or set with the
//! `bkpr-editdescription*` commands) and the last index read are kept in the node's
//! datastore under `bookkeeper/...`, as CLN keeps them.
//!
//! Methods: `bkpr-listbalances`, `bkpr-listaccountevents`, `bkpr-listincome`, `bkpr-inspect`,
//! `bkpr-dumpincomecsv`, `bkpr-channelsapy`, `bkpr-report`,
//! `bkpr-editdescriptionbypaymentid`, `bkpr-editdescriptionbyoutpoint`.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

mod apy;
mod income;
mod ledger;
mod params;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fulgur_plugin_sdk::{Builder, Event, Plugin, RpcError, RpcMethod, Transport};
use serde_json::{Value, json};

use crate::income::{CsvFormat, Escape, Income, Source};
use crate::ledger::{ChainEvent, ChannelEvent, Ledger, Lookup, OnchainFee, is_channel};
use crate::params::Params;

/// Moves read per list call.
const PAGE: u64 = 1000;
/// CLN's code for the plugin's own errors.
const PLUGIN_ERROR: i64 = -3;

struct State {
    books: tokio::sync::Mutex<Books>,
    /// The network's bech32 prefix (`bcrt`, `tb`, `bc`...), CLN's `currency`.
    hrp: String,
}

struct Books {
    ledger: Ledger,
    /// Whether descriptions and indices were read from the datastore.
    loaded: bool,
    /// The indices last stored: moves up to them were read before (their descriptions
    /// are in the datastore already, so they are not looked up again).
    stored_chain: u64,
    stored_channel: u64,
}

type P = Plugin<Arc<State>>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hrp(network: &str) -> String {
    match network {
        "bitcoin" => "bc",
        "testnet" | "testnet4" => "tb",
        "signet" => "tbs",
        "regtest" => "bcrt",
        other => other,
    }
    .to_string()
}

fn call_failed(method: &str) -> impl Fn(fulgur_plugin_sdk::CallError) -> RpcError + '_ {
    move |e| RpcError::new(PLUGIN_ERROR, format!("{method} failed: {e}"))
}

/// Datastore keys, as CLN names them.
fn index_key(list: &str) -> Value {
    json!(["bookkeeper", format!("{list}_index")])
}

fn description_key(kind: &str, id: &str) -> Value {
    json!(["bookkeeper", "description", kind, id])
}

/// A datastore entry's text: `string`, else its `hex` bytes read as UTF-8.
fn datastore_text(entry: &Value) -> Option<String> {
    if let Some(s) = entry.get("string").and_then(Value::as_str) {
        return Some(s.to_string());
    }
    let bytes = fulgur_plugin_sdk::hex::decode(entry.get("hex")?.as_str()?)?;
    String::from_utf8(bytes).ok()
}

async fn datastore_put(plugin: &P, key: Value, string: &str) {
    let r = plugin
        .rpc()
        .call(
            "datastore",
            json!({"key": key, "string": string, "mode": "create-or-replace"}),
        )
        .await;
    if let Err(e) = r {
        plugin.warn(format!("cannot write to the datastore: {e}"));
    }
}

/// Reads descriptions and the indices read before from the datastore.
async fn load(plugin: &P, books: &mut Books) -> Result<(), RpcError> {
    let ds = |key: Value| async move {
        plugin
            .rpc()
            .call("listdatastore", json!({ "key": key }))
            .await
            .map_err(call_failed("listdatastore"))
    };
    for (kind, map) in [("payment", 0), ("utxo", 1)] {
        let v = ds(json!(["bookkeeper", "description", kind])).await?;
        for e in v["datastore"].as_array().into_iter().flatten() {
            let id = e["key"].get(3).and_then(Value::as_str);
            if let (Some(id), Some(text)) = (id, datastore_text(e)) {
                let target = if map == 0 {
                    &mut books.ledger.payment_descriptions
                } else {
                    &mut books.ledger.utxo_descriptions
                };
                target.insert(id.to_string(), text);
            }
        }
    }
    for list in ["chainmoves", "channelmoves"] {
        let v = ds(index_key(list)).await?;
        let index = v
            .pointer("/datastore/0/hex")
            .and_then(Value::as_str)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        if list == "chainmoves" {
            books.stored_chain = index;
        } else {
            books.stored_channel = index;
        }
    }
    books.loaded = true;
    Ok(())
}

/// One page of `list<member>` (`chainmoves` or `channelmoves`) from `start`.
async fn page(plugin: &P, member: &str, start: u64) -> Result<Vec<Value>, RpcError> {
    let command = format!("list{member}");
    let v = plugin
        .rpc()
        .call(
            &command,
            json!({"index": "created", "start": start, "limit": PAGE}),
        )
        .await
        .map_err(call_failed(&command))?;
    Ok(v[member].as_array().cloned().unwrap_or_default())
}

/// Reads every move the node recorded since the last refresh, then looks up the
/// descriptions of payments new to us and notes how far it read.
async fn refresh(plugin: &P) -> Result<tokio::sync::MutexGuard<'_, Books>, RpcError> {
    let mut books = plugin.state().books.lock().await;
    if !books.loaded {
        load(plugin, &mut books).await?;
    }
    loop {
        let moves = page(plugin, "chainmoves", books.ledger.chain_index + 1).await?;
        for m in &moves {
            if let Err(e) = books.ledger.add_chain_move(m) {
                plugin.warn(format!("chain move skipped: {e}"));
            }
        }
        if (moves.len() as u64) < PAGE {
            break;
        }
    }
    let mut lookups: Vec<Lookup> = Vec::new();
    loop {
        let moves = page(plugin, "channelmoves", books.ledger.channel_index + 1).await?;
        for m in &moves {
            match books.ledger.add_channel_move(m) {
                Ok(Some(l)) if books.ledger.channel_index > books.stored_channel => lookups.push(l),
                Ok(_) => {}
                Err(e) => plugin.warn(format!("channel move skipped: {e}")),
            }
        }
        if (moves.len() as u64) < PAGE {
            break;
        }
    }
    for l in lookups {
        if books
            .ledger
            .payment_descriptions
            .contains_key(&l.payment_hash)
        {
            continue;
        }
        if let Some(d) = payment_description(plugin, &l).await {
            datastore_put(plugin, description_key("payment", &l.payment_hash), &d).await;
            books.ledger.payment_descriptions.insert(l.payment_hash, d);
        }
    }
    for (list, index) in [
        ("chainmoves", books.ledger.chain_index),
        ("channelmoves", books.ledger.channel_index),
    ] {
        let stored = if list == "chainmoves" {
            &mut books.stored_chain
        } else {
            &mut books.stored_channel
        };
        if index > *stored {
            *stored = index;
            let r = plugin
                .rpc()
                .call(
                    "datastore",
                    json!({"key": index_key(list), "hex": format!("{index:016x}"),
                           "mode": "create-or-replace"}),
                )
                .await;
            if let Err(e) = r {
                plugin.warn(format!("cannot store the {list} index: {e}"));
            }
        }
    }
    Ok(books)
}

/// The description of a payment: the invoice's for one we were paid, the paid invoice's
/// for one we made (from its own field, else decoded from its bolt11/bolt12).
async fn payment_description(plugin: &P, l: &Lookup) -> Option<String> {
    let (command, member) = if l.incoming {
        ("listinvoices", "invoices")
    } else {
        ("listsendpays", "payments")
    };
    let v = match plugin
        .rpc()
        .call(command, json!({"payment_hash": l.payment_hash}))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            plugin.warn(format!("{command} failed: {e}"));
            return None;
        }
    };
    for entry in v[member].as_array().into_iter().flatten() {
        if let Some(d) = entry.get("description").and_then(Value::as_str) {
            return Some(d.to_string());
        }
        let Some(s) = entry
            .get("bolt11")
            .or_else(|| entry.get("bolt12"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        match plugin.rpc().call("decode", json!({ "string": s })).await {
            Ok(d) => {
                let text = d
                    .get("description")
                    .or_else(|| d.get("offer_description"))
                    .or_else(|| d.get("description_hash"))
                    .and_then(Value::as_str);
                return text.map(str::to_string);
            }
            Err(e) => {
                plugin.warn(format!(
                    "cannot decode the invoice of {}: {e}",
                    l.payment_hash
                ));
                return None;
            }
        }
    }
    plugin.debug(format!("no description for {}", l.payment_hash));
    None
}

/// Refreshes in the background when the node reports a move.
async fn on_coin_movement(plugin: P, _event: Event) {
    if let Err(e) = refresh(&plugin).await {
        plugin.debug(format!("refresh after coin_movement: {e}"));
    }
}

fn chain_json(l: &Ledger, hrp: &str, e: &ChainEvent) -> Value {
    let mut v = json!({"account": e.account});
    if let Some(o) = &e.origin {
        v["origin"] = json!(o);
    }
    v["type"] = json!("chain");
    v["tag"] = json!(e.tag);
    v["credit_msat"] = json!(e.credit);
    v["debit_msat"] = json!(e.debit);
    v["currency"] = json!(hrp);
    v["outpoint"] = json!(e.outpoint());
    if let Some(t) = &e.spending_txid {
        v["txid"] = json!(t);
    }
    if let Some(p) = &e.payment_id {
        v["payment_id"] = json!(p);
    }
    v["timestamp"] = json!(e.timestamp);
    v["blockheight"] = json!(l.blockheight(e));
    if let Some(d) = l.chain_description(e) {
        v["description"] = json!(d);
    }
    v
}

fn channel_json(l: &Ledger, hrp: &str, e: &ChannelEvent) -> Value {
    let mut v = json!({"account": e.account, "type": "channel", "tag": e.tag,
                       "credit_msat": e.credit, "debit_msat": e.debit});
    if e.fees > 0 {
        v["fees_msat"] = json!(e.fees);
    }
    v["currency"] = json!(hrp);
    if let Some(p) = &e.payment_id {
        v["payment_id"] = json!(p);
        v["part_id"] = json!(e.part_id.unwrap_or(0));
        if let Some(d) = l.channel_description(e) {
            v["description"] = json!(d);
        }
    }
    v["timestamp"] = json!(e.timestamp);
    v["is_rebalance"] = json!(l.is_rebalance(e.id));
    v
}

fn fee_json(hrp: &str, f: &OnchainFee) -> Value {
    json!({"account": f.account, "type": "onchain_fee", "tag": "onchain_fee",
           "credit_msat": f.credit, "debit_msat": f.debit, "currency": hrp,
           "timestamp": f.timestamp, "txid": f.txid})
}

/// Events merged by time: chain moves first, then channel moves, then fees.
fn events_json(
    l: &Ledger,
    hrp: &str,
    chain: &[&ChainEvent],
    channel: &[&ChannelEvent],
    fees: &[&OnchainFee],
) -> Vec<Value> {
    let order = income::by_time(
        &chain.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        &channel.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        &fees.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
    );
    order
        .into_iter()
        .map(|(list, n)| match list {
            Source::Chain => chain_json(l, hrp, chain[n]),
            Source::Channel => channel_json(l, hrp, channel[n]),
            Source::Fee => fee_json(hrp, fees[n]),
        })
        .collect()
}

fn sorted_channel<'a>(it: impl Iterator<Item = &'a ChannelEvent>) -> Vec<&'a ChannelEvent> {
    let mut v: Vec<&ChannelEvent> = it.collect();
    v.sort_by_key(|e| (e.timestamp, e.id));
    v
}

fn sorted_fees<'a>(it: impl Iterator<Item = &'a OnchainFee>) -> Vec<&'a OnchainFee> {
    let mut v: Vec<&OnchainFee> = it.collect();
    v.sort_by_key(|f| f.timestamp);
    v
}

async fn listbalances(plugin: P, params: Value) -> Result<Value, RpcError> {
    Params::new(&params, &[])?;
    let books = refresh(&plugin).await?;
    let l = &books.ledger;
    let mut accounts = Vec::new();
    for a in l.accounts() {
        if a.name == ledger::EXTERNAL {
            continue;
        }
        let mut v = json!({"account": a.name});
        if let Some(peer) = &a.peer_id {
            v["peer_id"] = json!(peer);
            v["we_opened"] = json!(a.we_opened);
            v["account_closed"] = json!(a.closed_event.is_some());
            v["account_resolved"] = json!(a.resolved_block.is_some());
            if let Some(b) = a.resolved_block {
                v["resolved_at_block"] = json!(b);
            }
        }
        let balances: Vec<Value> = l
            .balance(&a.name)
            .map(|(credit, debit)| {
                json!({"balance_msat": credit.saturating_sub(debit),
                       "coin_type": plugin.state().hrp})
            })
            .into_iter()
            .collect();
        v["balances"] = json!(balances);
        accounts.push(v);
    }
    Ok(json!({ "accounts": accounts }))
}

async fn listaccountevents(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(&params, &["account", "payment_id"])?;
    let account = p.string("account")?;
    let payment_id = p.hash("payment_id")?;
    let books = refresh(&plugin).await?;
    let l = &books.ledger;
    let hrp = &plugin.state().hrp;
    let events = match (account, payment_id) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params(
                "Can only specify one of {account} or {payment_id}",
            ));
        }
        (Some(a), None) => {
            if l.account(&a).is_none() {
                return Err(RpcError::invalid_params(format!("Account '{a}' not found")));
            }
            events_json(
                l,
                hrp,
                &income::sorted(l.chain.iter().filter(|e| e.account == a)),
                &sorted_channel(l.channel.iter().filter(|e| e.account == a)),
                &sorted_fees(l.fees.iter().filter(|f| f.account == a)),
            )
        }
        // A payment id may also name a transaction.
        (None, Some(id)) => events_json(
            l,
            hrp,
            &income::sorted(l.events_by_txid(&id).into_iter()),
            &sorted_channel(
                l.channel
                    .iter()
                    .filter(|e| e.payment_id.as_deref() == Some(id.as_str())),
            ),
            &sorted_fees(l.fees.iter().filter(|f| f.txid == id)),
        ),
        (None, None) => events_json(
            l,
            hrp,
            &income::sorted(l.chain.iter()),
            &sorted_channel(l.channel.iter()),
            &sorted_fees(l.fees.iter()),
        ),
    };
    Ok(json!({ "events": events }))
}

fn income_json(hrp: &str, i: &Income) -> Value {
    let mut v = json!({"account": i.account, "tag": i.tag, "credit_msat": i.credit,
                       "debit_msat": i.debit, "currency": hrp, "timestamp": i.timestamp});
    for (k, f) in [
        ("description", &i.description),
        ("outpoint", &i.outpoint),
        ("txid", &i.txid),
        ("payment_id", &i.payment_id),
    ] {
        if let Some(s) = f {
            v[k] = json!(s);
        }
    }
    v
}

async fn listincome(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(&params, &["consolidate_fees", "start_time", "end_time"])?;
    let consolidate = p.bool("consolidate_fees")?.unwrap_or(true);
    let start = p.u64("start_time")?.unwrap_or(0);
    let end = p.u64("end_time")?.unwrap_or(u64::MAX);
    let books = refresh(&plugin).await?;
    let hrp = &plugin.state().hrp;
    let events: Vec<Value> = income::list(&books.ledger, start, end, consolidate)
        .iter()
        .map(|i| income_json(hrp, i))
        .collect();
    Ok(json!({ "income_events": events }))
}

async fn inspect(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(&params, &["account"])?;
    let name = p.required_string("account")?;
    let books = refresh(&plugin).await?;
    let l = &books.ledger;
    let hrp = &plugin.state().hrp;
    if !is_channel(&name) {
        return Err(RpcError::new(
            PLUGIN_ERROR,
            "`inspect` not supported for non-channel accounts",
        ));
    }
    if l.account(&name).is_none() {
        return Err(RpcError::new(
            PLUGIN_ERROR,
            format!("Account {name} not found"),
        ));
    }
    let Some((sets, _complete)) = l.txo_chain(&name) else {
        return Ok(json!({"txs": []}));
    };
    let fees = Ledger::fee_sums(l.fees.iter().filter(|f| f.account == name));
    let mut txs = Vec::new();
    for set in sets {
        let mut tx = json!({"txid": set.txid});
        if let Some(h) = set
            .pairs
            .iter()
            .filter_map(|p| p.txo)
            .map(|t| l.blockheight(t))
            .find(|h| *h > 0)
        {
            tx["blockheight"] = json!(h);
        }
        let paid = fees
            .iter()
            .find(|s| s.txid == set.txid)
            .map_or(0, |s| s.paid);
        tx["fees_paid_msat"] = json!(paid);
        let mut outputs = Vec::new();
        for pr in &set.pairs {
            let belongs = match (pr.txo, pr.spend) {
                (Some(t), _) => match &t.origin {
                    Some(o) => *o == name,
                    None => t.account == name || t.account == ledger::WALLET,
                },
                (None, Some(s)) => s.account == name,
                (None, None) => false,
            };
            if !belongs {
                continue;
            }
            let mut o = serde_json::Map::new();
            if let Some(t) = pr.txo {
                o.insert("account".into(), json!(t.account));
                o.insert("outnum".into(), json!(t.vout));
                o.insert("output_tag".into(), json!(t.tag));
                o.insert("output_value_msat".into(), json!(t.output_value));
                o.insert("credit_msat".into(), json!(t.credit));
                o.insert("currency".into(), json!(hrp));
                if let Some(origin) = &t.origin {
                    o.insert("originating_account".into(), json!(origin));
                }
            }
            if let Some(s) = pr.spend {
                if pr.txo.is_none() {
                    o.insert("account".into(), json!(s.account));
                    o.insert("outnum".into(), json!(s.vout));
                    o.insert("output_value_msat".into(), json!(s.output_value));
                    o.insert("currency".into(), json!(hrp));
                }
                o.insert("spend_tag".into(), json!(s.tag));
                o.insert("spending_txid".into(), json!(s.spending_txid));
                o.insert("debit_msat".into(), json!(s.debit));
                if let Some(pid) = &s.payment_id {
                    o.insert("payment_id".into(), json!(pid));
                }
            }
            outputs.push(Value::Object(o));
        }
        tx["outputs"] = json!(outputs);
        txs.push(tx);
    }
    Ok(json!({ "txs": txs }))
}

async fn dumpincomecsv(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(
        &params,
        &[
            "csv_format",
            "csv_file",
            "consolidate_fees",
            "start_time",
            "end_time",
        ],
    )?;
    let raw = p.required("csv_format")?;
    let format = raw.as_str().and_then(CsvFormat::parse).ok_or_else(|| {
        params::bad(
            "csv_format",
            &format!("should be one of: {}", CsvFormat::list()),
            raw,
        )
    })?;
    let file = p.string("csv_file")?;
    let consolidate = p.bool("consolidate_fees")?.unwrap_or(true);
    let start = p.u64("start_time")?.unwrap_or(0);
    let end = p.u64("end_time")?.unwrap_or(u64::MAX);
    let books = refresh(&plugin).await?;
    let events = income::list(&books.ledger, start, end, consolidate);
    drop(books);
    let file = file.unwrap_or_else(|| format!("cln_incomestmt_{}_{}.csv", format.name(), now()));
    // Relative names are in the node's network directory, where CLN's plugins run.
    let path = PathBuf::from(&plugin.configuration().lightning_dir).join(&file);
    let text = income::csv(format, &events, &plugin.state().hrp);
    std::fs::write(&path, text).map_err(|e| {
        RpcError::new(
            PLUGIN_ERROR,
            format!("Unable to create csv file: Failed to open csv file {file}: {e}"),
        )
    })?;
    Ok(json!({"csv_file": file, "csv_format": format.name()}))
}

async fn channelsapy(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(&params, &["start_time", "end_time"])?;
    let start = p.u64("start_time")?.unwrap_or(0);
    let end = p.u64("end_time")?.unwrap_or(u64::MAX);
    let books = refresh(&plugin).await?;
    let info = plugin
        .rpc()
        .call("getinfo", json!({}))
        .await
        .map_err(call_failed("getinfo"))?;
    let height = info["blockheight"]
        .as_u64()
        .and_then(|h| u32::try_from(h).ok())
        .unwrap_or(0);
    let apys: Vec<Value> = apy::compute(&books.ledger, start, end, height)
        .iter()
        .map(apy::to_json)
        .collect();
    Ok(json!({ "channels_apy": apys }))
}

async fn report(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(
        &params,
        &["format", "headers", "escape", "start_time", "end_time"],
    )?;
    let raw = p.required("format")?;
    let text = raw
        .as_str()
        .ok_or_else(|| params::bad("format", "should be a string", raw))?;
    let pieces = income::parse_report(text).map_err(|e| params::bad("format", &e, raw))?;
    let headers: Vec<String> = match p.get("headers") {
        None => Vec::new(),
        Some(h) => h
            .as_array()
            .ok_or_else(|| params::bad("headers", "should be an array", h))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| params::bad("headers", "should be a string", s))
            })
            .collect::<Result<_, _>>()?,
    };
    let escape = match p.get("escape") {
        None => Escape::None,
        Some(e) if e.as_str() == Some("none") => Escape::None,
        Some(e) if e.as_str() == Some("csv") => Escape::Csv,
        Some(e) => return Err(params::bad("escape", "should be `csv` or `none`", e)),
    };
    let start = p.u64("start_time")?.unwrap_or(0);
    let end = p.u64("end_time")?.unwrap_or(u64::MAX);
    let books = refresh(&plugin).await?;
    let mut lines = headers;
    lines.extend(
        income::list(&books.ledger, start, end, true)
            .iter()
            .map(|i| income::format_event(&pieces, escape, i)),
    );
    Ok(json!({"report": lines, "format-hint": "simple"}))
}

/// Sets a description (`kind`: `payment` or `utxo`) in the datastore and the books, then
/// gives the events it now shows on.
async fn set_description(
    plugin: &P,
    kind: &str,
    id: &str,
    description: String,
) -> Result<Value, RpcError> {
    let mut books = refresh(plugin).await?;
    datastore_put(plugin, description_key(kind, id), &description).await;
    let l = &mut books.ledger;
    let by_payment = kind == "payment";
    let map = if by_payment {
        &mut l.payment_descriptions
    } else {
        &mut l.utxo_descriptions
    };
    map.insert(id.to_string(), description);
    let l = &books.ledger;
    let chain = income::sorted(l.chain.iter().filter(|e| {
        if by_payment {
            e.payment_id.as_deref() == Some(id)
        } else {
            e.credit > 0 && e.outpoint() == id
        }
    }));
    let channel = sorted_channel(
        l.channel
            .iter()
            .filter(|e| by_payment && e.payment_id.as_deref() == Some(id)),
    );
    let updated = events_json(l, &plugin.state().hrp, &chain, &channel, &[]);
    Ok(json!({ "updated": updated }))
}

async fn edit_by_payment_id(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(&params, &["payment_id", "description"])?;
    let id = p
        .hash("payment_id")?
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: payment_id"))?;
    let description = p.required_string("description")?;
    set_description(&plugin, "payment", &id, description).await
}

async fn edit_by_outpoint(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p = Params::new(&params, &["outpoint", "description"])?;
    let raw = p.required("outpoint")?;
    let (txid, vout) = raw
        .as_str()
        .and_then(ledger::parse_outpoint)
        .ok_or_else(|| params::bad("outpoint", "should be a txid:outnum", raw))?;
    let description = p.required_string("description")?;
    set_description(&plugin, "utxo", &format!("{txid}:{vout}"), description).await
}

fn method<F, Fut>(name: &str, usage: &str, description: &str, handler: F) -> RpcMethod<Arc<State>>
where
    F: Fn(P, Value) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, RpcError>> + Send + 'static,
{
    RpcMethod::new(name, handler)
        .usage(usage)
        .description(description)
}

fn builder() -> Builder<Arc<State>> {
    Builder::<Arc<State>>::new()
        .dynamic(false)
        .subscribe("coin_movement", on_coin_movement)
        .rpcmethod(method(
            "bkpr-listbalances",
            "",
            "List current account balances",
            listbalances,
        ))
        .rpcmethod(method(
            "bkpr-listaccountevents",
            "[account] [payment_id]",
            "List all events for an {account} (or payment_id)",
            listaccountevents,
        ))
        .rpcmethod(method(
            "bkpr-listincome",
            "[consolidate_fees] [start_time] [end_time]",
            "List all income impacting events",
            listincome,
        ))
        .rpcmethod(method(
            "bkpr-inspect",
            "account",
            "See the current on-chain state of a channel {account}",
            inspect,
        ))
        .rpcmethod(method(
            "bkpr-dumpincomecsv",
            "csv_format [csv_file] [consolidate_fees] [start_time] [end_time]",
            "Write the income events to a CSV file in {csv_format}",
            dumpincomecsv,
        ))
        .rpcmethod(method(
            "bkpr-channelsapy",
            "[start_time] [end_time]",
            "Routing and fee statistics per channel, as yearly rates",
            channelsapy,
        ))
        .rpcmethod(method(
            "bkpr-report",
            "format [headers] [escape] [start_time] [end_time]",
            "Format each income event with {format}",
            report,
        ))
        .rpcmethod(method(
            "bkpr-editdescriptionbypaymentid",
            "payment_id description",
            "Set the description of the events of a payment",
            edit_by_payment_id,
        ))
        .rpcmethod(method(
            "bkpr-editdescriptionbyoutpoint",
            "outpoint description",
            "Set the description of the events of an output",
            edit_by_outpoint,
        ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fulgur_plugin_sdk::RunError> {
    let Some(configured) = builder().configure(Transport::stdio()).await? else {
        return Ok(());
    };
    let hrp = hrp(&configured.configuration().network);
    let state = Arc::new(State {
        books: tokio::sync::Mutex::new(Books {
            ledger: Ledger::new(),
            loaded: false,
            stored_chain: 0,
            stored_channel: 0,
        }),
        hrp,
    });
    let running = configured.start(state)?;
    running.join().await
}
