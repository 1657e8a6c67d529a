"""Payments end to end on devchain, driven by pyln-client's LightningRpc (every response is
validated against CLN's schemas): getroute + sendpay + waitsendpay direct and through a
hop, listforwards, waitanyinvoice as a queue across restarts, and pyln-client plugins
answering `htlc_accepted`: holding then continuing, failing with a custom failure message,
resolving with a payment_key for a hash-only invoice, failing small forwards, a plugin that
never answers (the core fails the HTLC back at its deadline; no channel closes), and a held
HTLC offered again after `kill -9` and restart."""

import hashlib

import pytest

from conftest import RpcError, plugin_path, wait_for

HOLD = plugin_path("hold_plugin.py")


def paid_status(node, label):
    return node.rpc.listinvoices(label)["invoices"][0]["status"]


def test_pay_direct_and_through_a_hop(ln):
    a, b, c = ln.node(), ln.node(), ln.node()
    # Gossip converges: A learns the B–C channel from B.
    ab, bc = ln.line(a, b, c)
    ln.wait_gossip(c, ab)
    assert {n["nodeid"] for n in a.rpc.listnodes()["nodes"]} >= {b.id, c.id}

    inv = b.rpc.invoice(10_000, "direct", "A pays B")
    done = ln.pay(a, inv["bolt11"], b.id, 10_000)
    assert done["status"] == "complete"
    pre = done["payment_preimage"]
    assert hashlib.sha256(bytes.fromhex(pre)).hexdigest() == inv["payment_hash"]
    wait_for(lambda: paid_status(b, "direct") == "paid")
    got = b.rpc.waitanyinvoice(0, 10)
    assert got["label"] == "direct" and got["pay_index"] == 1

    inv = c.rpc.invoice(50_000, "routed", "A pays C through B")
    done = ln.pay(a, inv["bolt11"], c.id, 50_000)
    assert done["status"] == "complete"
    assert done["amount_sent_msat"] > 50_000  # B's fee
    fw = wait_for(lambda: [f for f in b.rpc.listforwards()["forwards"]
                           if f["status"] == "settled"], what="settled forward on B")
    assert fw[0]["in_channel"] == ab and fw[0]["out_channel"] == bc
    assert fw[0]["out_msat"] == 50_000 and fw[0]["fee_msat"] > 0
    assert b.rpc.getinfo()["fees_collected_msat"] == fw[0]["fee_msat"]
    # A message signed by A checks out on C, which knows A from gossip.
    sig = a.rpc.signmessage("fulgur says hi")
    chk = c.rpc.checkmessage("fulgur says hi", sig["zbase"])
    assert chk["verified"] and chk["pubkey"] == a.id
    sends = a.rpc.listsendpays()["payments"]
    assert {p["status"] for p in sends} == {"complete"} and len(sends) == 2


def test_waitanyinvoice_is_a_queue_across_restarts(ln):
    a, c = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, c)
    x = c.rpc.invoice(1000, "x", "x")
    y = c.rpc.invoice(2000, "y", "y")
    ln.pay(a, y["bolt11"], c.id, 2000)
    ln.pay(a, x["bolt11"], c.id, 1000)
    first = c.rpc.waitanyinvoice(0, 10)
    assert (first["label"], first["pay_index"]) == ("y", 1)
    second = c.rpc.waitanyinvoice(first["pay_index"], 10)
    assert (second["label"], second["pay_index"]) == ("x", 2)
    ln.restart(c)
    with pytest.raises(RpcError) as e:
        c.rpc.waitanyinvoice(2, 0)
    assert e.value.error["code"] == 904
    # Still the same queue after the restart: earlier payments come back by pay_index.
    assert c.rpc.waitanyinvoice(1, 10)["label"] == "x"
    ln.connect(a, c)
    wait_for(lambda: a.rpc.listpeerchannels(c.id)["channels"][0]["peer_connected"])
    wait_for(lambda: a.rpc.listpeerchannels(c.id)["channels"][0]["state"] == "CHANNELD_NORMAL")
    z = c.rpc.invoice(3000, "z", "z")
    wait_for(lambda: _usable(a, c))
    ln.pay(a, z["bolt11"], c.id, 3000)
    third = c.rpc.waitanyinvoice(2, 10)
    assert (third["label"], third["pay_index"]) == ("z", 3)


