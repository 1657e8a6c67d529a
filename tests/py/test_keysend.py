"""`keysend` end to end: sending (LDK routes and retries), and receiving as CLN's keysend
plugin does, under an invoice of its own that `listinvoices` and `waitanyinvoice` show
(issue 18). Replies are validated against CLN's schemas by pyln's ValidatingRpc."""

import hashlib

import pytest

from conftest import RpcError, wait_for


def test_keysend_pays_and_the_payee_records_it_as_an_invoice(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, b)

    r = a.rpc.keysend(b.id, 100_000)
    assert r["status"] == "complete" and r["parts"] == 1
    assert r["destination"] == b.id and r["amount_msat"] == 100_000
    assert r["amount_sent_msat"] == 100_000  # one hop: no fee
    preimage = bytes.fromhex(r["payment_preimage"])
    assert hashlib.sha256(preimage).hexdigest() == r["payment_hash"]

    # The payer lists it as a completed part.
    [part] = a.rpc.listsendpays(payment_hash=r["payment_hash"])["payments"]
    assert part["status"] == "complete" and part["destination"] == b.id
    assert part["payment_preimage"] == r["payment_preimage"]

    # The payee recorded it as CLN's keysend plugin does (when its LDK reports the claim,
    # which may be a moment after the payer's keysend returned).
    [inv] = wait_for(lambda: b.rpc.listinvoices()["invoices"], what="keysend recorded")
    assert inv["label"].startswith("keysend-")
    assert inv["status"] == "paid" and inv["description"] == "keysend"
    assert inv["payment_hash"] == r["payment_hash"]
    assert inv["amount_received_msat"] == 100_000 and "amount_msat" not in inv
    assert inv["payment_preimage"] == r["payment_preimage"]
    got = b.rpc.waitanyinvoice(0, 10)
    assert (got["label"], got["pay_index"]) == (inv["label"], 1)

    # A payer's message (the longest text TLV) becomes the description.
    msg = "thanks for the coffee"
    r2 = a.rpc.keysend(b.id, "2000sat", extratlvs={"133773311": msg.encode().hex()})
    inv2 = b.rpc.waitanyinvoice(1, 10)
    assert inv2["payment_hash"] == r2["payment_hash"]
    assert inv2["description"] == f"keysend: {msg}"
    assert inv2["amount_received_msat"] == 2_000_000
    assert len(b.rpc.listinvoices()["invoices"]) == 2
    assert len({i["label"] for i in b.rpc.listinvoices()["invoices"]}) == 2

    # An even TLV type the payee does not know is refused, as CLN refuses one that
    # `accept-extra-tlvs-type` does not list: the payer hears the destination's refusal.
    with pytest.raises(RpcError) as e:
        a.rpc.keysend(b.id, 3000, extratlvs={"133773310": "00"})
    assert e.value.error["code"] == 203
    assert e.value.error["data"]["failcodename"] == "WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS"


def test_keysend_errors_are_clns(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, b)
    stranger = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"  # nobody
    with pytest.raises(RpcError) as e:
        a.rpc.keysend(stranger, 1000)
    assert e.value.error["code"] == 205
    # The failed attempt is recorded, as CLN's pay records its attempts.
    failed = [p for p in a.rpc.listsendpays()["payments"] if p["status"] == "failed"]
    assert [p["destination"] for p in failed] == [stranger]

    # More than the channel holds.
    with pytest.raises(RpcError) as e:
        a.rpc.keysend(b.id, 2_000_000_000)
    assert e.value.error["code"] in (205, 210)

    with pytest.raises(RpcError) as e:
        a.rpc.call("keysend", {"destination": b.id, "amount_msat": 1000, "maxfee": 10,
                               "maxfeepercent": 1})
    assert e.value.error["code"] == -32602
    with pytest.raises(RpcError) as e:
        a.rpc.keysend(b.id, 1000, extratlvs={"1": "00"})
    assert e.value.error["code"] == -32602
    # Nothing was paid: b has no invoice.
    assert b.rpc.listinvoices()["invoices"] == []
