"""Hold invoices end to end with the built-in `htlc-hold` plugin: one devchain network for
the module (payer A with a channel to merchant M), payments sent with getroute + sendpay.

Covers: settle (the payer learns the preimage only after settleholdinvoice), cancel (the
payer fails with incorrect_or_unknown_payment_details), a wrong preimage refused, the RPC
errors (unknown, duplicate, settle UNPAID / cancelled, cancel settled), a two-part payment
held and settled as one set, 20 holds at once, `holdinvoice_state` notifications seen by a
pyln subscriber, a hold across `kill -9` of the merchant, a hold across a plugin restart
(the core offers held HTLCs again to the restarted plugin), and the plugin's own
auto-cancel before the core's deadline with no channel closed."""

import hashlib
import os
import threading
from types import SimpleNamespace

import pytest

import lnnet
from conftest import FULGURD, RpcError, plugin_path, wait_for

LISTENER = plugin_path("hold_listener.py")
HOLD_BIN = FULGURD.parent / "htlc-hold"

# Error codes of htlc-hold (docs/HOLD.md).
NOT_FOUND, DUPLICATE, WRONG_PREIMAGE, ALREADY_CANCELLED = 2301, 2302, 2303, 2304
ALREADY_SETTLED, NOT_ACCEPTED, NOT_ATTACHED, WAIT_TIMEOUT = 2305, 2306, 2307, 2308
INCORRECT_DETAILS = 16399  # 0x400F


@pytest.fixture(scope="module")
def net():
    with lnnet.module_network("fulgur-hold-") as ln:
        n = SimpleNamespace(ln=ln)
        n.a = ln.node()
        n.m = ln.node(plugins=[LISTENER],
                      options={"holdinvoice-reattach-wait-secs": 5})
        ln.fund(n.a)
        n.scid = ln.open(n.a, n.m)
        yield n



def secret():
    pre = os.urandom(32).hex()
    return pre, hashlib.sha256(bytes.fromhex(pre)).hexdigest()


def hold(m, amount, cltv=None, **kw):
    pre, h = secret()
    params = {"amount_msat": amount, "description": f"hold {amount}", "payment_hash": h}
    if cltv is not None:
        params["cltv"] = cltv
    params.update(kw)
    inv = m.rpc.call("holdinvoice", params)
    return pre, h, inv


def listed(m, h):
    r = m.rpc.call("listholdinvoices", {"payment_hash": h})["holdinvoices"]
    assert len(r) == 1
    return r[0]


def wait_state(m, h, state, timeout=30):
    return wait_for(lambda: listed(m, h)["state"] == state and listed(m, h), timeout=timeout,
                    what=f"{h[:8]} {state}")


def rpc_error(fn, *args, **kw):
    with pytest.raises(RpcError) as e:
        fn(*args, **kw)
    return e.value.error


def ensure_connected(n):
    if not n.a.rpc.listpeerchannels(n.m.id)["channels"][0]["peer_connected"]:
        try:
            n.ln.connect(n.a, n.m)
        except RpcError:
            pass
    wait_for(lambda: n.a.rpc.listpeerchannels(n.m.id)["channels"][0]["peer_connected"],
             what="A-M reconnected")
    wait_for(lambda: n.a.rpc.listpeerchannels(n.m.id)["channels"][0]["state"]
             == "CHANNELD_NORMAL", what="A-M normal")


