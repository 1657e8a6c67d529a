//! Taking the PostgreSQL lease at start (docs/adr/0014-postgres-lease-and-fencing.md): a
//! node whose database another node holds waits as a **standby** (its RPC answers
//! `getinfo` and refuses the rest) and takes over when that node's lease expires.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::Config;
use crate::log::SourceLog;
use crate::rpc::{self, StandbyInfo};
use crate::store::lease::{Holder, Lease, STANDBY_POLL};

/// How this node names itself in the lease: its host and its network directory, so two
/// nodes on one machine differ and a restarted node finds its own lease.
fn holder_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", config.net_dir.display())
}

async fn try_acquire(dsn: &str, me: &str) -> Result<Result<Lease, Holder>, String> {
    let (dsn, me) = (dsn.to_string(), me.to_string());
    tokio::task::spawn_blocking(move || Lease::try_acquire(&dsn, &me))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Takes the lease of the database at `dsn`, as a standby meanwhile if another node holds
/// it. `None` if the node was told to stop (SIGTERM, SIGINT) while standing by.
pub(crate) async fn take_lease(
    config: &Config,
    dsn: &str,
    node_id: &str,
    log: &SourceLog,
) -> Result<Option<Lease>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let me = holder_name(config);
    let mut served: Option<watch::Sender<bool>> = None;
    let info = Arc::new(Mutex::new(StandbyInfo {
        id: node_id.to_string(),
        network: config.network.as_str().to_string(),
        ..StandbyInfo::default()
    }));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut last_error = String::new();
    loop {
        match try_acquire(dsn, &me).await {
            Ok(Ok(lease)) => {
                if let Some(stop) = served.take() {
                    let _ = stop.send(true);
                    let _ = std::fs::remove_file(&config.rpc_path);
                }
                log.info(&format!(
                    "Took the database's lease as {me} (epoch {}): this node is active",
                    lease.epoch()
                ));
                return Ok(Some(lease));
            }
            Ok(Err(holder)) => {
                {
                    let mut i = info.lock().unwrap_or_else(|p| p.into_inner());
                    i.active = holder.holder.clone();
                    i.epoch = holder.epoch;
                }
                if served.is_none() {
                    log.info(&format!(
                        "Standby: {} holds the database's lease (epoch {}, {:.1} s left); \
                         taking over when it expires",
                        holder.holder, holder.epoch, holder.expires_in
                    ));
                    let listener = crate::node::listen_rpc(config).await?;
                    let (tx, rx) = watch::channel(false);
                    tokio::spawn(rpc::serve_standby(listener, info.clone(), rx));
                    served = Some(tx);
                }
            }
            // The database unreachable: a standby keeps trying (a first start fails).
            Err(e) if served.is_some() => {
                if e != last_error {
                    log.unusual(&format!("standby: cannot reach the database: {e}"));
                    last_error = e;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(STANDBY_POLL) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if let Some(stop) = served.take() {
        let _ = stop.send(true);
        let _ = std::fs::remove_file(&config.rpc_path);
    }
    log.info("Standby stopped");
    Ok(None)
}
