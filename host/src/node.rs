//! The node: builds every part from the configuration, runs until asked to stop, and
//! shuts down in CLN's order. The only owner of the process's life cycle.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bitcoin::bip32::{ChildNumber, Xpriv};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use tokio::sync::{mpsc, watch};

use crate::chain::Chain;
use crate::config::{Config, Database};
use crate::log::{Level, Logger, Record, SourceLog};
use crate::plugin::discovery::{self, Candidate};
use crate::plugin::{HostSettings, PluginHost};
use crate::rpc::{self, Node, StopControl};
use crate::store::Store;

/// Reads `hsm_secret`, creating it (32 random bytes, mode 0400) on first start.
fn hsm_secret(dir: &Path) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("hsm_secret");
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut s = [0u8; 32];
            s.copy_from_slice(&b);
            Ok(s)
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "hsm_secret is not 32 bytes",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut s = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut s))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)?;
            f.write_all(&s)?;
            f.sync_all()?;
            Ok(s)
        }
        Err(e) => Err(e),
    }
}

/// The node key, derived from the seed as LDK's `KeysManager` does (m/0'), so the id stays
/// the same when the Lightning engine takes over.
pub(crate) fn node_id(seed: &[u8; 32]) -> Result<String, String> {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(bitcoin::Network::Testnet, seed).map_err(|e| e.to_string())?;
    let child = ChildNumber::from_hardened_idx(0).map_err(|e| e.to_string())?;
    let key = master
        .derive_priv(&secp, &[child])
        .map_err(|e| e.to_string())?;
    Ok(PublicKey::from_secret_key(&secp, &key.private_key).to_string())
}

fn settings(config: &Config) -> HostSettings {
    HostSettings {
        net_dir: config.net_dir.clone(),
        rpc_file: config.rpc_file.clone(),
        network: config.network.as_str().to_string(),
        allow_deprecated_apis: config.allow_deprecated_apis,
        timeout: config.plugin_timeout,
        shutdown_grace: config.plugin_shutdown_grace,
        default_dir: config.lightning_dir.join("plugins"),
        reserved_methods: rpc::command_names().collect(),
        reserved_options: crate::config::CORE_OPTIONS.iter().map(|o| o.name).collect(),
        cln_plugin_options: crate::config::CLN_PLUGIN_OPTIONS
            .iter()
            .map(|o| o.name)
            .collect(),
        core_served_options: crate::config::CORE_SERVED_PLUGIN_OPTIONS.to_vec(),
        wasm_sandbox: config.wasm_sandbox.clone(),
        features: crate::lightning::feature_set(&config.channels),
    }
}

fn discover(config: &Config, log: &SourceLog) -> Result<discovery::Discovered, String> {
    let builtin = discovery::builtin_dir();
    let d = discovery::discover(
        &config.plugin_directives,
        builtin.as_deref(),
        &config.lightning_dir.join("plugins"),
    )?;
    for w in &d.warnings {
        log.unusual(w);
    }
    Ok(d)
}

fn create_dirs(config: &Config) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    for d in [&config.lightning_dir, &config.net_dir] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    Ok(())
}

/// `fulgurd --help`: the core options, then every plugin's options (which needs their
/// manifests, so plugins are started and stopped again without `init`).
pub async fn print_help(config: Config) -> Result<(), String> {
    let mut text = crate::config::command().render_help().to_string();
    let log = Logger::at(Level::Broken, Box::new(std::io::stderr()));
    let found = discover(&config, &log.source("lightningd"))?;
    if !found.plugins.is_empty() {
        create_dirs(&config)?;
        let (stop_tx, _stop_rx) = mpsc::unbounded_channel();
        let host = PluginHost::new(
            log,
            settings(&config),
            &config.plugin_opts,
            found.disabled.clone(),
            stop_tx,
        );
        let all: Vec<Candidate> = found
            .plugins
            .iter()
            .map(|c| Candidate {
                path: c.path.clone(),
                important: true,
            })
            .collect();
        host.start_all(&all).await.map_err(|e| e.to_string())?;
        text.push_str("\nPlugin options:\n");
        host.with_options(|t| {
            for c in &all {
                for o in t.for_plugin(&c.path) {
                    let kind = if o.decl.multi {
                        format!("{} (multi)", o.decl.kind.as_str())
                    } else {
                        o.decl.kind.as_str().to_string()
                    };
                    let default = o
                        .decl
                        .default
                        .as_ref()
                        .filter(|d| !d.is_null())
                        .map(|d| format!(" (default: {d})"))
                        .unwrap_or_default();
                    text.push_str(&format!(
                        "      --{} <{kind}>\n          {} [{}]{default}\n",
                        o.decl.name,
                        o.decl.description,
                        discovery::canonical(&c.path).display()
                    ));
                }
            }
        });
        host.shutdown_all().await;
    }
    print!("{text}");
    Ok(())
}