def test_settle_path_and_notifications(net):
    a, m = net.a, net.m
    pre, h, inv = hold(m, 50_000, expiry=3600)
    assert inv["payment_hash"] == h and inv["state"] == "UNPAID"
    assert inv["amount_msat"] == 50_000 and inv["expires_at"] > 0
    dec = a.rpc.decode(inv["bolt11"])  # schema-validated by ValidatingRpc
    assert dec["payment_hash"] == h and dec["amount_msat"] == 50_000
    assert dec["payee"] == m.id and dec["description"] == "hold 50000"
    assert dec["min_final_cltv_expiry"] == inv["cltv"] == 144
    assert dec["expiry"] == 3600

    net.ln.pay(a, inv["bolt11"], m.id, 50_000, wait=False)
    got = m.rpc.call("waitholdinvoice", {"payment_hash": h, "state": "UNPAID", "timeout": 30})
    assert got["state"] == "ACCEPTED" and got["amount_received_msat"] == 50_000
    # The real settle deadline (pain point 6): the plugin's own cancel height, 10 blocks
    # before the core's deadline, which is LDK's (expiry - 39) minus 6 safety blocks.
    expiry = [x for x in m.rpc.listhtlcs()["htlcs"] if x["payment_hash"] == h][0]["expiry"]
    assert got["htlc_deadline_blockheight"] == expiry - 39 - 6
    assert got["settle_deadline_blockheight"] == expiry - 39 - 6 - 10
    assert got["settle_blocks_left"] > 0 and got["htlcs"][0]["attached"] is True
    # Held: the payer has nothing yet.
    e = rpc_error(a.rpc.waitsendpay, h, timeout=2)
    assert e["code"] == 200
    e = rpc_error(m.rpc.call, "waitholdinvoice", {"payment_hash": h, "timeout": 1})
    assert e["code"] == WAIT_TIMEOUT

    # Positional params work too.
    done = m.rpc.call("settleholdinvoice", [pre])
    assert done["state"] == "SETTLED" and done["payment_preimage"] == pre
    sent = a.rpc.waitsendpay(h, timeout=30)
    assert sent["status"] == "complete" and sent["payment_preimage"] == pre
    # Idempotent: settling again with the right preimage changes nothing.
    assert m.rpc.call("settleholdinvoice", {"preimage": pre})["state"] == "SETTLED"
    assert m.rpc.call("waitholdinvoice", [h, "ACCEPTED", 5])["state"] == "SETTLED"
    wait_for(lambda: m.rpc.listinvoices(payment_hash=h)["invoices"][0]["status"] == "paid")

    def states():
        got = m.rpc.call("holdlistener-got", {"payment_hash": h})["got"]
        return [(g["payload"]["old_state"], g["payload"]["state"]) for g in got]
    wait_for(lambda: len(states()) == 3, what="three notifications")
    assert states() == [(None, "UNPAID"), ("UNPAID", "ACCEPTED"), ("ACCEPTED", "SETTLED")]
    got = m.rpc.call("holdlistener-got", {"payment_hash": h})["got"]
    assert {g["origin"] for g in got} == {"htlc-hold"}
    assert got[1]["payload"]["settle_deadline_blockheight"] == expiry - 39 - 6 - 10


