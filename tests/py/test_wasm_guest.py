"""A WASM plugin written in AssemblyScript (tests/wasm/as, built by tests/wasm/build.sh into
target/wasm/asguest.wasm) deciding HTLCs on a devnet: forwards below its minimum are
failed, payments to its node are held until its `asguest-release` method answers them (a
hold-invoice flow, resolved with a preimage only the test knows, or failed), and a held
payment survives a crash of the instance: it is offered again to the restarted one."""

import hashlib
import os
import subprocess

import pytest

from conftest import REPO_ROOT, RpcError, wait_for

GUEST = REPO_ROOT / "target" / "wasm" / "asguest.wasm"
HOLD = {"wasm-sandbox": ["asguest.wasm:hold=true", "asguest.wasm:add-hooks=htlc_accepted"]}


@pytest.fixture(scope="module")
def guest():
    """The compiled guest; built here when tests/run-all did not build it."""
    if not GUEST.is_file():
        if os.environ.get("FULGUR_SKIP_WASM_GUEST") == "1":
            pytest.skip("FULGUR_SKIP_WASM_GUEST=1 and no target/wasm/asguest.wasm")
        subprocess.run([str(REPO_ROOT / "tests" / "wasm" / "build.sh"), str(GUEST)],
                       check=True)
    assert GUEST.read_bytes()[:4] == b"\0asm"
    return str(GUEST)


def held(node):
    return node.rpc.call("asguest-held")["held"]


def hold_invoice(node, label, amount_msat, key):
    """An invoice whose preimage the node does not know (only the plugin can settle it)."""
    hsh = hashlib.sha256(bytes.fromhex(key)).hexdigest()
    inv = node.rpc.call("invoice", {"amount_msat": amount_msat, "label": label,
                                    "description": "asguest hold invoice",
                                    "payment_hash": hsh, "cltv": 100})
    assert inv["payment_hash"] == hsh
    return inv


def test_asguest_fails_forwards_below_its_minimum(ln, guest):
    a = ln.node()
    b = ln.node(plugins=[guest], options={**HOLD, "asguest-min-forward-msat": 20_000})
    c = ln.node()
    b.wait_for_log("asguest: minimum forward 20000 msat")
    ln.line(a, b, c)
    ln.pay_above_and_below(a, c, 30_000, 10_000)
    assert b.is_in_log("asguest: failing a forward of 10000 msat")
    wait_for(lambda: "offered" not in [f["status"] for f in b.rpc.listforwards()["forwards"]])
    statuses = sorted(f["status"] for f in b.rpc.listforwards()["forwards"])
    assert statuses == ["local_failed", "settled"]


def test_asguest_holds_payments_and_survives_a_crash(ln, guest):
    a = ln.node()
    c = ln.node(plugins=[guest], options=HOLD)
    # The test asks the guest to abort: its crash is logged BROKEN, on purpose.
    c.allow_broken(r"asguest-crash: aborting on request")
    ln.fund(a)
    ln.open(a, c)

    # Hold invoice, resolved by the plugin with the preimage the test gives it.
    key = "5a" * 32
    inv = hold_invoice(c, "resolved", 12_000, key)
    h = ln.pay(a, inv["bolt11"], c.id, 12_000, wait=False)
    wait_for(lambda: h in held(c), what="HTLC held by the guest")
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=1)  # still pending while held
    with pytest.raises(RpcError):
        c.rpc.call("asguest-release", {"payment_hash": h, "result": "resolve",
                                       "payment_key": "00"})  # malformed: still held
    assert h in held(c)
    rel = c.rpc.call("asguest-release", {"payment_hash": h, "result": "resolve",
                                         "payment_key": key})
    assert rel["released"] and rel["payment_hash"] == h
    done = a.rpc.waitsendpay(h, timeout=30)
    assert done["status"] == "complete" and done["payment_preimage"] == key
    wait_for(lambda: c.rpc.listinvoices("resolved")["invoices"][0]["status"] == "paid")
    assert h not in held(c)

    # Failed by the plugin (positional parameters): the payer sees a failure.
    inv = c.rpc.invoice(6_000, "failed", "failed by the guest")
    h = ln.pay(a, inv["bolt11"], c.id, 6_000, wait=False)
    wait_for(lambda: h in held(c), what="second HTLC held")
    assert c.rpc.call("asguest-release", [h, "fail", "2002"])["released"]
    with pytest.raises(RpcError) as e:
        a.rpc.waitsendpay(h, timeout=30)
    assert e.value.error["code"] in (203, 204)
    assert c.rpc.listinvoices("failed")["invoices"][0]["status"] == "unpaid"

    # The instance crashes while holding a payment only it can settle: the payment is not
    # failed but kept, and offered again to the restarted instance, which releases it.
    key = "6b" * 32
    inv = hold_invoice(c, "crash", 13_000, key)
    h = ln.pay(a, inv["bolt11"], c.id, 13_000, wait=False)
    wait_for(lambda: h in held(c), what="third HTLC held")
    mark = c.log_mark()
    with pytest.raises(RpcError) as e:
        c.rpc.call("asguest-crash")
    assert "terminated" in str(e.value)
    c.wait_for_log("asguest-crash: aborting on request", start=mark)
    c.wait_for_log("WASM instance restarted", start=mark)
    c.wait_for_log("kept held until a plugin with htlc_accepted starts", start=mark)
    c.wait_for_log("offering it to htlc_accepted again", start=mark)
    wait_for(lambda: h in held(c), what="HTLC offered again to the new instance")
    with pytest.raises(RpcError):
        a.rpc.waitsendpay(h, timeout=1)  # not failed by the crash
    c.rpc.call("asguest-release", {"payment_hash": h, "result": "resolve",
                                   "payment_key": key})
    assert a.rpc.waitsendpay(h, timeout=30)["payment_preimage"] == key
    wait_for(lambda: c.rpc.listinvoices("crash")["invoices"][0]["status"] == "paid")
    assert c.rpc.call("plugin", {"subcommand": "list"})  # the node is fine
    assert any(p["name"].endswith("asguest.wasm") and p["active"]
               for p in c.rpc.call("plugin", {"subcommand": "list"})["plugins"])
