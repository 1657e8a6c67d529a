//! `fulgur-devnet`: a local Lightning network of fulgurd nodes on devchain, for trying
//! plugins against live nodes (`up`), and the merchant story of a held payment told end to
//! end (`demo`).
//!
//! Everything runs on loopback from a fresh directory; the nodes load the built-in plugins
//! (`pay`, `htlc-hold`, `autopilot`) like any fulgurd. On exit (Ctrl-C, SIGTERM, the end of
//! the demo or an error) every node is stopped and devchain killed, so nothing keeps running.

mod demo;
mod net;
mod shop;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use net::Devnet;

/// A local Lightning network of fulgurd nodes on devchain (a development chain, not a full
/// node).
#[derive(Parser, Debug)]
#[command(name = "fulgur-devnet", version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start devchain and N nodes with funded wallets and a ring of channels, print how to
    /// reach each node, and run until Ctrl-C.
    Up {
        /// How many nodes (at least 2).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// A plugin every node loads (repeatable): a program or a WASM module.
        #[arg(long)]
        plugin: Vec<PathBuf>,
        /// An option given to every node, as NAME=VALUE or NAME (repeatable), e.g. a plugin
        /// option.
        #[arg(long = "node-option")]
        node_option: Vec<String>,
        /// Channel size in satoshis.
        #[arg(long, default_value_t = 1_000_000)]
        channel_sat: u64,
        /// Directory for the chain and the nodes [default: a new one under /tmp]. Kept on
        /// exit when given.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Tell the story of a held payment: a merchant's hold invoice paid by a customer with
    /// `pay`, held until the goods are delivered, then settled; and a second one cancelled.
    /// Exits 0 only when every step checked out.
    Demo {
        /// Keep the nodes' directories (logs) after the demo.
        #[arg(long)]
        keep: bool,
    },
}

fn fresh_dir(tag: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let d = base.join(format!("fulgur-{tag}-{}-{i}", std::process::id()));
        if std::fs::create_dir(&d).is_ok() {
            return Ok(d);
        }
    }
    bail!("cannot create a directory under {}", base.display())
}

/// Starts the chain and `n` nodes joined in a ring of channels (each node opens one to the
/// next, pushing a third of it, so every direction has liquidity).
fn start_ring(
    dir: PathBuf,
    keep: bool,
    n: usize,
    extra: &[String],
    last_extra: &[String],
    channel_sat: u64,
) -> Result<Devnet> {
    let mut net = Devnet::start(&dir, keep)?;
    println!(
        "devchain: RPC on 127.0.0.1:{} (cookie in {})",
        net.chain.port,
        net.chain.datadir.join(".cookie").display()
    );
    for i in 0..n {
        let mut opts = extra.to_vec();
        if i + 1 == n {
            opts.extend_from_slice(last_extra);
        }
        net.add_node(&format!("node{}", i + 1), &opts)?;
        println!("node{} started", i + 1);
    }
    for i in 0..n {
        net.fund(i, 1.0)?;
    }
    let pairs: Vec<(usize, usize)> = if n == 2 {
        vec![(0, 1)]
    } else {
        (0..n).map(|i| (i, (i + 1) % n)).collect()
    };
    let mut txids = vec![];
    for &(a, b) in &pairs {
        txids.push(net.fund_channel(a, b, channel_sat, channel_sat * 1000 / 3)?);
    }
    let scids = net.confirm_channels(&pairs, &txids)?;
    for ((a, b), scid) in pairs.iter().zip(&scids) {
        println!(
            "channel {scid}: {} -> {}",
            net.nodes[*a].name, net.nodes[*b].name
        );
    }
    net.wait_gossip(&scids)?;
    Ok(net)
}

fn node_options(plugins: &[PathBuf], options: &[String]) -> Result<Vec<String>> {
    let mut extra = vec![];
    for p in plugins {
        let p = std::fs::canonicalize(p).with_context(|| format!("plugin {}", p.display()))?;
        extra.push(format!("--plugin={}", p.display()));
    }
    for o in options {
        extra.push(format!("--{}", o.trim_start_matches("--")));
    }
    Ok(extra)
}

/// Sets [`net::INTERRUPTED`] on Ctrl-C or SIGTERM, from a runtime thread of its own so that
/// the synchronous steps notice it wherever they wait.
fn watch_signals() -> Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.spawn(async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        net::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(rt)
}

fn up(
    nodes: usize,
    plugins: &[PathBuf],
    options: &[String],
    channel_sat: u64,
    dir: Option<PathBuf>,
) -> Result<()> {
    if nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let extra = node_options(plugins, options)?;
    let keep = dir.is_some();
    let dir = match dir {
        Some(d) => d,
        None => fresh_dir("devnet")?,
    };
    // The last node is the merchant: it serves clnrest, and the checkout example runs
    // against it.
    let rest_port = net::free_port()?;
    let merchant_opts = [format!("--clnrest-port={rest_port}")];
    let net = start_ring(dir, keep, nodes, &extra, &merchant_opts, channel_sat)?;
    println!("\nThe devnet is up ({} nodes). Reach them with:", nodes);
    for n in &net.nodes {
        println!("  {:<7} {} getinfo", n.name, n.cli());
        println!("          id {}@127.0.0.1:{}", n.id, n.port);
    }
    let merchant = &net.nodes[nodes - 1];
    let setup = shop::setup(merchant, rest_port)?;
    println!(
        "{} serves clnrest at https://127.0.0.1:{rest_port} (CA {}/regtest/ca.pem)",
        merchant.name,
        merchant.dir.display()
    );
    let _shop = match setup.start()? {
        Some(s) => {
            println!("The shop (hold invoices, paid from any other node with `pay`):");
            println!("  customer: {}", s.url);
            println!("  merchant: {}", s.merchant_url);
            Some(s)
        }
        None => {
            println!("To open the checkout example against it (needs Node.js):");
            println!("  {}", setup.command());
            None
        }
    };
    println!("Logs: {}/<node>/log. Mine a block:", net.dir.display());
    println!(
        "  curl -s --user \"$(cat {})\" --data-binary '{{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"generatetoaddress\",\"params\":[1,\"{}\"]}}' http://127.0.0.1:{}/",
        net.chain.datadir.join(".cookie").display(),
        net::BURN_ADDRESS,
        net.chain.port
    );
    println!("Press Ctrl-C to stop everything.");
    while !net::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("\nStopping the nodes and devchain...");
    drop(net);
    println!("Stopped.");
    Ok(())
}

fn main() {
    let args = Args::parse();
    let _signals = match watch_signals() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fulgur-devnet: cannot watch signals: {e}");
            std::process::exit(1);
        }
    };
    let r = match args.command {
        Cmd::Up {
            nodes,
            plugin,
            node_option,
            channel_sat,
            dir,
        } => up(nodes, &plugin, &node_option, channel_sat, dir),
        Cmd::Demo { keep } => demo::run(keep),
    };
    if let Err(e) = r {
        eprintln!("fulgur-devnet: {e:#}");
        std::process::exit(1);
    }
}