def test_cancel_path_and_errors(net):
    a, m = net.a, net.m
    pre, h, inv = hold(m, 20_000)
    # Nothing to settle yet; settle/cancel of unknown hashes; duplicate hash.
    assert rpc_error(m.rpc.call, "settleholdinvoice", {"preimage": pre})["code"] == NOT_ACCEPTED
    assert listed(m, h)["state"] == "UNPAID"
    _, other = secret()
    assert rpc_error(m.rpc.call, "cancelholdinvoice", [other])["code"] == NOT_FOUND
    assert rpc_error(m.rpc.call, "settleholdinvoice", [secret()[0]])["code"] == NOT_FOUND
    e = rpc_error(m.rpc.call, "holdinvoice", [1000, "again", h])
    assert e["code"] == DUPLICATE
    assert rpc_error(m.rpc.call, "holdinvoice", [1000, "bad", "zz"])["code"] == -32602
    assert rpc_error(m.rpc.call, "holdinvoice", [0, "zero", other])["code"] == -32602
    assert rpc_error(m.rpc.call, "listholdinvoices", {"state": "nope"})["code"] == -32602

    net.ln.pay(a, inv["bolt11"], m.id, 20_000, wait=False)
    wait_state(m, h, "ACCEPTED")
    # Wrong preimage: refused, still ACCEPTED and still held.
    wrong = secret()[0]
    e = rpc_error(m.rpc.call, "settleholdinvoice", {"preimage": wrong, "payment_hash": h})
    assert e["code"] == WRONG_PREIMAGE
    assert listed(m, h)["state"] == "ACCEPTED"
    assert rpc_error(a.rpc.waitsendpay, h, timeout=1)["code"] == 200

    c = m.rpc.call("cancelholdinvoice", {"payment_hash": h})
    assert c["state"] == "CANCELLED" and c["cancel_reason"]
    e = rpc_error(a.rpc.waitsendpay, h, timeout=30)
    assert e["code"] == 203 and e["data"]["failcode"] == INCORRECT_DETAILS
    # Cancel is idempotent; settling a cancelled invoice is refused.
    assert m.rpc.call("cancelholdinvoice", [h])["state"] == "CANCELLED"
    e = rpc_error(m.rpc.call, "settleholdinvoice", {"preimage": pre})
    assert e["code"] == ALREADY_CANCELLED and e["data"]["state"] == "CANCELLED"
    assert listed(m, h)["state"] == "CANCELLED"

    # Cancelling a settled one is refused.
    pre2, h2, inv2 = hold(m, 21_000)
    net.ln.pay(a, inv2["bolt11"], m.id, 21_000, wait=False)
    wait_state(m, h2, "ACCEPTED")
    m.rpc.call("settleholdinvoice", [pre2])
    assert a.rpc.waitsendpay(h2, timeout=30)["payment_preimage"] == pre2
    e = rpc_error(m.rpc.call, "cancelholdinvoice", [h2])
    assert e["code"] == ALREADY_SETTLED
    assert listed(m, h2)["state"] == "SETTLED"
    by_state = m.rpc.call("listholdinvoices", {"state": "cancelled"})["holdinvoices"]
    assert h in [x["payment_hash"] for x in by_state]
    assert h2 not in [x["payment_hash"] for x in by_state]


def test_multi_part_held_as_one_set(net):
    a, m = net.a, net.m
    total = 60_000
    pre, h, inv = hold(m, total)
    dec = a.rpc.decode(inv["bolt11"])
    for partid, amount in ((1, 25_000), (2, 35_000)):
        route = a.rpc.getroute(m.id, amount, riskfactor=1,
                               cltv=dec["min_final_cltv_expiry"])["route"]
        a.rpc.sendpay(route, h, payment_secret=dec["payment_secret"], amount_msat=total,
                      partid=partid, groupid=1, bolt11=inv["bolt11"])
    got = wait_state(m, h, "ACCEPTED")
    assert sorted(p["amount_msat"] for p in got["htlcs"]) == [25_000, 35_000]
    assert got["amount_received_msat"] == total
    assert all(p["attached"] for p in got["htlcs"])
    for partid in (1, 2):
        assert rpc_error(a.rpc.waitsendpay, h, timeout=1, partid=partid, groupid=1)["code"] == 200
    m.rpc.call("settleholdinvoice", [pre])
    for partid in (1, 2):
        r = a.rpc.waitsendpay(h, timeout=30, partid=partid, groupid=1)
        assert r["status"] == "complete" and r["payment_preimage"] == pre
    assert listed(m, h)["state"] == "SETTLED"