def payer_and_holder(ln, options=None):
    """A funded payer A with a channel to C, which runs the hold plugin."""
    a = ln.node()
    c = ln.node(plugins=[HOLD], options=options)
    ln.fund(a)
    ln.open(a, c)
    return a, c


def pay_held(ln, a, c, inv, amount_msat):
    """A pays C's invoice `inv` without waiting for the result; returns the payment hash once
    C's hold plugin holds the HTLC."""
    h = ln.pay(a, inv["bolt11"], c.id, amount_msat, wait=False)
    wait_for(lambda: h in c.rpc.call("hold-seen")["pending"], what="HTLC held")
    return h


def _usable(a, c):
    ch = a.rpc.listpeerchannels(c.id)["channels"]
    return ch and ch[0]["peer_connected"] and ch[0]["spendable_msat"] > 0


def test_plugin_holds_fails_and_resolves(ln):
    a, c = payer_and_holder(ln)

    # Held for several seconds, then continued: the payment settles.
    inv = c.rpc.invoice(5000, "held", "held", cltv=100)
    h = pay_held(ln, a, c, inv, 5000)
    seen = c.rpc.call("hold-seen")["seen"][-1]
    assert seen["kind"] == "receive" and seen["amount_msat"] == 5000
    assert seen["deadline_blockheight"] > c.rpc.getinfo()["blockheight"]
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=3)  # still pending after 3 s held
    assert c.rpc.call("hold-release", {"payment_hash": h, "result": "continue"})["released"]
    assert a.rpc.waitsendpay(h, timeout=30)["status"] == "complete"
    wait_for(lambda: paid_status(c, "held") == "paid")

    # Failed with a custom failure message: the payer sees a failure, nothing is paid.
    inv = c.rpc.invoice(6000, "failed", "failed", cltv=100)
    h = pay_held(ln, a, c, inv, 6000)
    c.rpc.call("hold-release", {"payment_hash": h, "result": "fail",
                                "failure_message": "2002"})
    with pytest.raises(RpcError) as e:
        a.rpc.waitsendpay(h, timeout=30)
    assert e.value.error["code"] in (203, 204)
    assert paid_status(c, "failed") == "unpaid"

    # Resolved with a payment_key for an invoice whose preimage fulgurd never knew.
    key = "5a" * 32
    hsh = hashlib.sha256(bytes.fromhex(key)).hexdigest()
    inv = c.rpc.call("invoice", {"amount_msat": 7000, "label": "external",
                                 "description": "preimage held by the plugin",
                                 "payment_hash": hsh, "cltv": 100})
    assert inv["payment_hash"] == hsh
    h = pay_held(ln, a, c, inv, 7000)
    c.rpc.call("hold-release", {"payment_hash": h, "result": "resolve", "payment_key": key})
    done = a.rpc.waitsendpay(h, timeout=30)
    assert done["payment_preimage"] == key
    wait_for(lambda: paid_status(c, "external") == "paid")
    assert c.rpc.listinvoices("external")["invoices"][0]["payment_preimage"] == key


def test_deadline_fails_back_a_held_htlc_without_closing(ln):
    a, c = payer_and_holder(ln, options={"hold-safety-blocks": 10})
    inv = c.rpc.invoice(8000, "never", "never answered", cltv=80)
    h = pay_held(ln, a, c, inv, 8000)
    deadline = c.rpc.call("hold-seen")["seen"][-1]["deadline_blockheight"]
    expiry = [x for x in c.rpc.listhtlcs()["htlcs"] if x["payment_hash"] == h][0]["expiry"]
    # The core decides 10 blocks before LDK's own deadline (39 before expiry).
    assert deadline == expiry - 39 - 10
    ln.mine(deadline - ln.chain.height() - 1)
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=2)  # one block before: still held
    ln.mine(1)
    with pytest.raises(RpcError) as e:
        a.rpc.waitsendpay(h, timeout=30)
    assert e.value.error["code"] in (203, 204)
    c.wait_for_log("failing it back")
    # The plugin's late answer is ignored and logged.
    c.rpc.call("hold-release", {"payment_hash": h, "result": "continue"})
    c.wait_for_log("Late htlc_accepted answer")
    assert paid_status(c, "never") == "unpaid"
    for n, peer in ((a, c), (c, a)):
        assert n.rpc.listpeerchannels(peer.id)["channels"][0]["state"] == "CHANNELD_NORMAL"


