"""The pay plugin's xpay-era and renepay commands end to end: `xkeysend`, `sendamount`,
`renepay` and `renepaystatus`, with CLN's params, results and errors, on one line of nodes
shared by the module (built once; the tests run in file order):

    A ──1M── B ──1M── C

Channels are opened by the node named first, so their funds start on that side. Every
reply is validated against CLN's schemas by the harness."""

import hashlib
import time
from types import SimpleNamespace

import pytest

import lnnet
from conftest import RpcError, wait_for


@pytest.fixture(scope="module")
def net():
    with lnnet.module_network("fulgur-paymore-") as ln:
        n = SimpleNamespace(ln=ln)
        n.a, n.b, n.c = ln.node(), ln.node(), ln.node()
        n.ab, n.bc = ln.line(n.a, n.b, n.c)
        yield n


def sha256(hex_preimage):
    return hashlib.sha256(bytes.fromhex(hex_preimage)).hexdigest()


def error(node, method, params):
    with pytest.raises(RpcError) as e:
        node.rpc.call(method, params)
    return e.value.error


def keysend_invoice(node, payment_hash):
    """The payee's record of an incoming keysend (an invoice of its own, once its LDK
    reports the claim, which may be a moment after the payer's call returned)."""
    def find():
        return [i for i in node.rpc.listinvoices()["invoices"]
                if i["payment_hash"] == payment_hash and i["status"] == "paid"]
    [inv] = wait_for(find, what="keysend recorded by the payee")
    return inv


XPAY_FIELDS = {"payment_preimage", "failed_parts", "successful_parts", "amount_msat",
               "amount_sent_msat"}


# ------------------------------------------------------------------------------ xkeysend

def test_xkeysend_direct_and_over_two_hops(net):
    a, b, c = net.a, net.b, net.c
    r = a.rpc.call("xkeysend", {"destination": b.id, "amount_msat": 100_000})
    assert set(r) == XPAY_FIELDS
    assert (r["successful_parts"], r["failed_parts"]) == (1, 0)
    assert r["amount_msat"] == r["amount_sent_msat"] == 100_000  # our own channel: no fee
    [part] = [p for p in a.rpc.listsendpays()["payments"]
              if p.get("payment_preimage") == r["payment_preimage"]]
    assert part["status"] == "complete" and part["destination"] == b.id
    assert sha256(r["payment_preimage"]) == part["payment_hash"]
    inv = keysend_invoice(b, part["payment_hash"])
    assert inv["payment_preimage"] == r["payment_preimage"]
    assert inv["amount_received_msat"] == 100_000

    # Over B, by position (destination amount_msat label maxfee layers retry_for maxdelay
    # extratlvs), with a payer's message and a label.
    msg = "over two hops"
    r = a.rpc.call("xkeysend", [c.id, "200sat", "xk-two", None, ["auto.localchans"], 30, 500,
                                {"133773311": msg.encode().hex()}])
    assert set(r) == XPAY_FIELDS
    assert (r["successful_parts"], r["failed_parts"]) == (1, 0)
    assert r["amount_msat"] == 200_000 < r["amount_sent_msat"]
    [part] = [p for p in a.rpc.listsendpays()["payments"] if p.get("label") == "xk-two"]
    assert part["payment_preimage"] == r["payment_preimage"]
    assert part["amount_sent_msat"] == r["amount_sent_msat"]
    inv = keysend_invoice(c, part["payment_hash"])
    assert inv["payment_preimage"] == r["payment_preimage"]
    assert inv["amount_received_msat"] == 200_000
    assert inv["description"] == f"keysend: {msg}"


