//! What the chain, the wallet and the log tell the plugins, in CLN's JSON: the chain's
//! [`ChainPlugins`](crate::chain::ChainPlugins) over the plugin host (CLN's backend methods
//! and `block_added`), the wallet's `coin_movement` notifications and the `log` and
//! `warning` notifications. `fulgurd` only connects them (docs/adr/0009-host-crates.md).

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;

use crate::config::Network;
use crate::log::{Level, Record};
use crate::plugin::PluginHost;
use crate::store::Store;

/// The chain's view of the plugin host: CLN's backend methods and `block_added`.
pub struct ChainPluginHost(pub Arc<PluginHost>);

impl crate::chain::ChainPlugins for ChainPluginHost {
    fn serves(&self, method: &str) -> bool {
        self.0.method_owner(method).is_some()
    }

    fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> crate::chain::BoxFuture<'_, Result<serde_json::Value, String>> {
        let method = method.to_string();
        Box::pin(async move {
            let p = self
                .0
                .method_owner(&method)
                .ok_or_else(|| format!("no plugin serves {method}"))?;
            let resp = p
                .request(&method, &params, None)
                .await
                .map_err(|_| format!("plugin {} died during {method}", p.name))?;
            crate::plugin::outcome(&resp)
                .cloned()
                .map_err(|e| format!("{} error: bad response to {method}: {}", p.name, e.message))
        })
    }

    fn block_added(&self, hash: bitcoin::BlockHash, height: u32) {
        self.0.notify(
            "block_added",
            json!({"hash": hash.to_string(), "height": height}),
        );
    }
}

/// Confirmed deposits and withdrawals as CLN's `coin_movement` (account `wallet`), for
/// the wallet's `on_movement`.
pub fn wallet_movements(
    plugins: Arc<PluginHost>,
    store: Store,
    node_id: String,
    network: Network,
    log: fulgur_base::log::SourceLog,
) -> crate::wallet::MovementSink {
    let coin = match network {
        Network::Bitcoin => "bc",
        Network::Regtest => "bcrt",
        _ => "tb",
    };
    Box::new(move |m| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let msat = m.amount_sat * 1000;
        let row = crate::store::moves::ChainMove {
            account_id: "wallet".into(),
            primary_tag: if m.deposit { "deposit" } else { "withdrawal" }.into(),
            credit_msat: if m.deposit { msat } else { 0 },
            debit_msat: if m.deposit { 0 } else { msat },
            timestamp: now,
            utxo: m.utxo.to_string(),
            output_msat: msat,
            blockheight: m.height,
            spending_txid: m.spending_txid.map(|t| t.to_string()),
            ..Default::default()
        };
        // Recorded whether or not anyone listens (`listchainmoves`).
        let index = match store
            .with_sync(|c| crate::store::relaxed(c, |c| crate::store::moves::add_chain(c, &row)))
        {
            Ok(i) => i,
            Err(e) => {
                log.broken(&format!("cannot record wallet movement {}: {e}", row.utxo));
                return;
            }
        };
        if !plugins.has_subscriber("coin_movement") {
            return;
        }
        let mut p = json!({
            "version": 2,
            "coin_type": coin,
            "node_id": node_id,
            "type": "chain_mvt",
            "created_index": index,
            "account_id": "wallet",
            "credit_msat": row.credit_msat,
            "debit_msat": row.debit_msat,
            "timestamp": now,
            "primary_tag": row.primary_tag,
            "extra_tags": [],
            "utxo": row.utxo,
            "output_msat": msat,
            "blockheight": m.height,
        });
        if let Some(t) = &row.spending_txid {
            p["spending_txid"] = json!(t);
        }
        plugins.notify("coin_movement", p);
    })
}

/// Sends the log's records as `log` notifications (to their subscribers) and its
/// warnings (`UNUSUAL` and `BROKEN`) as `warning` notifications, until the feed closes.
pub async fn notify_log(plugins: Arc<PluginHost>, mut feed_rx: mpsc::UnboundedReceiver<Record>) {
    while let Some(r) = feed_rx.recv().await {
        let body = json!({"level": r.level.as_str(), "time": format!("{:.9}", r.time), "timestamp": r.timestamp, "source": r.source, "log": r.message});
        if plugins.has_log_subscribers() {
            plugins.notify("log", body.clone());
        }
        if r.level >= Level::Unusual {
            let mut w = body;
            w["level"] = json!(if r.level == Level::Broken {
                "error"
            } else {
                "warn"
            });
            plugins.notify("warning", w);
        }
    }
}

/// CLN's `db_write` hook over the plugin host: each transaction's writes go to the plugins
/// that registered it, and the transaction commits only if every one answered `continue`
/// (a plugin that refuses, answers otherwise or dies makes the write fail, and the node
/// stops: a backup that silently falls behind is worse than none).
pub struct DbWriteHook {
    plugins: Arc<PluginHost>,
    runtime: tokio::runtime::Handle,
}

impl DbWriteHook {
    /// The hook, delivering on `runtime` when called from outside it.
    pub fn new(plugins: Arc<PluginHost>, runtime: tokio::runtime::Handle) -> DbWriteHook {
        DbWriteHook { plugins, runtime }
    }
}

/// How long a transaction waits for the `db_write` plugins: a plugin that hangs (or a
/// backup on storage that stopped answering) makes the write fail instead of stopping the
/// node's every write for good.
const DB_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl crate::store::sql::WriteHook for DbWriteHook {
    fn deliver(&self, data_version: u64, writes: &[String]) -> Result<(), String> {
        use crate::hooks::ChainEnd;
        use fulgur_protocol::hooks::Hook;
        let payload = json!({"data_version": data_version, "writes": writes});
        // The chain runs as a task of its own; this thread (which holds the database)
        // waits for it with an OS-level timeout, so that nothing here depends on this
        // thread's place in the runtime.
        let (tx, rx) = std::sync::mpsc::channel();
        let plugins = self.plugins.clone();
        let wait = || {
            self.runtime.spawn(async move {
                let r = plugins
                    .hook(Hook::DbWrite, payload)
                    .run_noting_deaths()
                    .await;
                let _ = tx.send(r);
            });
            rx.recv_timeout(DB_WRITE_TIMEOUT)
        };
        // The store is called from the runtime's workers too: give the worker up while
        // waiting, as a blocking call must.
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            Ok(_) => return Err("db_write: cannot wait for the plugins on this thread".into()),
            Err(_) => wait(),
        };
        let (end, deaths) = answer.map_err(|_| {
            format!(
                "the db_write plugins did not answer within {} s",
                DB_WRITE_TIMEOUT.as_secs()
            )
        })?;
        if let Some(dead) = deaths.first() {
            return Err(format!("plugin {dead} died with the db_write call"));
        }
        match end {
            ChainEnd::Default(_) => Ok(()),
            ChainEnd::Stopped { plugin, answer } => {
                Err(format!("plugin {plugin} answered {answer} to db_write"))
            }
            ChainEnd::DeadlineExceeded { plugin } => {
                Err(format!("plugin {plugin} did not answer db_write in time"))
            }
        }
    }
}
