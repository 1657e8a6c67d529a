//! Built-in `autoclean` plugin, as CLN's: deletes old settled and failed forwards, completed
//! and failed payments, paid and expired invoices, every `autoclean-cycle` seconds, each
//! kind once it is older than its `autoclean-<subsystem>-age` (0: kept forever, the default).
//! It works through the node's own RPC (`listforwards`/`delforward`, `listsendpays`/`delpay`,
//! `listinvoices`/`delinvoice`), a page of entries at a time, and keeps how many it deleted
//! in the datastore (`autoclean/<subsystem>/num`), so totals survive restarts.
//!
//! Methods: `autoclean-status [subsystem]`, `autoclean-once subsystem age`.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

mod subsystem;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulgur_plugin_sdk::{Builder, OptionSpec, Plugin, RpcError, RpcMethod, Transport};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::subsystem::{List, Subsystem};

const OPT_CYCLE: &str = "autoclean-cycle";
/// CLN's default cycle: an hour.
const DEFAULT_CYCLE: u64 = 3600;
/// Entries read per list call (CLN reads 10,000; smaller pages keep each reply short).
const PAGE: u64 = 1000;

type Counts = [u64; Subsystem::ALL.len()];

struct State {
    /// Deletions ever, per subsystem (as stored in the datastore); read from there when
    /// first needed, so a node that never asks costs no call at start-up.
    totals: tokio::sync::Mutex<Option<Counts>>,
    /// One cleaning at a time (the timer's or `autoclean-once`), so totals add up.
    cleaning: tokio::sync::Mutex<()>,
    /// The cycle in seconds; `setconfig` changes it and wakes the timer.
    cycle: AtomicU64,
    rearm: tokio::sync::Notify,
}

type P = Plugin<Arc<State>>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn datastore_key(s: Subsystem) -> Value {
    json!(["autoclean", s.name(), "num"])
}

/// The age the timer uses for `s` (0: not cleaned).
fn age(plugin: &P, s: Subsystem) -> u64 {
    plugin
        .option_i64(&s.age_option())
        .map_or(s.default_age(), |v| u64::try_from(v).unwrap_or(0))
}

/// What one cleaning did, per subsystem.
#[derive(Default)]
struct Outcome {
    cleaned: Counts,
    uncleaned: Counts,
}

/// Deletes every entry older than its subsystem's age in `ages` (0: leave it).
async fn clean(plugin: &P, ages: Counts) -> Result<Outcome, RpcError> {
    let _one = plugin.state().cleaning.lock().await;
    // Totals first: deletions that could not be counted must not happen.
    loaded(plugin, &mut *plugin.state().totals.lock().await).await?;
    let mut out = Outcome::default();
    let now = now();
    for list in List::ALL {
        if !Subsystem::ALL
            .iter()
            .any(|s| s.list() == Some(list) && ages[s.index()] > 0)
        {
            continue;
        }
        clean_list(plugin, list, &ages, now, &mut out).await?;
    }
    let changed: Vec<(Subsystem, u64)> = {
        let mut guard = plugin.state().totals.lock().await;
        let totals = loaded(plugin, &mut guard).await?;
        Subsystem::ALL
            .into_iter()
            .filter(|s| out.cleaned[s.index()] > 0)
            .map(|s| {
                totals[s.index()] += out.cleaned[s.index()];
                (s, totals[s.index()])
            })
            .collect()
    };
    for (s, total) in changed {
        plugin.debug(format!(
            "cleaned {} from {}",
            out.cleaned[s.index()],
            s.name()
        ));
        let r = plugin
            .rpc()
            .call(
                "datastore",
                json!({"key": datastore_key(s), "string": total.to_string(),
                       "mode": "create-or-replace"}),
            )
            .await;
        if let Err(e) = r {
            plugin.warn(format!("cannot store the {} total: {e}", s.name()));
        }
    }
    Ok(out)
}