def test_held_htlc_is_offered_again_after_kill_and_restart(ln):
    a, c = payer_and_holder(ln)
    inv = c.rpc.invoice(9000, "crash", "held across a crash", cltv=200)
    h = pay_held(ln, a, c, inv, 9000)
    ln.restart(c, kill=True)
    # After every plugin's init, the HTLC is offered to the hook again.
    wait_for(lambda: h in c.rpc.call("hold-seen")["pending"], what="hook called again")
    ln.connect(a, c)
    c.rpc.call("hold-release", {"payment_hash": h, "result": "continue"})
    assert a.rpc.waitsendpay(h, timeout=60)["status"] == "complete"
    wait_for(lambda: paid_status(c, "crash") == "paid")


def test_htlc_only_a_plugin_can_settle_waits_for_the_plugin_to_return(ln):
    """CLN continues when the holding plugin dies, which fails a payment whose preimage
    only the plugin knows; fulgurd keeps it held and offers it again once a plugin with
    `htlc_accepted` starts."""
    a, c = payer_and_holder(ln)
    key = "7b" * 32
    hsh = hashlib.sha256(bytes.fromhex(key)).hexdigest()
    inv = c.rpc.call("invoice", {"amount_msat": 11_000, "label": "restart",
                                 "description": "held across a plugin restart",
                                 "payment_hash": hsh, "cltv": 100})
    h = pay_held(ln, a, c, inv, 11_000)
    c.rpc.plugin_stop(HOLD)
    c.wait_for_log("kept held until a plugin with htlc_accepted starts")
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=2)  # not failed
    c.rpc.plugin_start(HOLD)
    wait_for(lambda: h in c.rpc.call("hold-seen")["pending"], what="offered again")
    c.rpc.call("hold-release", {"payment_hash": h, "result": "resolve", "payment_key": key})
    assert a.rpc.waitsendpay(h, timeout=30)["payment_preimage"] == key
    wait_for(lambda: paid_status(c, "restart") == "paid")


def test_forwarding_plugin_fails_small_forwards(ln):
    a = ln.node()
    b = ln.node(plugins=[HOLD], options={"hold-mode": "min-forward",
                                         "hold-min-msat": 20_000})
    c = ln.node()
    ln.line(a, b, c)
    ln.pay_above_and_below(a, c, 30_000, 10_000)
    seen = b.rpc.call("hold-seen")["seen"]
    assert [s["kind"] for s in seen] == ["forward", "forward"]
    assert [s["forward_msat"] for s in seen] == [30_000, 10_000]
    wait_for(lambda: "offered" not in [f["status"] for f in b.rpc.listforwards()["forwards"]])
    statuses = sorted(f["status"] for f in b.rpc.listforwards()["forwards"])
    assert statuses == ["local_failed", "settled"]


