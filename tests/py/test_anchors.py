"""Anchor channels (option_anchors_zero_fee_htlc_tx) end to end on devchain.

A opens an anchor channel to B and pays a hold invoice of B's (the built-in htlc-hold plugin
keeps the HTLC in flight), then force-closes. A's commitment pays only the low anchor feerate,
so LDK asks for a fee bump (`Event::BumpTransaction`): the wallet CPFPs it through A's anchor.
Once the HTLC expires, A's zero-fee HTLC-timeout transaction gets its fee from a wallet coin
(a second BumpTransaction), and after B's to_self_delay (LDK's minimum, 144 blocks) the
sweeper brings A's channel balance and the timed-out HTLC back into A's wallet.

Also: the emergency reserve (CLN's min-emergency-msat) while the anchor channel exists."""

import hashlib
import os
import re

import pytest

import clnschema
from conftest import ASKED_FORCE_CLOSE, RpcError, wait_for


CHANNEL_SAT = 1_000_000
HTLC_MSAT = 100_000_000
# The channel opener pays both anchor outputs (BOLT 3): 2 x 330 sat.
ANCHORS_SAT = 2 * 330


def wallet_sat(n):
    return sum(o["amount_msat"] for o in n.rpc.listfunds()["outputs"]
               if o["status"] == "confirmed") // 1000


def log_value(n, regex, group=1, start=0):
    line = n.wait_for_log(regex, start=start)
    return re.search(regex, line).group(group)


def mempool(ln):
    return ln.chain.call("getrawmempool")


def tx(ln, txid):
    return ln.chain.call("getrawtransaction", txid, True)


def anchor_channel(ln):
    """Nodes A and B (both may force-close) with an anchor channel A→B of CHANNEL_SAT."""
    a = ln.node(broken_log=ASKED_FORCE_CLOSE)
    b = ln.node(broken_log=ASKED_FORCE_CLOSE)
    ln.fund(a)
    # B holds the emergency reserve, so it takes anchor channels.
    ln.fund(b, 0.001)
    ln.open(a, b, sat=CHANNEL_SAT)
    return a, b


