//! The merchant checkout example on the devnet: the last node serves clnrest, and the shop
//! (plugins/clnrest/examples/shop, a Node.js app talking only to clnrest) runs against it
//! with a rune restricted to the hold-invoice methods. Without Node.js or the shop's npm
//! packages, `up` prints how to start it instead.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::json;

use crate::net::Node;

/// The restrictions of the shop's rune: the hold-invoice methods and the notifications.
const HOLD_RUNE: &[&str] = &[
    "method=holdinvoice",
    "method=settleholdinvoice",
    "method=cancelholdinvoice",
    "method=listholdinvoices",
    "method=listclnrest-notifications",
];

/// The shop's directory in the source tree this binary was built from.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/clnrest/examples/shop")
}

/// A running shop; killed when dropped.
pub struct Shop {
    child: Child,
    /// The customer's page.
    pub url: String,
    /// The merchant's page (with its token).
    pub merchant_url: String,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the shop needs from the merchant's node: clnrest's URL and CA, and a rune.
pub struct Setup {
    pub env: Vec<(String, String)>,
}

pub fn setup(merchant: &Node, clnrest_port: u16) -> Result<Setup> {
    let rune = merchant.call("createrune", json!({"restrictions": [HOLD_RUNE]}))?["rune"]
        .as_str()
        .ok_or_else(|| anyhow!("createrune gave no rune"))?
        .to_string();
    let ca = merchant.dir.join("regtest").join("ca.pem");
    Ok(Setup {
        env: vec![
            (
                "CLNREST_URL".into(),
                format!("https://127.0.0.1:{clnrest_port}"),
            ),
            ("CLNREST_CA".into(), ca.display().to_string()),
            ("SHOP_RUNE".into(), rune),
        ],
    })
}

impl Setup {
    /// The command line that starts the shop by hand.
    pub fn command(&self) -> String {
        let vars: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
        format!(
            "(cd {} && ./install && {} node server.mjs)",
            dir().display(),
            vars.join(" ")
        )
    }

    /// Starts the shop if Node.js and its packages are there; `None` otherwise.
    pub fn start(&self) -> Result<Option<Shop>> {
        let d = dir();
        if !d.join("node_modules/socket.io-client").is_dir() {
            return Ok(None);
        }
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(&d)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let Ok(mut child) = cmd.spawn() else {
            return Ok(None);
        };
        let out = child.stdout.take().context("the shop's output")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        let mut merchant_url = None;
        while url.is_none() || merchant_url.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| anyhow!("the shop did not start (see its output above)"))?;
            if let Some(u) = line.strip_prefix("shop: listening on ") {
                url = Some(u.to_string());
            } else if let Some(u) = line.strip_prefix("shop: merchant page ") {
                merchant_url = Some(u.to_string());
            }
        }
        // Its later lines (orders and their states) go on to our output.
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                println!("{line}");
            }
        });
        Ok(Some(Shop {
            child,
            url: url.unwrap_or_default(),
            merchant_url: merchant_url.unwrap_or_default(),
        }))
    }
}