def test_continue_replacements(ln):
    """`continue` with CLN's replacements: `forward_to` moves a forward to another channel
    with the same peer, `invoice_msat` changes the amount the payment is checked against,
    and the replacements LDK cannot carry out (`payload`, `extra_tlvs`: LDK forwards the
    onion it received and reads a payment's onion itself) fail the HTLC, loudly."""
    a = ln.node()
    b = ln.node(plugins=[HOLD])
    c = ln.node(plugins=[HOLD])
    ab, bc1 = ln.line(a, b, c)
    bc2 = ln.open(b, c)
    ids = {ch["short_channel_id"]: ch["channel_id"]
           for ch in b.rpc.listpeerchannels(c.id)["channels"]}

    def send(inv, amount_msat, via):
        route = a.rpc.getroute(c.id, amount_msat, riskfactor=1, cltv=100)["route"]
        route[1]["channel"] = via
        a.rpc.sendpay(route, inv["payment_hash"], payment_secret=inv["payment_secret"],
                      amount_msat=amount_msat, bolt11=inv["bolt11"])
        return inv["payment_hash"]

    def release(node, h, **extra):
        wait_for(lambda: h in node.rpc.call("hold-seen")["pending"], what="HTLC held")
        assert node.rpc.call("hold-release", {"payment_hash": h, "result": "continue",
                                              "extra": extra})["released"]

    # forward_to: the onion names bc1, the plugin sends it on bc2.
    inv = c.rpc.invoice(10_000, "moved", "moved", cltv=100)
    h = send(inv, 10_000, bc1)
    release(b, h, forward_to=ids[bc2])
    release(c, h)
    assert a.rpc.waitsendpay(h, timeout=30)["status"] == "complete"
    fw = wait_for(lambda: [f for f in b.rpc.listforwards()["forwards"]
                           if f["status"] == "settled"], what="settled forward")
    assert (fw[0]["in_channel"], fw[0]["out_channel"]) == (ab, bc2)

    # invoice_msat above what was paid: C checks against it and refuses the payment.
    inv = c.rpc.invoice("any", "dearer", "any amount", cltv=100)
    h = send(inv, 10_000, bc1)
    release(b, h)
    release(c, h, invoice_msat="20000msat")
    with pytest.raises(RpcError) as e:
        a.rpc.waitsendpay(h, timeout=30)
    assert e.value.error["code"] in (203, 204)
    assert paid_status(c, "dearer") == "unpaid"
    # ... and at or below it, the payment goes through.
    inv = c.rpc.invoice("any", "cheaper", "any amount", cltv=100)
    h = send(inv, 10_000, bc1)
    release(b, h)
    release(c, h, invoice_msat=10_000)
    assert a.rpc.waitsendpay(h, timeout=30)["status"] == "complete"

    # A replaced payload of a payment to C: refused, logged at UNUSUAL, failed back.
    inv = c.rpc.invoice(10_000, "rewritten", "rewritten", cltv=100)
    h = send(inv, 10_000, bc1)
    release(b, h)
    release(c, h, payload="00")
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=30)
    c.wait_for_log(r"UNUSUAL.*htlc_accepted replaced the payload of payment")
    assert paid_status(c, "rewritten") == "unpaid"

    # extra_tlvs on a forward: refused the same way (last: A drops the failed channel).
    inv = c.rpc.invoice(10_000, "tlvs", "tlvs", cltv=100)
    h = send(inv, 10_000, bc1)
    release(b, h, extra_tlvs="fe00010000020102")
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=30)
    b.wait_for_log(r"UNUSUAL.*htlc_accepted replaced the extra_tlvs of forward")
    for n, peer in ((a, b), (b, c)):
        assert {ch["state"] for ch in n.rpc.listpeerchannels(peer.id)["channels"]} \
            == {"CHANNELD_NORMAL"}


def test_onion_payload_is_the_hops_tlv_payload(ln):
    """`onion.payload` is the hop's BOLT 4 payload (length, then TLVs), rebuilt from what LDK
    tells: a forward's amount, CLTV and next channel; a payment's amount, CLTV, payment
    secret and total (pyln-proto parses it as CLN plugins do)."""
    from pyln.proto.onion import TlvPayload
    a = ln.node()
    b = ln.node(plugins=[HOLD], options={"hold-mode": "continue-after", "hold-seconds": 0})
    c = ln.node(plugins=[HOLD], options={"hold-mode": "continue-after", "hold-seconds": 0})
    ab, bc = ln.line(a, b, c)
    inv = c.rpc.invoice(12_345, "onion", "onion", cltv=100)
    assert ln.pay(a, inv["bolt11"], c.id, 12_345)["status"] == "complete"

    def tu(v):
        return v.to_bytes(8, "big").lstrip(b"\0")

    fwd = b.rpc.call("hold-seen")["seen"][-1]
    p = TlvPayload.from_hex(fwd["payload"])
    assert p.get(2).value == tu(fwd["forward_msat"]) == tu(12_345)
    blk, tx, out = (int(x) for x in bc.split("x"))
    assert p.get(6).value == (blk << 40 | tx << 16 | out).to_bytes(8, "big")
    assert p.get(8) is None

    rcv = c.rpc.call("hold-seen")["seen"][-1]
    p = TlvPayload.from_hex(rcv["payload"])
    assert p.get(2).value == tu(12_345)
    assert p.get(4).value == tu(rcv["outgoing_cltv_value"])
    assert rcv["outgoing_cltv_value"] > ln.chain.height() + 100
    assert p.get(8).value == bytes.fromhex(inv["payment_secret"]) + tu(12_345)
