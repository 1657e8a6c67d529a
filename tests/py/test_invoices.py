"""Invoices through pyln-client's LightningRpc (results validated against CLN's schemas by
the ValidatingRpc) and a pyln-client plugin receiving `invoice_creation`. The Lightning
engine needs a Bitcoin backend: each test starts its own devchain. Paying invoices needs
channels and is tested with them."""

import hashlib
import time

import pytest

import clnschema
from conftest import RpcError, plugin_path, wait_for


def engine_node(node_factory, devchain, plugins=()):
    node = node_factory.get_node(plugins=plugins, options=devchain.options())
    node.wait_for_log("Lightning engine started")
    return node


def code(excinfo):
    return excinfo.value.error["code"]


def test_invoice_list_delete_with_pyln(node_factory, devchain):
    node = engine_node(node_factory, devchain, plugins=[plugin_path("invoice_notes_plugin.py")])
    rpc = node.rpc

    inv = rpc.invoice(amount_msat=5000, label="pyln", description="from pyln", expiry=600)
    dec = rpc.decode(inv["bolt11"])
    assert dec["payment_hash"] == inv["payment_hash"]
    assert dec["amount_msat"] == 5000
    assert dec["description"] == "from pyln"
    assert dec["expiry"] == 600
    assert dec["min_final_cltv_expiry"] == 42
    assert inv["expires_at"] == dec["created_at"] + 600

    preimage = "42" * 32
    inv2 = rpc.invoice(amount_msat="any", label=7, description="numeric label",
                       preimage=preimage, cltv=500)
    assert inv2["payment_hash"] == hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
    assert rpc.decode(inv2["bolt11"])["min_final_cltv_expiry"] == 500

    listed = rpc.listinvoices()["invoices"]
    assert [i["label"] for i in listed] == ["pyln", "7"]
    assert [i["created_index"] for i in listed] == [1, 2]
    assert rpc.listinvoices(label=7)["invoices"][0]["payment_hash"] == inv2["payment_hash"]
    assert rpc.listinvoices(invstring=inv["bolt11"])["invoices"][0]["label"] == "pyln"
    assert [i["label"] for i in rpc.listinvoices(index="created", start=2)["invoices"]] == ["7"]

    with pytest.raises(RpcError) as e:
        rpc.invoice(amount_msat=1, label="pyln", description="dup")
    assert code(e) == 900
    with pytest.raises(RpcError) as e:
        rpc.invoice(amount_msat=1, label="other", description="dup", preimage=preimage)
    assert code(e) == 901
    with pytest.raises(RpcError) as e:
        rpc.delinvoice("pyln", "paid")
    assert code(e) == 906
    assert e.value.error["data"] == {"current_status": "unpaid", "expected_status": "paid"}

    # Our extension, through the generic call.
    h = "cd" * 32
    held = rpc.call("invoice", {"amount_msat": 1000, "label": "held", "description": "d",
                                "payment_hash": h})
    assert held["payment_hash"] == h

    deleted = rpc.delinvoice("pyln", "unpaid")
    assert deleted["label"] == "pyln" and deleted["bolt11"] == inv["bolt11"]
    assert [i["label"] for i in rpc.listinvoices()["invoices"]] == ["7", "held"]

    # The pyln plugin got invoice_creation for each, as its handlers' keyword argument.
    notes = wait_for(lambda: len(rpc.call("invoicenotes")["notes"]) >= 3 and
                     rpc.call("invoicenotes")["notes"])
    payloads = {n["payload"]["label"]: n["payload"] for n in notes
                if n["topic"] == "invoice_creation"}
    assert payloads["pyln"]["msat"] == 5000
    assert payloads["7"]["preimage"] == preimage and "msat" not in payloads["7"]
    assert "preimage" not in payloads["held"]
    clnschema.validate("notification/invoice_creation.json", payloads["pyln"])
    clnschema.validate("notification/invoice_creation.json", payloads["7"])
    assert {m for m, _ in rpc.validated} >= {"invoice", "listinvoices", "delinvoice"}