@pytest.mark.watchdog(600)
def test_anchor_force_close_cpfp_htlc_timeout_and_sweep(ln):
    # Urgent fees well above the commitment's anchor feerate (the 1 sat/vB floor), so the
    # close needs a CPFP; funding and sweeps at modest rates.
    ln.chain.call("setfeerate", {"2": 10, "6": 5, "12": 3, "100": 2})
    a, b = anchor_channel(ln)

    # --- The channel is an anchor channel on both sides (CLN's names, schema-checked).
    for n, peer in ((a, b), (b, a)):
        [ch] = n.rpc.listpeerchannels(peer.id)["channels"]
        assert "option_anchors" in ch["features"], ch["features"]
        assert ch["channel_type"] == {"bits": [12, 22],
                                      "names": ["static_remotekey/even", "anchors/even"]}

    # --- The emergency reserve: A may not empty its wallet while the channel exists.
    cfg = a.rpc.listconfigs("min-emergency-msat")["configs"]["min-emergency-msat"]
    assert cfg == {"value_msat": 25_000_000, "source": "default"}
    addr = b.rpc.newaddr("bech32")["bech32"]
    spendable = wallet_sat(a)
    with pytest.raises(RpcError) as e:
        a.rpc.withdraw(addr, spendable - 10_000)
    assert e.value.error["code"] == 313, e.value.error
    assert "min-emergency-msat 25000sat" in e.value.error["message"]
    assert not [o for o in a.rpc.listfunds()["outputs"] if o["reserved"]]

    # --- An HTLC from A that B holds (hold invoice; the plugin cancels only 55 blocks
    # before its expiry, and no block is mined before the close).
    pre = os.urandom(32)
    h = hashlib.sha256(pre).hexdigest()
    inv = b.rpc.call("holdinvoice", {"amount_msat": HTLC_MSAT, "description": "anchors",
                                     "payment_hash": h, "cltv": 60})
    ln.pay(a, inv["bolt11"], b.id, HTLC_MSAT, wait=False)
    got = b.rpc.call("waitholdinvoice", {"payment_hash": h, "state": "UNPAID", "timeout": 30})
    assert got["state"] == "ACCEPTED"
    [htlc] = [x for x in a.rpc.listhtlcs()["htlcs"] if x["payment_hash"] == h]
    expiry = htlc["expiry"]
    before = wallet_sat(a)

    # --- Force close from A: the commitment goes out with a CPFP child through A's anchor.
    # B is offline (a usual reason to force-close): online, it would answer A's error by
    # broadcasting its own commitment, and whichever reached the mempool first would win.
    b.stop()
    wait_for(lambda: not a.rpc.listpeers(b.id)["peers"][0]["connected"], what="B gone")
    mark = a.log_mark()
    cl = a.rpc.close(b.id, unilateraltimeout=1)
    assert cl["type"] == "unilateral"
    commitment = cl["txids"][0]
    a.wait_for_log(rf"Fee bump: commitment {commitment} .* 1 HTLC\(s\) pending", start=mark)
    child = log_value(a, rf"Broadcasting anchor transaction (\w+) to bump channel close with "
                         rf"txid {commitment}", start=mark)
    a.wait_for_log(rf"Fee bump: wallet input\(s\) \S+:\d+.* signed for {child}", start=mark)
    wait_for(lambda: {commitment, child} <= set(mempool(ln)), what="commitment + CPFP child")
    ctx = tx(ln, child)
    assert {(i["txid"]) for i in ctx["vin"]} >= {commitment}, ctx["vin"]
    assert len(ctx["vin"]) >= 2, "the CPFP child spends the anchor and a wallet coin"
    # The package pays more than the commitment alone (1 sat/vB).
    entry = ln.chain.call("getmempoolentry", child)
    assert entry["fees"]["base"] * 1e8 / entry["vsize"] > 5, entry
    ln.mine(1)
    assert tx(ln, commitment).get("confirmations", 0) >= 1
    assert tx(ln, child).get("confirmations", 0) >= 1
    # Closed, and kept in listpeerchannels (as CLN does) while its outputs resolve.
    wait_for(lambda: [c["state"] for c in a.rpc.listpeerchannels(b.id)["channels"]]
             == ["ONCHAIN"], what="channel ONCHAIN on A")

    # --- At the HTLC's expiry: the zero-fee HTLC-timeout transaction with a wallet input.
    ln.mine(max(0, expiry - ln.chain.height() - 1))
    mark = a.log_mark()
    ln.mine(2)
    a.wait_for_log(r"Fee bump: HTLC resolution of channel \w+: 1 HTLC\(s\) \(1 by timeout, "
                   r"0 by preimage\)", start=mark)
    htlc_tx = log_value(a, r"Fee bump: wallet input\(s\) \S+:\d+.* signed for (\w+)", start=mark)
    wait_for(lambda: htlc_tx in mempool(ln), what="HTLC-timeout transaction")
    htx = tx(ln, htlc_tx)
    spends = {i["txid"] for i in htx["vin"]}
    assert commitment in spends and len(spends) >= 2, htx["vin"]
    assert htx["locktime"] == expiry
    ln.mine(1)
    assert tx(ln, htlc_tx).get("confirmations", 0) >= 1

    # --- After B's to_self_delay (144) the to_local output and the HTLC-timeout output are
    # swept into A's wallet: A gets back its whole side, the HTLC included, minus the anchors
    # and the fees of the commitment, the CPFP, the HTLC transaction and the sweeps.
    for _ in range(15):
        ln.mine(10)
    def back():
        ln.mine(1)
        w = wallet_sat(a)
        return w if w > before + CHANNEL_SAT - ANCHORS_SAT - 20_000 else None
    after = wait_for(back, timeout=120, interval=1, what="A's funds back in its wallet")
    assert after < before + CHANNEL_SAT
    # Nothing left reserved once the bumps confirmed and the reservations ran out or the
    # coins were spent.
    spent = {o["txid"] + ":" + str(o["output"]) for o in a.rpc.listfunds()["outputs"]
             if o["reserved"]}
    assert not spent, spent
    # The HTLC is failed back to the payer (on chain), so the payment is not complete.
    assert a.rpc.listsendpays(payment_hash=h)["payments"][0]["status"] != "complete"