def test_xkeysend_errors_are_clns(net):
    a, b, c = net.a, net.b, net.c
    before = len(a.rpc.listsendpays()["payments"])
    e = error(a, "xkeysend", {"destination": a.id, "amount_msat": 1000})
    assert e["code"] == -32602
    assert e["message"] == ("We are the destination. Keysend cannot be used to send funds "
                            "to yourself")
    for params in ({"destination": "02abcd", "amount_msat": 1000},
                   {"destination": b.id},
                   {"destination": b.id, "amount_msat": 0},
                   {"destination": b.id, "amount_msat": "lots"},
                   {"destination": b.id, "amount_msat": 1000, "layers": ["my-layer"]},
                   {"destination": b.id, "amount_msat": 1000, "maxfeepercent": 1},
                   {"destination": b.id, "amount_msat": 1000, "extratlvs": "00"}):
        assert error(a, "xkeysend", params)["code"] == -32602, params
    # Nothing was sent for any of them.
    assert len(a.rpc.listsendpays()["payments"]) == before

    stranger = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    assert error(a, "xkeysend", {"destination": stranger, "amount_msat": 1000})["code"] == 205
    # B charges a fee to reach C: none allowed.
    e = error(a, "xkeysend", {"destination": c.id, "amount_msat": 10_000, "maxfee": 0,
                              "retry_for": 5})
    assert e["code"] in (205, 206, 210), e
    # An even TLV type the payee does not know: it refuses (BOLT's "it's OK to be odd").
    e = error(a, "xkeysend", {"destination": b.id, "amount_msat": 3000,
                              "extratlvs": {"133773310": "00"}})
    assert e["code"] == 203


# ---------------------------------------------------------------------------- sendamount

def test_sendamount_takes_the_fees_out_of_the_amount(net):
    a, b, c = net.a, net.b, net.c
    inv = c.rpc.invoice("any", "sendamount-two", "sent over B")
    r = a.rpc.call("sendamount", {"invstring": inv["bolt11"], "amount_msat": 500_000})
    assert set(r) == XPAY_FIELDS
    assert (r["successful_parts"], r["failed_parts"]) == (1, 0)
    assert sha256(r["payment_preimage"]) == inv["payment_hash"]
    # What left our node is exactly amount_msat; B's fee came out of what C got.
    assert r["amount_sent_msat"] == 500_000
    assert 500_000 - 5000 <= r["amount_msat"] < 500_000
    [part] = a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert part["status"] == "complete" and part["amount_sent_msat"] == 500_000
    assert part["amount_msat"] == r["amount_msat"]

    def received():
        got = c.rpc.listinvoices("sendamount-two")["invoices"][0]
        return got["status"] == "paid" and got["amount_received_msat"]
    assert wait_for(received, what="C paid") == r["amount_msat"]
    # Over our own channel nothing is deducted; by position, with a label.
    inv = b.rpc.invoice("any", "sendamount-one", "direct")
    r = a.rpc.call("sendamount", [inv["bolt11"], "300sat", None, None, 30, None, None, "sa"])
    assert r["amount_msat"] == r["amount_sent_msat"] == 300_000
    [part] = a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert part["label"] == "sa"


def test_sendamount_refuses_what_cln_refuses(net):
    a, c = net.a, net.c
    fixed = c.rpc.invoice(100_000, "sendamount-fixed", "has an amount")
    e = error(a, "sendamount", {"invstring": fixed["bolt11"], "amount_msat": 200_000})
    assert e["code"] == -32602
    assert e["message"] == "Expecting a Bolt11 invoice with no amount."
    assert a.rpc.listsendpays(payment_hash=fixed["payment_hash"])["payments"] == []

    offer = "lno1qgsqvgnwgcg35z6ee2h3yczraddm72xrfua9uve2rlrm9deu7xyfzrc2qajx2enpw4k8g93pqw"
    e = error(a, "sendamount", {"invstring": offer, "amount_msat": 1000})
    assert e["code"] == -32602 and "BOLT12 is not supported yet" in e["message"]
    e = error(a, "sendamount", {"invstring": "bob@example.com", "amount_msat": 1000})
    assert e["code"] == -32602

    open_inv = c.rpc.invoice("any", "sendamount-refused", "x")
    for params in ({"invstring": open_inv["bolt11"]},
                   {"invstring": open_inv["bolt11"], "amount_msat": 0},
                   {"invstring": open_inv["bolt11"], "amount_msat": 1000, "layers": ["mine"]},
                   {"invstring": "lnbcrt1garbage", "amount_msat": 1000}):
        assert error(a, "sendamount", params)["code"] == -32602, params
    # B's fee is more than maxfee allows.
    e = error(a, "sendamount", {"invstring": open_inv["bolt11"], "amount_msat": 100_000,
                                "maxfee": 1})
    assert e["code"] == 206
    assert a.rpc.listsendpays(payment_hash=open_inv["payment_hash"])["payments"] == []


# ------------------------------------------------------------------------------- renepay