/// Runs the node until it is stopped; returns the process exit code.
pub async fn run(config: Config) -> Result<i32, String> {
    create_dirs(&config)?;
    // One node per directory: before touching anything in it (CLN exits 11 here).
    let _dir_lock = match crate::lifecycle::DirLock::acquire(&config.pid_file, &config.net_dir) {
        Ok(l) => l,
        Err(e @ crate::lifecycle::LockError::Held { .. }) => {
            eprintln!("{e}");
            return Ok(e.exit_code());
        }
        Err(e) => return Err(e.to_string()),
    };
    let log = Logger::to_files_as(
        config.log_filters.clone(),
        &config.log_files,
        crate::log::LineFormat {
            prefix: config.log_prefix.clone(),
            timestamps: config.log_timestamps,
        },
    )?;
    crate::lifecycle::install_panic_hook(&log);
    let main = log.source("lightningd");
    // Options given that do nothing here, and values LDK raised (CLN would refuse none).
    for note in &config.notes {
        main.unusual(note);
    }
    reopen_log_on_sighup(&log, &main);
    let found = discover(&config, &main)?;

    if let Some(secret) = &config.recover {
        write_recovered_secret(&config.net_dir, secret)?;
    }
    let seed = hsm_secret(&config.net_dir).map_err(|e| format!("hsm_secret: {e}"))?;
    let id = node_id(&seed)?;
    let store = match &config.database {
        Database::Sqlite(path, backup) => Store::open(path).and_then(|s| {
            // `sqlite3://MAIN:BACKUP`: every transaction written to both.
            if let Some(b) = backup {
                s.add_sqlite_backup(b)?;
            }
            Ok(s)
        }),
        Database::Postgres(dsn) => Store::open_postgres(dsn),
    }
    .map_err(|e| format!("{}: {e}", config.database.describe()))?;
    store.set_fatal_log(main.clone());
    // On PostgreSQL, several nodes may share the database: one is active, holding its
    // lease; the others stand by until it expires (docs/adr/0014).
    if let Database::Postgres(dsn) = &config.database {
        let Some(lease) = crate::standby::take_lease(&config, dsn, &id, &main).await? else {
            return Ok(0);
        };
        store
            .fence(lease.epoch())
            .map_err(|e| format!("{}: {e}", config.database.describe()))?;
        let st = store.clone();
        lease
            .keep(move |why| st.fatal("the database's lease", &why))
            .map_err(|e| format!("lease: {e}"))?;
        if let Some(src) = &config.import_sqlite {
            let held = store.holds_a_node().map_err(|e| e.to_string())?;
            if held {
                main.unusual(&format!(
                    "--fulgur-import-sqlite={}: the database already holds a node; not \
                     importing (remove the option)",
                    src.display()
                ));
            } else {
                let copied = store
                    .import_sqlite(src)
                    .map_err(|e| format!("--fulgur-import-sqlite={}: {e}", src.display()))?;
                let rows: usize = copied.iter().map(|(_, n)| n).sum();
                main.info(&format!(
                    "Imported {} ({rows} rows in {} tables) into {}",
                    src.display(),
                    copied.len(),
                    config.database.describe()
                ));
            }
        }
    }

    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<i32>();
    let plugins = PluginHost::new(
        log.clone(),
        settings(&config),
        &config.plugin_opts,
        found.disabled.clone(),
        stop_tx.clone(),
    );
    plugins
        .start_all(&found.plugins)
        .await
        .map_err(|e| e.to_string())?;
    // CLN's `db_write`: from now on every write transaction goes to the plugins that
    // registered it (CLN's backup plugin keeps a copy of the database so) before it commits.
    if plugins.has_hook(fulgur_protocol::hooks::Hook::DbWrite) {
        store
            .add_write_hook(Arc::new(rpc::DbWriteHook::new(
                plugins.clone(),
                // The plugins' own runtime: the hook's chain must go on while the writing
                // thread holds LDK's locks and the node's workers wait on them.
                crate::plugin::process::io_handle(),
            )))
            .map_err(|e| e.to_string())?;
    }

    // The peer ports first, as CLN: when the RPC answers, `getinfo.binding` is complete.
    // Connections that come before the engine starts wait in the kernel's backlog.
    let peer_listeners = bind_peers(&config.bind_addrs, &log.source("lightning")).await?;
    let listener = listen_rpc(&config).await?;
    let chain = Chain::new(
        config.network,
        config.bitcoin.clone(),
        store.clone(),
        Arc::new(rpc::ChainPluginHost(plugins.clone())),
        log.source("chain"),
    );
    chain.fees().set_ignore_limits(config.ignore_fee_limits);
    // The on-chain wallet: keys from the seed, state in the store, blocks from the stream
    // (from its own best block; a fresh wallet starts at the stream's tip).
    let wallet = crate::wallet::Wallet::open(
        store.clone(),
        &seed,
        crate::chain::settings::bitcoin_network(config.network),
        chain.fees(),
        Some(chain.broadcaster()),
    )
    .await
    .map_err(|e| format!("wallet: {e}"))?;
    wallet.set_min_emergency_sat(config.min_emergency_msat / 1000);
    // Confirmed deposits and withdrawals as CLN's `coin_movement` (account `wallet`).
    // And deposits to an invoice's on-chain fallback pay it (`--invoices-onchain-fallback`),
    // once the engine runs.
    let deposits: Arc<std::sync::OnceLock<std::sync::Weak<crate::lightning::Lightning>>> =
        Arc::default();
    let to_moves = rpc::wallet_movements(
        plugins.clone(),
        store.clone(),
        id.clone(),
        config.network,
        log.source("wallet"),
    );
    let engine_slot = deposits.clone();
    wallet.on_movement(Box::new(move |m| {
        if m.deposit
            && let Some(e) = engine_slot.get().and_then(std::sync::Weak::upgrade)
        {
            e.on_wallet_deposit(m.script.to_bytes(), m.amount_sat, m.utxo.to_string());
        }
        to_moves(m);
    }));
    let rescan = match (&config.recover, config.rescan) {
        (Some(_), None) => birthday_rescan(&config.net_dir, &seed, &main),
        _ => config.rescan,
    };
    chain.add_listener_rescanning("wallet", wallet.clone(), wallet.locator(), rescan);
    let alias = config
        .alias
        .clone()
        .unwrap_or_else(|| format!("fulgur-{}", id.get(2..10).unwrap_or_default()));
    let color = config
        .rgb
        .clone()
        .unwrap_or_else(|| id.get(2..8).unwrap_or("000000").to_string());
    let (stop, shutdown) = StopControl::new(stop_tx.clone());
    let secret_base = crate::lightning::keys::secret_base(&seed);
    // CLN's runes came out of commando, hence the secret CLN derives for "commando".
    let runes = crate::lightning::runebook::RuneBook::load(
        store.clone(),
        crate::lightning::keys::derive_secret(&secret_base, b"commando"),
    )
    .await
    .map_err(|e| e.to_string())?;
    let node = Arc::new(Node {
        config,
        main: main.clone(),
        store,
        plugins: plugins.clone(),
        chain: chain.clone(),
        wallet,
        clock: fulgur_base::clock::SystemClock::shared(),
        lightning: std::sync::OnceLock::new(),
        bindings: std::sync::Mutex::new(
            peer_listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect(),
        ),
        node_id: id.clone(),
        secret_base,
        runes,
        alias: alias.clone(),
        color: color.clone(),
        stop,
    });
    let (listen_stop_tx, listen_stop) = watch::channel(false);
    tokio::spawn(rpc::serve(node.clone(), listener, listen_stop));

    // Warnings (and everything, for `log` subscribers) become notifications.
    let (feed_tx, feed_rx) = mpsc::unbounded_channel::<Record>();
    log.set_feed(feed_tx);
    tokio::spawn(rpc::notify_log(plugins.clone(), feed_rx));

    if let Err(e) = plugins.init_all().await {
        let _ = listen_stop_tx.send(true);
        plugins.shutdown_all().await;
        let _ = std::fs::remove_file(&node.config.rpc_path);
        return Err(e.to_string());
    }
    // Backend plugins (if any) are initialized: pick the backend and stream blocks in the
    // background, so the RPC socket and plugins are usable while the backend catches up.
    if let Err(e) = chain.start(stop_tx) {
        let _ = listen_stop_tx.send(true);
        plugins.shutdown_all().await;
        let _ = std::fs::remove_file(&node.config.rpc_path);
        return Err(e);
    }
    start_lightning(
        node.clone(),
        seed,
        peer_listeners,
        log.source("lightning"),
        deposits,
    );
    main.info(&format!(
        "Server started with public key {id}, alias {alias} (color #{color}) and fulgurd {}",
        fulgur_base::VERSION
    ));

    let code = wait_for_stop(&mut stop_rx).await;
    main.info(&format!("Shutting down (exit code {code})"));
    let _ = listen_stop_tx.send(true);
    if let Some(l) = node.lightning.get() {
        l.stop();
    }
    plugins.shutdown_all().await;
    let _ = std::fs::remove_file(&node.config.rpc_path);
    shutdown.complete(&node).await;
    main.info("Shutdown complete");
    Ok(code)
}

