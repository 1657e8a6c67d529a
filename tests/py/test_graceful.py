"""`graceful` as CLN's tests use it (`tests/test_misc.py`: test_graceful_no_peers,
test_graceful_idle_peer, test_graceful_htlc): no new HTLCs, idle peers disconnected, the
caller told (`message` notifications) what is still pending, `{}` once nothing is, and with
a timeout the pending HTLC expiries and peers."""

import threading

import pytest

from conftest import RpcError, plugin_path, wait_for

HOLD = plugin_path("hold_plugin.py")


def run_graceful(node, notes, timeout=None):
    """Calls `graceful` with notifications on, in a thread; returns the thread's result
    holder."""
    out = {}

    def go():
        def capture(message, **kwargs):
            if message:
                notes.append(message)
        rpc = node.new_rpc()
        with rpc.notify(capture):
            out["result"] = rpc.graceful() if timeout is None else rpc.graceful(timeout)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    out["thread"] = t
    return out


def test_graceful_no_peers(ln):
    a = ln.node()
    assert a.rpc.graceful() == {}
    # Returns at once even with a timeout.
    assert a.rpc.graceful(10000) == {}


def test_graceful_idle_peer(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, b)
    notes = []
    g = run_graceful(a, notes)
    g["thread"].join(60)
    assert g["result"] == {}
    assert any("peers still connected" in n for n in notes), notes


def test_graceful_htlc(ln):
    a = ln.node()
    b = ln.node()
    c = ln.node(plugins=[HOLD])
    ln.line(a, b, c)
    inv = c.rpc.invoice(10_000, "hold", "hold", cltv=100)
    h = ln.pay(a, inv["bolt11"], c.id, 10_000, wait=False)
    wait_for(lambda: h in c.rpc.call("hold-seen")["pending"], what="HTLC held by C")
    htlcs = wait_for(lambda: len(b.rpc.listhtlcs()["htlcs"]) == 2 and b.rpc.listhtlcs()["htlcs"],
                     what="both HTLCs on B")
    out_expiry = [x["expiry"] for x in htlcs if x["direction"] == "out"][0]
    in_expiry = [x["expiry"] for x in htlcs if x["direction"] == "in"][0]
    assert out_expiry < in_expiry

    notes = []
    g = run_graceful(b, notes)
    height = ln.chain.height()
    want = (f"Next HTLC SENT_ADD_ACK_REVOCATION expires at block #{out_expiry} "
            f"({out_expiry - height} blocks from now) going to peer {c.id} (connected)")
    wait_for(lambda: want in notes, what=f"notification {want!r}; got {notes}")

    # With a timeout: what is pending.
    ret = b.rpc.graceful(1)
    assert ret["pending_htlc_expiries"] == [out_expiry, in_expiry]
    assert sorted(ret["pending_peers"]) == sorted([a.id, c.id])

    # No new HTLC goes through B meanwhile.
    inv2 = c.rpc.invoice(5_000, "later", "later")
    h2 = ln.pay(a, inv2["bolt11"], c.id, 5_000, wait=False)
    with pytest.raises(RpcError) as e:
        a.rpc.waitsendpay(h2, timeout=30)
    assert e.value.error["code"] in (203, 204)
    assert c.rpc.call("hold-seen")["pending"] == [h]

    # Released: the payment settles, then B lets its peers go and answers {}.
    c.rpc.call("hold-release", {"payment_hash": h, "result": "continue"})
    assert a.rpc.waitsendpay(h, timeout=60)["status"] == "complete"
    g["thread"].join(60)
    assert g["result"] == {}
