"""A paid invoice refuses a second payment (issue 16): three nodes on a devchain, payers A
and B each with a channel to merchant M. A pays an invoice, then B pays the same invoice:
M must fail B's HTLC back with incorrect_or_unknown_payment_details (CLN's behaviour), B's
funds come back, and the invoice keeps A's payment only. The same for a hold invoice
(built-in `htlc-hold`) settled for A. And a payment whose claim was still being decided when
the payee was killed (LDK had handed its `PaymentClaimable` already) is decided again at the
restart and settles."""

import hashlib
import os
from types import SimpleNamespace

import pytest

import lnnet
from conftest import RpcError, plugin_path, wait_for

INCORRECT_DETAILS = 16399  # 0x400F


@pytest.fixture(scope="module")
def net():
    with lnnet.module_network("fulgur-claims-") as ln:
        n = SimpleNamespace(ln=ln)
        n.a, n.b, n.m = ln.node(), ln.node(), ln.node()
        ln.fund(n.a)
        ln.fund(n.b)
        ln.open(n.a, n.m)
        ln.open(n.b, n.m)
        yield n



def to_us(payer, m):
    return payer.rpc.listpeerchannels(m.id)["channels"][0]["to_us_msat"]


def no_htlcs(payer, m):
    return not payer.rpc.listpeerchannels(m.id)["channels"][0]["htlcs"]


def second_payment_fails(net, bolt11, h, amount, core_refuses=True):
    """B pays an invoice A already paid: refused, and B keeps its money. `core_refuses`:
    the core's claim check (not a hold plugin's own answer) is what refuses it."""
    b, m = net.b, net.m
    before = to_us(b, m)
    mark = m.log_mark()
    net.ln.pay(b, bolt11, m.id, amount, wait=False)
    with pytest.raises(RpcError) as e:
        b.rpc.waitsendpay(h, timeout=60)
    err = e.value.error
    assert err["code"] == 204 or err["code"] == 203, err
    assert err["data"]["failcode"] == INCORRECT_DETAILS, err
    if core_refuses:
        m.wait_for_log(r"Refusing payment [0-9a-f]{64}: .*failing it back", start=mark)
    wait_for(lambda: no_htlcs(b, m), what="B's HTLC resolved")
    assert to_us(b, m) == before
    assert b.rpc.listsendpays(payment_hash=h)["payments"][-1]["status"] == "failed"


def test_paid_invoice_refuses_a_second_payment(net):
    a, m = net.a, net.m
    pre = os.urandom(32).hex()
    inv = m.rpc.invoice(amount_msat=40_000, label="twice", description="pay me once",
                        preimage=pre)
    h = inv["payment_hash"]
    sent = net.ln.pay(a, inv["bolt11"], m.id, 40_000)
    assert sent["status"] == "complete" and sent["payment_preimage"] == pre
    paid = wait_for(lambda: [i for i in m.rpc.listinvoices(label="twice")["invoices"]
                             if i["status"] == "paid"], what="paid")[0]

    second_payment_fails(net, inv["bolt11"], h, 40_000)
    after = m.rpc.listinvoices(label="twice")["invoices"][0]
    assert after["amount_received_msat"] == 40_000
    assert after["pay_index"] == paid["pay_index"]
    assert len(m.log_lines()) and sum(
        f"Payment {h} of" in line for line in m.log_lines()) == 1


def test_settled_hold_invoice_refuses_a_second_payment(net):
    a, m = net.a, net.m
    pre = os.urandom(32).hex()
    h = hashlib.sha256(bytes.fromhex(pre)).hexdigest()
    inv = m.rpc.call("holdinvoice", {"amount_msat": 30_000, "description": "hold once",
                                     "payment_hash": h})
    net.ln.pay(a, inv["bolt11"], m.id, 30_000, wait=False)
    m.rpc.call("waitholdinvoice", {"payment_hash": h, "state": "UNPAID", "timeout": 30})
    assert m.rpc.call("settleholdinvoice", {"preimage": pre})["state"] == "SETTLED"
    assert a.rpc.waitsendpay(h, timeout=30)["status"] == "complete"
    wait_for(lambda: m.rpc.listinvoices(payment_hash=h)["invoices"][0]["status"] == "paid")

    # Which layer refuses it (htlc-hold's answer or the core's claim check) is not pinned
    # here: the payer's side is what must hold.
    second_payment_fails(net, inv["bolt11"], h, 30_000, core_refuses=False)
    assert m.rpc.listinvoices(payment_hash=h)["invoices"][0]["amount_received_msat"] == 30_000


def sat_on_payment(net, label, amount):
    """A new payee P (without `htlc-hold`, so no `htlc_accepted` hook records the HTLC for
    its own reasons) with a channel from A and a plugin sitting on `invoice_payment`; A pays
    one of P's invoices. Returns P and the payment hash once the plugin sits on it."""
    ln, a = net.ln, net.a
    p = ln.node(options={"disable-plugin": "htlc-hold"})
    ln.open(a, p)
    p.rpc.plugin("start", plugin_path("sitting_plugin.py"))
    inv = p.rpc.invoice(amount_msat=amount, label=label, description=label)
    ln.pay(a, inv["bolt11"], p.id, amount, wait=False)
    p.wait_for_log(rf"sitting on invoice_payment for {label}")
    return p, inv["payment_hash"]


def settles(net, p, h, label):
    """A's payment to P completes, P's invoice is paid and no HTLC is left."""
    assert net.a.rpc.waitsendpay(h, timeout=60)["status"] == "complete"
    wait_for(lambda: p.rpc.listinvoices(label=label)["invoices"][0]["status"] == "paid",
             what=f"invoice {label} paid")
    wait_for(lambda: no_htlcs(net.a, p), what="the HTLC settled")


def test_claim_decided_again_after_kill(net):
    """The payee sits on `invoice_payment` (LDK's event is handled, the claim not yet made);
    kill -9 once a channel manager without the event is stored; at the restart the payment
    is decided again and claimed. Without the held-HTLC record LDK never hands the event
    again and the HTLC stays in the channel until its deadline."""
    p, h = sat_on_payment(net, "sat-on", 25_000)
    handled = max(i for i, line in enumerate(p.log_lines())
                  if "Handling event PaymentClaimable" in line and h in line)
    p.wait_for_log(r"Channel manager stored and synced", start=handled + 1)
    assert p.rpc.listinvoices(label="sat-on")["invoices"][0]["status"] == "unpaid"

    mark = p.log_mark()
    net.ln.restart(p, kill=True)
    settles(net, p, h, "sat-on")
    assert p.is_in_log(rf"Deciding HTLC recv:{h} again after the restart", start=mark)


def test_invoice_payment_held_at_stop(net):
    """`stop` while a plugin sits on `invoice_payment`: the stop completes (the held call
    takes its safe default, continue, as in CLN) and the payment settles, before the stop or
    at the next start: never stranded, never lost."""
    p, h = sat_on_payment(net, "at-stop", 26_000)
    res, rc = p.stop()
    assert rc == 0
    # The safe default is the chain's default, not the plugin refusing the payment.
    assert not p.is_in_log(r"rejected by plugin sitting_plugin.py")
    mark = p.log_mark()
    p.start()
    p.wait_for_log("Lightning engine started", start=mark)
    settles(net, p, h, "at-stop")