def test_an_anchor_channel_needs_the_acceptors_emergency_reserve(ln):
    """A node whose wallet lacks min-emergency-msat could not fee-bump an anchor channel's
    force close: it refuses inbound anchor channels (as LND and ldk-node do), and the LDK
    opener retries with a static_remote_key channel, whose commitment carries its fee."""
    a = ln.node()
    b = ln.node()
    ln.fund(a)
    ln.connect(a, b)
    r = a.rpc.fundchannel(b.id, 500_000)
    assert r["channel_type"] == {"bits": [12], "names": ["static_remotekey/even"]}
    b.wait_for_log(r"Channel from \w+ rejected: anchor channels need min-emergency-msat "
                   r"25000sat confirmed in our wallet to fee-bump a force close; we have 0sat")
    wait_for(lambda: r["txid"] in mempool(ln), what="funding tx")
    ln.mine(1)
    [ch] = b.rpc.listpeerchannels(a.id)["channels"]
    assert "option_anchors" not in ch["features"], ch["features"]
    # With its reserve confirmed, B takes the next one as an anchor channel.
    ln.fund(b, 0.0003)
    r = a.rpc.fundchannel(b.id, 400_000)
    assert r["channel_type"]["names"] == ["static_remotekey/even", "anchors/even"]


def test_fundchannel_all_leaves_the_emergency_reserve(ln):
    a = ln.node()
    b = ln.node()
    ln.fund(a, 0.01)
    ln.fund(b, 0.001)
    ln.connect(a, b)
    # The peer supports anchors (and holds its emergency reserve), so the channel will be one: 'all' keeps 25,000 sat back as
    # change for its fee bumps (CLN's behaviour), the rest (minus fees) funds the channel.
    r = a.rpc.fundchannel(b.id, "all")
    wait_for(lambda: r["txid"] in ln.chain.call("getrawmempool"), what="funding tx")
    assert r["channel_type"]["names"] == ["static_remotekey/even", "anchors/even"]
    ln.mine(1)
    [ch] = a.rpc.listpeerchannels(b.id)["channels"]
    assert 970_000_000 < ch["total_msat"] < 975_000_000, ch["total_msat"]
    left = wait_for(lambda: wallet_sat(a) or None, what="change confirmed")
    assert 25_000 <= left < 26_000, left
    # And nothing more may leave the wallet now.
    with pytest.raises(RpcError) as e:
        a.rpc.withdraw(b.rpc.newaddr("bech32")["bech32"], 2_000)
    assert e.value.error["code"] == 313


@pytest.mark.watchdog(300)
def test_force_close_under_a_risen_mempool_minimum_goes_in_as_a_package(ln):
    """The mempool filled since the channel last set its commitment feerate: the commitment
    alone is refused ("mempool min fee not met"), so it goes with its CPFP child through
    `submitpackage`, where the child's fee counts for both."""
    ln.chain.call("setfeerate", {"2": 3, "6": 2, "12": 2, "100": 1})
    a, b = anchor_channel(ln)
    b.stop()
    wait_for(lambda: not a.rpc.listpeers(b.id)["peers"][0]["connected"], what="B gone")
    # B is offline, so the channel cannot update its feerate (update_fee) any more.
    ln.chain.call("setmempoolminfee", 20)
    ln.chain.call("setfeerate", {"2": 30, "6": 25, "12": 22, "100": 21})
    wait_for(lambda: a.rpc.feerates("perkw")["perkw"]["floor"] >= 5_000, what="A sees the fees")
    mark = a.log_mark()
    cl = a.rpc.close(b.id, unilateraltimeout=1)
    assert cl["type"] == "unilateral"
    commitment = cl["txids"][0]
    child = log_value(a, rf"Broadcasting anchor transaction (\w+) to bump channel close with "
                         rf"txid {commitment}", start=mark)
    a.wait_for_log(rf"Broadcast of {commitment} failed: .*mempool min fee not met", start=mark)
    a.wait_for_log(rf"Broadcast {commitment} with its child {child} as a package \(submitpackage\)",
                   start=mark)
    wait_for(lambda: {commitment, child} <= set(mempool(ln)), what="commitment + CPFP child")
    # The commitment alone is under the mempool's minimum; with its child, above it.
    c_entry = ln.chain.call("getmempoolentry", commitment)
    k_entry = ln.chain.call("getmempoolentry", child)
    assert c_entry["fees"]["base"] * 1e8 / c_entry["vsize"] < 20, c_entry
    package = (c_entry["fees"]["base"] + k_entry["fees"]["base"]) * 1e8 / (
        c_entry["vsize"] + k_entry["vsize"])
    assert package >= 20, (c_entry, k_entry)
    ln.mine(1)
    assert tx(ln, commitment).get("confirmations", 0) >= 1
    assert tx(ln, child).get("confirmations", 0) >= 1
    wait_for(lambda: [c["state"] for c in a.rpc.listpeerchannels(b.id)["channels"]]
             == ["ONCHAIN"], what="channel ONCHAIN on A")
