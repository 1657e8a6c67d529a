//! The merchant story, told and checked step by step: a customer (alice) pays a merchant
//! (carol) through a routing node (bob). Carol's hold invoice keeps the payment ACCEPTED
//! but unsettled until she delivers the goods, then she settles with the preimage only she
//! knew and alice's `pay` returns it; a second order is cancelled and alice gets her money
//! back. Every step is checked; the first one that does not hold ends the demo with exit 1.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::rand::{self, RngCore};
use serde_json::{Value, json};

use crate::net::{Devnet, NodeError, STEP, call_socket, wait_for};

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;

/// What a hold invoice's price is, in msat.
const PRICE_MSAT: u64 = 150_000_000;

fn say(step: &mut u32, text: &str) {
    *step += 1;
    println!("\n\x1b[1m{step:>2}. {text}\x1b[0m");
}

fn ok(text: &str) {
    println!("    ✓ {text}");
}

fn check(cond: bool, what: &str) -> Result<()> {
    if cond {
        ok(what);
        Ok(())
    } else {
        bail!("check failed: {what}")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh secret and its hash, as a merchant keeps for each order.
fn new_secret() -> (String, String) {
    let mut preimage = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut preimage);
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    (hex(&preimage), hex(&hash))
}

/// The hold invoice with `hash` as `listholdinvoices` shows it.
fn hold_invoice(net: &Devnet, hash: &str) -> Result<Value> {
    let r = net.nodes[CAROL].call("listholdinvoices", json!({"payment_hash": hash}))?;
    let list = r
        .as_object()
        .and_then(|o| o.values().find_map(Value::as_array))
        .ok_or_else(|| anyhow!("listholdinvoices gave no list: {r}"))?;
    list.iter()
        .find(|i| i["payment_hash"] == hash)
        .cloned()
        .ok_or_else(|| anyhow!("hold invoice {hash} not listed"))
}

fn hold_state(net: &Devnet, hash: &str) -> Result<String> {
    Ok(hold_invoice(net, hash)?["state"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn wait_state(net: &Devnet, hash: &str, state: &str) -> Result<()> {
    wait_for(STEP, &format!("the hold invoice to be {state}"), || {
        (hold_state(net, hash).ok()? == state).then_some(())
    })
}

/// Alice's `pay`, running in the background as a customer's wallet would.
fn pay_in_background(net: &Devnet, bolt11: &str) -> JoinHandle<Result<Value>> {
    let socket: PathBuf = net.nodes[ALICE].socket();
    let bolt11 = bolt11.to_string();
    std::thread::spawn(move || call_socket(&socket, "alice", "pay", json!({"bolt11": bolt11})))
}

/// What `node` holds in its channels, in msat.
fn channel_balance(net: &Devnet, node: usize) -> Result<u64> {
    let r = net.nodes[node].call("listpeerchannels", json!({}))?;
    Ok(r["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["to_us_msat"].as_u64())
        .sum())
}

fn sat(msat: u64) -> String {
    format!("{} sat", msat / 1000)
}

/// Runs the story; `keep` keeps the nodes' directories.
pub fn run(keep: bool) -> Result<()> {
    let started = Instant::now();
    let mut step = 0;
    let dir = super::fresh_dir("demo")?;
    say(
        &mut step,
        "Starting devchain and three fulgurd nodes with their built-in plugins (pay, htlc-hold)",
    );
    let mut net = Devnet::start(&dir, keep)?;
    for name in ["alice", "bob", "carol"] {
        let i = net.add_node(name, &[])?;
        ok(&format!("{name}: {}", net.nodes[i].cli()));
    }
    println!("    (alice is the customer, bob routes, carol is the merchant)");
    let plugins = net.nodes[CAROL].call("plugin", json!({"subcommand": "list"}))?;
    let names: Vec<String> = plugins["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .map(|n| n.rsplit('/').next().unwrap_or(n).to_string())
        .collect();
    check(
        names.iter().any(|n| n == "pay") && names.iter().any(|n| n == "htlc-hold"),
        &format!("plugins running on carol: {}", names.join(", ")),
    )?;

    say(
        &mut step,
        "Funding alice and bob, opening alice → bob → carol",
    );
    net.fund(ALICE, 1.0)?;
    net.fund(BOB, 1.0)?;
    let pairs = [(ALICE, BOB), (BOB, CAROL)];
    let txids = vec![
        net.fund_channel(ALICE, BOB, 2_000_000, 0)?,
        net.fund_channel(BOB, CAROL, 2_000_000, 0)?,
    ];
    let scids = net.confirm_channels(&pairs, &txids)?;
    ok(&format!(
        "channels {} and {} are normal",
        scids[0], scids[1]
    ));
    net.wait_gossip(&scids)?;
    ok("alice's graph knows bob → carol (gossip)");

    for (n, what) in [(1u32, "a coffee machine"), (2, "a second coffee machine")] {
        let settle = n == 1;
        let (preimage, hash) = new_secret();
        let alice_before = channel_balance(&net, ALICE)?;
        let carol_before = channel_balance(&net, CAROL)?;

        say(
            &mut step,
            &format!(
                "Order {n}: carol makes a hold invoice of {} for {what}; only she knows its preimage",
                sat(PRICE_MSAT)
            ),
        );
        let inv = net.nodes[CAROL].call(
            "holdinvoice",
            json!({
                "amount_msat": PRICE_MSAT,
                "description": format!("order {n}: {what}"),
                "payment_hash": hash,
                "cltv": 144,
            }),
        )?;
        let bolt11 = inv["bolt11"]
            .as_str()
            .ok_or_else(|| anyhow!("holdinvoice gave no bolt11: {inv}"))?
            .to_string();
        check(
            hold_state(&net, &hash)? == "UNPAID",
            &format!("invoice {}… is UNPAID", &bolt11[..24.min(bolt11.len())]),
        )?;

        say(&mut step, "Alice pays it with `pay`");
        let payment = pay_in_background(&net, &bolt11);
        wait_state(&net, &hash, "ACCEPTED")?;
        let held = hold_invoice(&net, &hash)?;
        check(
            true,
            &format!(
                "carol's htlc-hold plugin holds the payment: ACCEPTED{}",
                held.get("settle_deadline_blockheight")
                    .and_then(Value::as_u64)
                    .map(|h| format!(", to settle or cancel before block {h}"))
                    .unwrap_or_default()
            ),
        )?;
        std::thread::sleep(Duration::from_secs(2));
        check(
            !payment.is_finished(),
            "two seconds later alice's `pay` is still waiting: the money is locked, not yet carol's",
        )?;
        let pays = net.nodes[ALICE].call("listpays", json!({"bolt11": bolt11}))?;
        check(
            pays["pays"][0]["status"] == "pending",
            "alice's listpays shows the payment pending",
        )?;

        if settle {
            say(
                &mut step,
                "Goods delivered: carol settles with the preimage",
            );
            let r = net.nodes[CAROL].call("settleholdinvoice", json!({"preimage": preimage}))?;
            ok(&format!(
                "settleholdinvoice answered: {}",
                r["state"].as_str().unwrap_or("?")
            ));
            let result = payment
                .join()
                .map_err(|_| anyhow!("alice's pay thread panicked"))??;
            check(
                result["payment_preimage"] == preimage.as_str(),
                "alice's `pay` returned carol's preimage: her proof of payment",
            )?;
            check(
                result["status"] == "complete",
                &format!(
                    "pay is complete: {} sent for {}",
                    sat(result["amount_sent_msat"].as_u64().unwrap_or(0)),
                    sat(result["amount_msat"].as_u64().unwrap_or(0))
                ),
            )?;
            wait_state(&net, &hash, "SETTLED")?;
            ok("the hold invoice is SETTLED");
            let carol_gain = wait_for(STEP, "carol's balance", || {
                let now = channel_balance(&net, CAROL).ok()?;
                (now >= carol_before + PRICE_MSAT).then_some(now - carol_before)
            })?;
            check(
                carol_gain == PRICE_MSAT,
                &format!("carol's channels gained {}", sat(carol_gain)),
            )?;
        } else {
            say(
                &mut step,
                "Out of stock: carol cancels, and alice gets her money back",
            );
            net.nodes[CAROL].call("cancelholdinvoice", json!({"payment_hash": hash}))?;
            let result = payment
                .join()
                .map_err(|_| anyhow!("alice's pay thread panicked"))?;
            let code = match &result {
                Err(e) => e
                    .downcast_ref::<NodeError>()
                    .and_then(|e| e.error["code"].as_i64()),
                Ok(v) => bail!("pay of a cancelled invoice succeeded: {v}"),
            };
            check(
                code.is_some(),
                &format!(
                    "alice's `pay` failed with code {}",
                    code.map(|c| c.to_string()).unwrap_or_default()
                ),
            )?;
            wait_state(&net, &hash, "CANCELLED")?;
            ok("the hold invoice is CANCELLED");
            let alice_now = wait_for(STEP, "alice's refund", || {
                let now = channel_balance(&net, ALICE).ok()?;
                (now == alice_before).then_some(now)
            })?;
            check(
                alice_now == alice_before,
                &format!("alice's channels hold {} again", sat(alice_now)),
            )?;
            check(
                channel_balance(&net, CAROL)? == carol_before,
                "carol received nothing",
            )?;
            let settle = net.nodes[CAROL].call("settleholdinvoice", json!({"preimage": preimage}));
            check(settle.is_err(), "settling the cancelled invoice is refused")?;
        }
    }

    say(&mut step, "Stopping everything");
    let states: Vec<String> = net
        .nodes
        .iter()
        .flat_map(|n| {
            n.call("listpeerchannels", json!({}))
                .ok()
                .and_then(|r| r["channels"].as_array().cloned())
                .unwrap_or_default()
        })
        .filter_map(|c| c["state"].as_str().map(String::from))
        .collect();
    check(
        states.len() == 4 && states.iter().all(|s| s == "CHANNELD_NORMAL"),
        "every channel is still CHANNELD_NORMAL (nothing was force-closed)",
    )?;
    let dir = net.dir.clone();
    drop(net);
    println!(
        "\nThe demo checked out in {:.0} s.{}",
        started.elapsed().as_secs_f64(),
        if keep {
            format!(" Logs: {}/<node>/log", dir.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_hashes_to_its_payment_hash() {
        let (preimage, hash) = new_secret();
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&preimage[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        assert_eq!(hex(&sha256::Hash::hash(&bytes).to_byte_array()), hash);
        assert_ne!(new_secret().0, preimage);
    }
}