def test_waits_with_pyln(node_factory, devchain):
    node = engine_node(node_factory, devchain)
    rpc = node.rpc

    with pytest.raises(RpcError) as e:
        rpc.waitanyinvoice(timeout=0)
    assert code(e) == 904

    rpc.invoice(amount_msat=1000, label="short", description="d", expiry=2)
    start = time.monotonic()
    with pytest.raises(RpcError) as e:
        rpc.waitinvoice("short")
    assert code(e) == 903
    assert time.monotonic() - start >= 0.9  # expiry 2 s, from a whole second
    assert e.value.error["data"]["status"] == "expired"
    assert rpc.listinvoices(label="short")["invoices"][0]["status"] == "expired"

    # Once it has been expired for a second, autoclean takes it.
    res = wait_for(lambda: (lambda r: r["autoclean"]["expiredinvoices"]["cleaned"] and r)(
        rpc.call("autoclean-once", {"subsystem": "expiredinvoices", "age": 1})),
        what="the expired invoice aged 1 s")
    assert res == {"autoclean": {"expiredinvoices": {"cleaned": 1, "uncleaned": 0}}}
    assert rpc.listinvoices()["invoices"] == []
    assert {m for m, _ in rpc.validated} >= {"listinvoices", "autoclean-once"}


def test_unified_invoices(ln):
    """CLN's test_unified_invoices with `invoices-onchain-fallback`: each invoice carries a
    fresh wallet address; an on-chain payment of it, once confirmed, pays the invoice
    (`paid_outpoint`); one below the invoice's amount does not."""
    a = ln.node(options={"invoices-onchain-fallback": None})
    inv = a.rpc.invoice(1_000_000, "inv1", "test_unified_invoices")
    b11 = a.rpc.decode(inv["bolt11"])
    assert len(b11["fallbacks"]) == 1
    addr = b11["fallbacks"][0]["addr"]
    assert addr.startswith("bcrt1p")  # taproot, as CLN's
    txid = ln.chain.call("sendtoaddress", addr, 0.00001)
    ln.mine(1)
    res = a.rpc.waitinvoice("inv1")
    assert res["status"] == "paid"
    assert res["paid_outpoint"]["txid"] == txid
    assert res["amount_received_msat"] == 1_000_000
    listed = a.rpc.listinvoices("inv1")["invoices"][0]
    assert listed["paid_outpoint"] == res["paid_outpoint"]

    # Too little: the coins are the wallet's, the invoice stays unpaid.
    inv = a.rpc.invoice(5_000_000, "inv2", "too little")
    addr = a.rpc.decode(inv["bolt11"])["fallbacks"][0]["addr"]
    ln.chain.call("sendtoaddress", addr, 0.00001)
    ln.mine(1)
    a.wait_for_log(r"Deposit .* to invoice 'inv2''s fallback is below its amount")
    assert a.rpc.listinvoices("inv2")["invoices"][0]["status"] == "unpaid"

    # Paid while the node was down: found when it starts again.
    inv = a.rpc.invoice(1_000_000, "inv4", "paid while down")
    addr = a.rpc.decode(inv["bolt11"])["fallbacks"][0]["addr"]
    a.stop()
    txid = ln.chain.call("sendtoaddress", addr, 0.00001)
    ln.chain.mine(1)
    mark = a.log_mark()
    a.start()
    a.wait_for_log("Lightning engine started", start=mark)
    assert a.rpc.waitinvoice("inv4")["paid_outpoint"]["txid"] == txid

    # Explicit fallbacks are kept as given (and not tracked).
    mine = a.rpc.newaddr("bech32")["bech32"]
    inv = a.rpc.invoice(1000, "inv3", "given", fallbacks=[mine])
    assert [f["addr"] for f in a.rpc.decode(inv["bolt11"])["fallbacks"]] == [mine]