/// Creates the RPC socket (`<lightning-dir>/<network>/lightning-rpc`, or `--rpc-file`).
pub(crate) async fn listen_rpc(config: &Config) -> Result<tokio::net::UnixListener, String> {
    rpc::listen(&config.rpc_path, config.rpc_file_mode)
        .await
        .map_err(|e| {
            format!(
                "cannot create RPC socket {}: {e}",
                config.rpc_path.display()
            )
        })
}

/// Binds the peer ports (`--bind-addr`, `--addr`). A port that cannot be bound stops the
/// node at start (exit 1), as in CLN.
async fn bind_peers(
    addrs: &[crate::lightning::net::NetAddr],
    log: &SourceLog,
) -> Result<Vec<tokio::net::TcpListener>, String> {
    let mut out = vec![];
    for a in addrs {
        let target = if a.host.contains(':') {
            format!("[{}]:{}", a.host, a.port)
        } else {
            format!("{}:{}", a.host, a.port)
        };
        let l = tokio::net::TcpListener::bind(&target)
            .await
            .map_err(|e| format!("cannot bind {target}: {e}"))?;
        if let Ok(local) = l.local_addr() {
            log.info(&format!("Listening for peers on {local}"));
        }
        out.push(l);
    }
    Ok(out)
}

/// Starts the Lightning engine in the background once the block stream has a tip, then
/// accepts peers on `listeners` (bound at start).
fn start_lightning(
    node: Arc<Node>,
    seed: [u8; 32],
    listeners: Vec<tokio::net::TcpListener>,
    log: SourceLog,
    deposits: Arc<std::sync::OnceLock<std::sync::Weak<crate::lightning::Lightning>>>,
) {
    tokio::spawn(async move {
        let deps = crate::lightning::Deps {
            seed,
            network: crate::chain::settings::bitcoin_network(node.config.network),
            chain: node.chain.clone(),
            store: node.store.clone(),
            clock: node.clock.clone(),
            port: crate::rpc::PluginPort::new(node.plugins.clone()),
            log: log.clone(),
            announce: node.config.announce_addrs.clone(),
            wallet: node.wallet.clone(),
            hold_safety_blocks: node.config.hold_safety_blocks,
            offline: node.config.offline,
            proxy: node.config.proxy.clone(),
            use_dns: !node.config.disable_dns,
            onchain_fallback: node.config.invoices_onchain_fallback,
            discovery: node.config.discovery,
            channels: node.config.channels,
            alias: node.alias.clone(),
            color: node.color.clone(),
            recover_file: Some(
                node.config
                    .net_dir
                    .join(crate::lightning::recovery::FILE_NAME),
            ),
        };
        let engine = match crate::lightning::Lightning::start(deps).await {
            Ok(e) => e,
            Err(e) => {
                log.broken(&format!("cannot start the Lightning engine: {e}"));
                node.request_stop(1);
                return;
            }
        };
        let _ = node.lightning.set(engine.clone());
        let _ = deposits.set(Arc::downgrade(&engine));
        engine.catch_up_onchain_invoices();
        for l in listeners {
            engine.accept(l);
        }
        log.info("Lightning engine started");
        if let Some(secret) = node.config.recover.clone() {
            recover_channels(&node, &engine, &secret, &log).await;
        }
    });
}

