//! `devchain`: a development and test chain for Fulgur (regtest, bitcoind-style JSON-RPC).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bitcoin::secp256k1::rand::{self, RngCore};
use clap::Parser;
use devchain::chain::{Chain, ChainOptions};
use devchain::rpc::Rpc;
use devchain::store::write_atomically;
use devchain::util::hex;

/// A development and test chain: a small regtest chain that validates transactions, mines on
/// demand and speaks the subset of bitcoind's JSON-RPC that Fulgur uses. Not a full node.
#[derive(Parser, Debug)]
#[command(name = "devchain", version)]
struct Args {
    /// Directory for blocks, the faucet key, the `.cookie` and `rpcport` files.
    #[arg(long)]
    datadir: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one (written to DATADIR/rpcport).
    #[arg(long, default_value_t = 18443)]
    rpcport: u16,
    /// RPC user (with --rpcpassword); without it a cookie file DATADIR/.cookie is written.
    #[arg(long, requires = "rpcpassword")]
    rpcuser: Option<String>,
    #[arg(long, requires = "rpcuser")]
    rpcpassword: Option<String>,
    /// Blocks mined to the faucet on first start (101 makes one coinbase spendable).
    #[arg(long, default_value_t = 101)]
    initial_blocks: u32,
}

fn set_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// Prints a line to stdout and flushes it, ignoring a closed stdout (a test that read only the
/// first line must not kill the chain).
fn say(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.datadir)
        .with_context(|| format!("creating {}", args.datadir.display()))?;
    let chain = Chain::open(ChainOptions {
        datadir: Some(args.datadir.clone()),
        initial_blocks: args.initial_blocks,
        faucet: None,
    })?;
    let height = chain.tip_height();
    let faucet_address = chain.faucet().address().to_string();

    let cookie_path = args.datadir.join(".cookie");
    let credentials = match (&args.rpcuser, &args.rpcpassword) {
        (Some(u), Some(p)) => format!("{u}:{p}"),
        _ => {
            let mut secret = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            let c = format!("__cookie__:{}", hex(&secret));
            write_atomically(&cookie_path, c.as_bytes()).context("writing the cookie file")?;
            set_private(&cookie_path);
            c
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.rpcport))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", args.rpcport))?;
        let port = listener.local_addr()?.port();
        let port_path = args.datadir.join("rpcport");
        write_atomically(&port_path, format!("{port}\n").as_bytes())?;
        say(format_args!("devchain (a development and test chain, regtest) RPC listening on http://127.0.0.1:{port}"));
        say(format_args!("devchain: height {height}, faucet address {faucet_address}"));
        if args.rpcuser.is_none() {
            say(format_args!("devchain: cookie file {}", cookie_path.display()));
        }
        let rpc = Arc::new(Rpc::new(chain));
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = term.recv() => {},
                            _ = tokio::signal::ctrl_c() => {},
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        devchain::server::serve(listener, rpc, credentials, shutdown).await;
        let _ = std::fs::remove_file(&port_path);
        if args.rpcuser.is_none() {
            let _ = std::fs::remove_file(&cookie_path);
        }
        say(format_args!("devchain: stopped"));
        anyhow::Ok(())
    })
}