/// One list, a page at a time in creation order.
async fn clean_list(
    plugin: &P,
    list: List,
    ages: &Counts,
    now: u64,
    out: &mut Outcome,
) -> Result<(), RpcError> {
    let (command, member) = list.command();
    let mut start = 0u64;
    loop {
        let page = plugin
            .rpc()
            .call(
                command,
                json!({"index": "created", "start": start, "limit": PAGE}),
            )
            .await
            .map_err(|e| RpcError::lightningd(format!("{command} failed: {e}")))?;
        let entries = page
            .get(member)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in &entries {
            let Some((s, time)) = list.classify(entry) else {
                continue;
            };
            let age = ages[s.index()];
            if age == 0 {
                continue;
            }
            if time > now.saturating_sub(age) {
                out.uncleaned[s.index()] += 1;
                continue;
            }
            match plugin
                .rpc()
                .call(list.delete_command(), list.delete_params(entry))
                .await
            {
                Ok(_) => out.cleaned[s.index()] += 1,
                Err(e) => plugin.warn(format!("{} del failed: {e}", s.name())),
            }
        }
        let last = entries
            .iter()
            .filter_map(|e| e.get("created_index").and_then(Value::as_u64))
            .max();
        match last {
            Some(last) if entries.len() as u64 >= PAGE => start = last + 1,
            _ => return Ok(()),
        }
    }
}

fn subsystem_param(v: &Value) -> Result<Subsystem, RpcError> {
    v.as_str().and_then(Subsystem::parse).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "subsystem: should be a valid subsystem name: invalid token '{v}'"
        ))
    })
}

/// `autoclean-status`'s and `autoclean-once`'s params, by name or position (the SDK's
/// binding: unknown names and extra positions are refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CleanParams {
    subsystem: Option<Value>,
    age: Option<Value>,
}

/// `autoclean-status [subsystem]`: per subsystem, whether the timer cleans it, at what age,
/// and how many entries were ever deleted.
async fn status(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p: CleanParams = fulgur_plugin_sdk::bind(&params, &["subsystem"])?;
    if p.age.is_some() {
        return Err(RpcError::invalid_params("unknown parameter: age"));
    }
    let only = p.subsystem.as_ref().map(subsystem_param).transpose()?;
    let totals = *loaded(&plugin, &mut *plugin.state().totals.lock().await).await?;
    let mut m = Map::new();
    for s in Subsystem::ALL {
        if only.is_some_and(|o| o != s) {
            continue;
        }
        let age = age(&plugin, s);
        let mut e = json!({"enabled": age != 0, "cleaned": totals[s.index()]});
        if age != 0 {
            e["age"] = json!(age);
        }
        m.insert(s.name().to_string(), e);
    }
    Ok(json!({ "autoclean": m }))
}

/// `autoclean-once subsystem age`: cleans one subsystem now.
async fn once(plugin: P, params: Value) -> Result<Value, RpcError> {
    let p: CleanParams = fulgur_plugin_sdk::bind(&params, &["subsystem", "age"])?;
    let s = p
        .subsystem
        .as_ref()
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: subsystem"))
        .and_then(subsystem_param)?;
    let raw = p
        .age
        .as_ref()
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: age"))?;
    let age = raw
        .as_u64()
        .or_else(|| raw.as_str().and_then(|t| t.parse().ok()))
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "age: should be an unsigned 64 bit integer: invalid token '{raw}'"
            ))
        })?;
    if age == 0 {
        return Err(RpcError::invalid_params(
            "age: Must be non-zero: invalid token '0'",
        ));
    }
    let mut ages = Counts::default();
    ages[s.index()] = age;
    let out = clean(&plugin, ages).await?;
    Ok(json!({"autoclean": {s.name(): {
        "cleaned": out.cleaned[s.index()],
        "uncleaned": out.uncleaned[s.index()],
    }}}))
}

/// Cleans every `autoclean-cycle` seconds with the configured ages.
async fn timer(plugin: P) {
    loop {
        let cycle = plugin.state().cycle.load(Ordering::SeqCst).max(1);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cycle)) => {}
            _ = plugin.state().rearm.notified() => continue,
        }
        let ages = Subsystem::ALL.map(|s| age(&plugin, s));
        if ages.iter().all(|a| *a == 0) {
            continue;
        }
        if let Err(e) = clean(&plugin, ages).await {
            plugin.warn(format!("autoclean: {e}"));
        }
    }
}

