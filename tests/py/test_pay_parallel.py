"""`pay` over parallel channels, as CLN's pay splits (issue 18):

    A ══ two 989k-sat channels ══ B ── 1.5M-sat channel ── C

A pays C more than either A–B channel holds: once A's gossip knows B–C, and while B–C is
usable but not yet announced, with an invoice C made before it had any channel (so it
carries no route hint and nothing leads to C in A's graph until gossip arrives: `pay`
waits for it instead of failing at once with "Could not find a route")."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import wait_for


@pytest.mark.parametrize("when", ["before_gossip", "after_gossip"])
@pytest.mark.parametrize("amount_sat", [1_100_000, 1_300_000])
def test_pay_splits_over_parallel_channels(ln, amount_sat, when):
    a, b, c = ln.node(), ln.node(), ln.node()
    # Made before C has a channel: no route hint.
    inv = c.rpc.invoice(amount_sat * 1000, "big", "more than one channel holds")
    assert "routes" not in a.rpc.decode(inv["bolt11"])
    ln.fund(a)
    ln.fund(a)  # two coins: one per channel, in one block
    ln.fund(b)
    ln.connect(a, b)
    ln.connect(b, c)
    txs = [a.rpc.fundchannel(b.id, 989_000)["txid"], a.rpc.fundchannel(b.id, 989_000)["txid"],
           b.rpc.fundchannel(c.id, 1_500_000)["txid"]]
    mempool = ln.chain.call("getrawmempool")
    assert all(t in mempool for t in txs)
    # Three blocks make the channels usable (the funding depth), six get them announced.
    ln.mine(3)

    def normal(n, peer, k):
        chans = n.rpc.listpeerchannels(peer.id)["channels"]
        return len([ch for ch in chans if ch["state"] == "CHANNELD_NORMAL"]) == k
    wait_for(lambda: normal(a, b, 2) and normal(b, c, 1) and normal(c, b, 1),
             what="channels normal")
    bc = c.rpc.listpeerchannels()["channels"][0]["short_channel_id"]
    if when == "after_gossip":
        ln.mine(3)
        ln.wait_gossip(a, bc)
        r = a.rpc.pay(inv["bolt11"])
    else:
        # B–C is not announced yet, so nothing leads to C: pay waits for gossip instead
        # of failing at once, and goes on when the announcement arrives.
        assert not a.rpc.listchannels(bc)["channels"]
        with ThreadPoolExecutor(1) as ex:
            paying = ex.submit(a.rpc.pay, inv["bolt11"])
            a.wait_for_log(f"No channel leads to payee {c.id} yet: waiting for gossip")
            assert not paying.done()
            ln.mine(3)
            r = paying.result(timeout=120)
        assert a.is_in_log(f"Payee {c.id} appeared in gossip")
    assert r["status"] == "complete" and r["parts"] >= 2
    assert r["amount_msat"] == amount_sat * 1000
    # Paid once the payee's LDK reports the claim (a moment after `pay` may return).
    wait_for(lambda: c.rpc.listinvoices("big")["invoices"][0]["status"] == "paid")
    # Both A–B channels carried parts.
    used = {p["short_channel_id"] for p in a.rpc.listpeerchannels(b.id)["channels"]
            if p["to_us_msat"] < 989_000_000 - 20_000_000}
    assert len(used) == 2
