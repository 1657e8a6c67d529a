"""What `listpeerchannels` tells of a channel's past, as CLN's tests read it: the HTLC
counters (`test_pay.py::test_forward_stats`: offered and fulfilled, in and out, on the node
in the middle, the payer and the payee) and `state_changes`
(`test_plugin.py::test_channel_state_change_history`). Every reply is checked against
CLN's schema by the fixture."""

import hashlib

import pytest

from conftest import RpcError, wait_for


def chan(node, peer):
    return node.rpc.listpeerchannels(peer.id)["channels"][0]


def changes(node, peer):
    return chan(node, peer)["state_changes"]


def test_htlc_counters(ln):
    a, b, c = ln.node(), ln.node(), ln.node()
    ln.line(a, b, c)
    amount = 100_000
    for n, peer in ((b, a), (b, c), (a, b), (c, b)):
        ch = chan(n, peer)
        assert (ch["in_payments_offered"], ch["out_payments_offered"]) == (0, 0)
        assert ch["in_offered_msat"] == 0 and ch["out_fulfilled_msat"] == 0

    inv = c.rpc.invoice(amount, "first", "desc")
    assert ln.pay(a, inv["bolt11"], c.id, amount)["status"] == "complete"
    # A payment C does not know: forwarded by B, failed by C.
    unknown = hashlib.sha256(b"nobody knows").hexdigest()
    route = a.rpc.getroute(c.id, amount, riskfactor=1)["route"]
    a.rpc.sendpay(route, unknown, payment_secret=inv["payment_secret"])
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(unknown, timeout=30)

    def settled():
        inchan, outchan = chan(b, a), chan(b, c)
        return (inchan["in_payments_offered"], inchan["in_payments_fulfilled"],
                outchan["out_payments_offered"], outchan["out_payments_fulfilled"]) \
            == (2, 1, 2, 1) and (inchan, outchan)
    inchan, outchan = wait_for(settled, what="B's counters")
    assert inchan["in_offered_msat"] >= 2 * amount
    assert inchan["in_fulfilled_msat"] >= amount
    assert outchan["out_offered_msat"] == 2 * amount
    assert outchan["out_fulfilled_msat"] == amount
    assert outchan["out_fulfilled_msat"] < inchan["in_fulfilled_msat"]  # B's fee
    # Nothing flowed the other way.
    assert inchan["out_payments_offered"] == 0 and outchan["in_payments_offered"] == 0

    payer = wait_for(lambda: chan(a, b)["out_payments_fulfilled"] == 1 and chan(a, b))
    assert payer["out_payments_offered"] == 2
    assert payer["out_fulfilled_msat"] == inchan["in_fulfilled_msat"]
    payee = wait_for(lambda: chan(c, b)["in_payments_fulfilled"] == 1 and chan(c, b))
    assert payee["in_fulfilled_msat"] == amount

    # Counters are kept across a restart.
    ln.restart(b)
    assert chan(b, a)["in_payments_offered"] == 2
    assert chan(b, c)["out_fulfilled_msat"] == amount


def test_state_change_history(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a)
    scid = ln.open(a, b)
    history = wait_for(lambda: chan(a, b)["state_changes"], what="lock-in recorded")
    first = history[0]
    assert (first["old_state"], first["new_state"], first["cause"]) == \
        ("CHANNELD_AWAITING_LOCKIN", "CHANNELD_NORMAL", "user")
    assert first["timestamp"].endswith("Z")
    assert chan(b, a)["state_changes"][0]["cause"] == "remote"

    a.rpc.close(scid)
    # Never missing while it moves from LDK's list to the closed channels (it was, for a
    # moment after `close` returned, in one run of three).
    for _ in range(50):
        assert a.rpc.listpeerchannels(b.id)["channels"]
    history = wait_for(lambda: len(changes(a, b)) >= 2 and changes(a, b),
                       what="close recorded")
    assert history[1]["old_state"] == "CHANNELD_NORMAL"
    assert history[1]["new_state"] == "CLOSINGD_COMPLETE"
    assert history[1]["cause"] == "user"
    ln.mine(1)
    history = wait_for(lambda: len(changes(a, b)) >= 3 and changes(a, b),
                       what="spend recorded")
    assert (history[2]["old_state"], history[2]["new_state"], history[2]["cause"]) == \
        ("CLOSINGD_COMPLETE", "ONCHAIN", "onchain")