/// The totals, read from the datastore the first time (an error if it cannot be read:
/// counting from zero would overwrite the stored totals with smaller ones).
async fn loaded<'a>(plugin: &P, slot: &'a mut Option<Counts>) -> Result<&'a mut Counts, RpcError> {
    if slot.is_none() {
        let mut totals = Counts::default();
        for s in Subsystem::ALL {
            let v = plugin
                .rpc()
                .call("listdatastore", json!({"key": datastore_key(s)}))
                .await
                .map_err(|e| RpcError::lightningd(format!("cannot read autoclean totals: {e}")))?;
            totals[s.index()] = v
                .pointer("/datastore/0/string")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
        *slot = Some(totals);
    }
    Ok(slot.get_or_insert_default())
}

/// `setconfig` check for an int option: at least `min`; a new cycle re-arms the timer.
fn int_at_least(
    name: String,
    min: i64,
) -> impl Fn(P, Value) -> std::future::Ready<Result<(), RpcError>> + Send + Sync + 'static {
    move |plugin, v| {
        std::future::ready(match v.as_i64() {
            Some(n) if n >= min => {
                if name == OPT_CYCLE {
                    plugin.state().cycle.store(n as u64, Ordering::SeqCst);
                    plugin.state().rearm.notify_one();
                }
                Ok(())
            }
            _ => Err(RpcError::invalid_params(format!(
                "{name}: should be an integer of at least {min}, not {v}"
            ))),
        })
    }
}

fn builder() -> Builder<Arc<State>> {
    let mut b = Builder::<Arc<State>>::new()
        .dynamic(false)
        .option(
            OptionSpec::int(OPT_CYCLE, "Perform cleanup every given seconds")
                .default(DEFAULT_CYCLE as i64)
                .dynamic(),
        )
        .on_change(OPT_CYCLE, int_at_least(OPT_CYCLE.to_string(), 1));
    for s in Subsystem::ALL {
        let name = s.age_option();
        b = b
            .option(
                OptionSpec::int(
                    name.clone(),
                    format!(
                        "How old {} must be to be deleted (seconds; 0: never)",
                        s.name()
                    ),
                )
                .default(s.default_age() as i64)
                .dynamic(),
            )
            .on_change(name.clone(), int_at_least(name, 0));
    }
    b.rpcmethod(
        RpcMethod::new("autoclean-status", status)
            .usage("[subsystem]")
            .description("Show autoclean status")
            .long_description(
                "For each subsystem (or only {subsystem}): whether the timer cleans it, the \
                 age it waits for, and how many entries were ever deleted.",
            ),
    )
    .rpcmethod(
        RpcMethod::new("autoclean-once", once)
            .usage("subsystem age")
            .description("Perform a single run of autocleaning on one subsystem")
            .long_description(
                "Deletes the entries of {subsystem} (succeededforwards, failedforwards, \
                 succeededpays, failedpays, paidinvoices, expiredinvoices) older than {age} \
                 seconds, and says how many were deleted and how many are younger.",
            ),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fulgur_plugin_sdk::RunError> {
    let Some(configured) = builder().configure(Transport::stdio()).await? else {
        return Ok(());
    };
    let state = Arc::new(State {
        totals: tokio::sync::Mutex::new(None),
        cleaning: tokio::sync::Mutex::new(()),
        cycle: AtomicU64::new(DEFAULT_CYCLE),
        rearm: tokio::sync::Notify::new(),
    });
    let running = configured.start(state)?;
    let plugin = running.plugin();
    let cycle = plugin
        .option_i64(OPT_CYCLE)
        .and_then(|c| u64::try_from(c).ok())
        .filter(|c| *c > 0)
        .unwrap_or(DEFAULT_CYCLE);
    plugin.state().cycle.store(cycle, Ordering::SeqCst);
    tokio::spawn(timer(plugin));
    running.join().await
}