def test_many_holds_at_once(net):
    a, m = net.a, net.m
    holds = [hold(m, 10_000 + i) for i in range(20)]
    for i, (_, h, inv) in enumerate(holds):
        net.ln.pay(a, inv["bolt11"], m.id, 10_000 + i, wait=False)
    wait_for(lambda: len([x for x in m.rpc.call("listholdinvoices", {"state": "ACCEPTED"})
                          ["holdinvoices"] if x["payment_hash"] in {h for _, h, _ in holds}])
             == 20, what="20 ACCEPTED")
    errors = []

    def decide(i, pre, h):
        try:
            rpc = m.new_rpc()
            if i % 2:
                rpc.call("cancelholdinvoice", [h])
            else:
                rpc.call("settleholdinvoice", [pre])
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)
    threads = [threading.Thread(target=decide, args=(i, pre, h))
               for i, (pre, h, _) in enumerate(holds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for i, (pre, h, _) in enumerate(holds):
        if i % 2:
            assert rpc_error(a.rpc.waitsendpay, h, timeout=30)["code"] == 203
            assert listed(m, h)["state"] == "CANCELLED"
        else:
            assert a.rpc.waitsendpay(h, timeout=30)["payment_preimage"] == pre
            assert listed(m, h)["state"] == "SETTLED"


def test_hold_survives_kill_and_restart(net):
    a, m = net.a, net.m
    pre, h, inv = hold(m, 30_000)
    net.ln.pay(a, inv["bolt11"], m.id, 30_000, wait=False)
    wait_state(m, h, "ACCEPTED")
    net.ln.restart(m, kill=True)
    # Loaded from the datastore before the node replays the HTLC.
    assert listed(m, h)["state"] == "ACCEPTED"
    ensure_connected(net)
    # Waits (bounded) for the replayed part to re-attach, then settles.
    done = m.rpc.call("settleholdinvoice", [pre])
    assert done["state"] == "SETTLED"
    assert a.rpc.waitsendpay(h, timeout=60)["payment_preimage"] == pre
    assert listed(m, h)["state"] == "SETTLED"


def test_expired_unpaid_invoice_is_cancelled(net):
    m, ln = net.m, net.ln
    _, h, inv = hold(m, 5_000, expiry=1)
    assert listed(m, h)["state"] == "UNPAID"
    wait_for(lambda: listed(m, h)["expired"] is True, what="the hold invoice's expiry")
    ln.mine(1)  # the plugin sweeps on every block (and every 15 s)
    got = wait_state(m, h, "CANCELLED")
    assert got["cancel_reason"] == "expired unpaid"
    assert "settle_deadline_blockheight" not in got


def test_auto_cancel_before_the_core_deadline(net):
    a, m, ln = net.a, net.m, net.ln
    pre, h, inv = hold(m, 40_000, cltv=60)
    ln.pay(a, inv["bolt11"], m.id, 40_000, wait=False)
    got = wait_state(m, h, "ACCEPTED")
    cancel_at = got["settle_deadline_blockheight"]
    assert cancel_at == got["htlc_deadline_blockheight"] - 10
    ln.mine(cancel_at - ln.chain.height() - 1)
    assert listed(m, h)["state"] == "ACCEPTED"  # one block before: still held
    mark = m.log_mark()
    ln.mine(1)
    got = wait_state(m, h, "CANCELLED")
    assert "auto-cancelled" in got["cancel_reason"]
    e = rpc_error(a.rpc.waitsendpay, h, timeout=30)
    assert e["code"] == 203 and e["data"]["failcode"] == INCORRECT_DETAILS
    # The plugin acted, not the core's net, and no channel closed.
    assert not m.is_in_log("failing it back", start=mark)
    ln.mine(12)
    for x, peer in ((a, m), (m, a)):
        assert x.rpc.listpeerchannels(peer.id)["channels"][0]["state"] == "CHANNELD_NORMAL"
    assert rpc_error(m.rpc.call, "settleholdinvoice", [pre])["code"] == ALREADY_CANCELLED


def test_hold_survives_plugin_restart(net):
    a, m = net.a, net.m
    pre, h, inv = hold(m, 31_000)
    net.ln.pay(a, inv["bolt11"], m.id, 31_000, wait=False)
    wait_state(m, h, "ACCEPTED")
    m.rpc.plugin_stop("htlc-hold")
    m.rpc.plugin_start(str(HOLD_BIN))
    assert listed(m, h)["state"] == "ACCEPTED"
    # Settle right after the restart: it waits (bounded) for the re-offered part; if the
    # part does not come back it is a clear, retryable error, never a cancel.
    try:
        done = m.rpc.call("settleholdinvoice", [pre])
    except RpcError as e:
        assert e.error["code"] == NOT_ATTACHED
        assert e.error["data"]["missing"] and listed(m, h)["state"] == "ACCEPTED"
        raise
    assert done["state"] == "SETTLED"
    assert a.rpc.waitsendpay(h, timeout=60)["payment_preimage"] == pre