def test_renepay_pays_and_renepaystatus_lists_it(net):
    a, c = net.a, net.c
    inv = c.rpc.invoice(123_000, "renepay", "renepay")
    before = int(time.time())
    r = a.rpc.call("renepay", {"invstring": inv["bolt11"]})
    after = time.time()
    assert r["status"] == "complete"
    assert r["amount_msat"] == 123_000 < r["amount_sent_msat"]
    assert r["destination"] == c.id and r["bolt11"] == inv["bolt11"]
    assert r["payment_hash"] == inv["payment_hash"] == sha256(r["payment_preimage"])
    assert before <= r["created_at"] <= after
    assert r["parts"] >= 1
    [part] = a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert part["groupid"] == r["groupid"]
    wait_for(lambda: c.rpc.listinvoices("renepay")["invoices"][0]["status"] == "paid",
             what="C paid")

    [s] = a.rpc.call("renepaystatus", {"invstring": inv["bolt11"]})["paystatus"]
    assert s["status"] == "complete" and s["bolt11"] == inv["bolt11"]
    assert s["payment_preimage"] == r["payment_preimage"]
    assert (s["payment_hash"], s["groupid"]) == (inv["payment_hash"], r["groupid"])
    assert s["amount_msat"] == 123_000 and s["amount_sent_msat"] == r["amount_sent_msat"]
    assert s["destination"] == c.id and s["parts"] == r["parts"]
    everything = a.rpc.call("renepaystatus", {})["paystatus"]
    assert inv["payment_hash"] in [x["payment_hash"] for x in everything]

    # Paying again returns the same payment and sends nothing.
    again = a.rpc.call("renepay", [inv["bolt11"]])
    assert again["payment_preimage"] == r["payment_preimage"]
    assert len(a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]) == 1

    # An invoice without an amount, positionally (invstring amount_msat maxfee maxdelay
    # retry_for description label exclude).
    any_inv = c.rpc.invoice("any", "renepay-any", "any")
    r = a.rpc.call("renepay", [any_inv["bolt11"], "50sat", "5sat", 500, 30, None, "rp"])
    assert r["amount_msat"] == 50_000 and r["status"] == "complete"
    [part] = a.rpc.listsendpays(payment_hash=any_inv["payment_hash"])["payments"]
    assert part["label"] == "rp"


def test_renepay_errors_are_clns(net):
    a, b, c = net.a, net.b, net.c
    fixed = c.rpc.invoice(100_000, "renepay-errors", "x")
    e = error(a, "renepay", {"invstring": fixed["bolt11"], "amount_msat": 100_000})
    assert e["code"] == -32602
    assert e["message"] == ("amount_msat parameter cannot be specified on an invoice with "
                            "an amount")
    open_inv = c.rpc.invoice("any", "renepay-errors-any", "x")
    e = error(a, "renepay", {"invstring": open_inv["bolt11"]})
    assert (e["code"], e["message"]) == (-32602, "amount_msat parameter required")
    for params in ({"invstring": "lnbcrt1garbage"},
                   {"invstring": fixed["bolt11"], "exclude": ["nobody"]},
                   {"invstring": fixed["bolt11"], "maxfee": "lots"},
                   {"bolt11": fixed["bolt11"]}):
        assert error(a, "renepay", params)["code"] == -32602, params

    # B's fee is above maxfee.
    e = error(a, "renepay", {"invstring": fixed["bolt11"], "maxfee": 1})
    assert e["code"] == 206
    # Without B there is no way to C.
    e = error(a, "renepay", {"invstring": fixed["bolt11"], "exclude": [b.id]})
    assert e["code"] == 205
    # A failed attempt shows in renepaystatus (nothing was sent).
    assert a.rpc.listsendpays(payment_hash=fixed["payment_hash"])["payments"] == []
    [s] = a.rpc.call("renepaystatus", [fixed["bolt11"]])["paystatus"]
    assert s["status"] == "failed" and s["parts"] == 0 and "payment_preimage" not in s

    assert error(a, "renepaystatus", {"invstring": "lnbcrt1garbage"})["code"] == -32602
    unknown = c.rpc.invoice(1000, "renepay-never", "x")
    assert a.rpc.call("renepaystatus", [unknown["bolt11"]])["paystatus"] == []