/// After a start with `--recover`: the `recover` hook, as CLN fires it, then what CLN's
/// `recover` plugin does first: `emergencyrecover`, if `emergency.recover` is there.
async fn recover_channels(
    node: &Arc<Node>,
    engine: &Arc<crate::lightning::Lightning>,
    secret: &str,
    log: &SourceLog,
) {
    let payload = serde_json::json!({ "codex32": secret });
    let _ = node
        .plugins
        .hook(fulgur_protocol::hooks::Hook::Recover, payload)
        .run()
        .await;
    let file = node
        .config
        .net_dir
        .join(crate::lightning::recovery::FILE_NAME);
    if !file.exists() {
        log.info(&format!(
            "--recover: no {} here: nothing to recover but the wallet",
            file.display()
        ));
        return;
    }
    match engine.emergency_recover().await {
        Ok(ids) => log.info(&format!(
            "--recover: {} channel(s) of {} being recovered",
            ids.len(),
            file.display()
        )),
        Err(e) => log.unusual(&format!("--recover: {e}")),
    }
}

/// `--recover` without `--rescan`: the wallet, new here, scans from the birthday
/// `emergency.recover` gives (no coin of the node's is older), so it finds its old coins.
fn birthday_rescan(dir: &Path, seed: &[u8; 32], log: &SourceLog) -> Option<i64> {
    use crate::lightning::{keys, recovery};
    let path = dir.join(recovery::FILE_NAME);
    let bytes = std::fs::read(&path).ok()?;
    let key = recovery::file_key(&keys::secret_base(seed));
    match recovery::open(&key, &bytes) {
        Ok(b) => {
            log.info(&format!(
                "--recover: the wallet rescans from block {}, its birthday in {}",
                b.birthday,
                path.display()
            ));
            Some(-i64::from(b.birthday))
        }
        Err(e) => {
            log.unusual(&format!("--recover: {}: {e}", path.display()));
            None
        }
    }
}

/// Writes `hsm_secret` from `--recover`'s secret, as CLN: refused if the file exists.
fn write_recovered_secret(dir: &Path, arg: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let secret =
        crate::lightning::codex32::recover_secret(arg).map_err(|e| format!("--recover: {e}"))?;
    let path = dir.join("hsm_secret");
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err("--recover: hsm_secret already exists!".into());
        }
        Err(e) => return Err(format!("--recover: Creating hsm_secret: {e}")),
    };
    let written = f
        .write_all(&secret)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(format!("--recover: Writing hsm_secret: {e}"));
    }
    Ok(())
}

/// SIGHUP reopens the log files (for logrotate), as in CLN; it never stops the node, even
/// without a log file (the signal's default action would).
fn reopen_log_on_sighup(log: &Logger, main: &SourceLog) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            main.unusual(&format!("cannot handle SIGHUP (log rotation): {e}"));
            return;
        }
    };
    let (log, main) = (log.clone(), main.clone());
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Err(e) = log.reopen() {
                main.unusual(&format!("SIGHUP: {e}; still logging to the old file"));
            }
        }
    });
}

async fn wait_for_stop(stop_rx: &mut mpsc::UnboundedReceiver<i32>) -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        code = stop_rx.recv() => code.unwrap_or(0),
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => 0,
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_a_compressed_pubkey() {
        let id = node_id(&[7u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.len(), 66);
        assert!(id.starts_with("02") || id.starts_with("03"));
        assert_ne!(id, node_id(&[8u8; 32]).unwrap_or_else(|e| panic!("{e}")));
    }

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn ldk_node_id_matches_the_node_id_getinfo_shows() {
        let mut seeds: Vec<[u8; 32]> = vec![[1u8; 32], [7u8; 32], [0xffu8; 32]];
        seeds.push(std::array::from_fn(|i| i as u8));
        seeds.push(std::array::from_fn(|i| {
            (i as u8).wrapping_mul(37).wrapping_add(11)
        }));
        let mut ids = Vec::new();
        for seed in &seeds {
            let km = ok(crate::lightning::keys::keys_manager(seed));
            let ldk_id = ok(lightning::sign::NodeSigner::get_node_id(
                &km,
                lightning::sign::Recipient::Node,
            ))
            .to_string();
            assert_eq!(ldk_id, ok(node_id(seed)), "seed {seed:?}");
            ids.push(ldk_id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), seeds.len(), "two seeds gave the same node id");
    }
}
