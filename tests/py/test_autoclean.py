"""The built-in `autoclean` plugin, as CLN's (its `test_autoclean_once` and `test_autoclean`):
`autoclean-status`, `autoclean-once` for every subsystem, the timer with `setconfig`'d ages
and cycle, totals kept across restarts. Replies are validated against CLN's schemas by
pyln's ValidatingRpc."""

import copy
import time

import pytest

from conftest import RpcError, wait_for

DEFAULT_STATUS = {"autoclean": {
    "failedpays": {"enabled": False, "cleaned": 0},
    "succeededpays": {"enabled": False, "cleaned": 0},
    "failedforwards": {"enabled": False, "cleaned": 0},
    "succeededforwards": {"enabled": False, "cleaned": 0},
    "expiredinvoices": {"enabled": False, "cleaned": 0},
    "paidinvoices": {"enabled": False, "cleaned": 0},
    "networkevents": {"enabled": True, "age": 2592000, "cleaned": 0}}}


def status(n, sub=None):
    return n.rpc.call("autoclean-status", [sub] if sub else [])


def once(n, sub, age):
    return n.rpc.call("autoclean-once", [sub, age])


def a_paid_and_a_failed_payment(ln):
    """A pays C over B once, and fails once (C deleted the invoice): A has a succeeded and a
    failed payment, B a settled and a failed forward, C a paid invoice."""
    a, b, c = ln.node(), ln.node(), ln.node()
    ln.line(a, b, c)
    paid = c.rpc.invoice(12_300, "inv2", "description2")
    gone = c.rpc.invoice(12_300, "inv3", "description3")
    a.rpc.xpay(paid["bolt11"])
    c.rpc.delinvoice("inv3", "unpaid")
    with pytest.raises(RpcError, match="Destination said it doesn't know invoice: "
                                       "incorrect_or_unknown_payment_details"):
        a.rpc.xpay(gone["bolt11"])
    wait_for(lambda: {f["status"] for f in b.rpc.listforwards()["forwards"]}
             == {"settled", "failed"}, what="B's two forwards resolved")
    return a, b, c


def test_autoclean_once_every_subsystem(ln):
    a, b, c = a_paid_and_a_failed_payment(ln)
    expired = c.rpc.invoice(12_300, "inv1", "description1", expiry=1)
    expected = [copy.deepcopy(DEFAULT_STATUS) for _ in (a, b, c)]
    for i, n in enumerate((a, b, c)):
        assert status(n) == expected[i]
    # Age 1 takes what is at least a second old (whole seconds, as CLN): wait until all is.
    newest = max([p["created_at"] for p in a.rpc.listsendpays()["payments"]]
                 + [expired["expires_at"]]
                 + [int(f.get("resolved_time", f["received_time"]))
                    for f in b.rpc.listforwards()["forwards"]])
    wait_for(lambda: time.time() >= newest + 2, what="everything a second old")

    failed_parts = len([p for p in a.rpc.listsendpays()["payments"] if p["status"] == "failed"])
    assert failed_parts >= 1
    assert once(a, "failedpays", 1) == {
        "autoclean": {"failedpays": {"cleaned": failed_parts, "uncleaned": 0}}}
    assert once(a, "succeededpays", 1) == {
        "autoclean": {"succeededpays": {"cleaned": 1, "uncleaned": 0}}}
    assert a.rpc.listsendpays() == {"payments": []}
    expected[0]["autoclean"]["failedpays"]["cleaned"] = failed_parts
    expected[0]["autoclean"]["succeededpays"]["cleaned"] = 1
    # A's connections are network events, all older than a second by now.
    events = a.rpc.listnetworkevents()["networkevents"]
    old = [e for e in events if e["timestamp"] <= newest]
    assert old, events
    got = once(a, "networkevents", 1)["autoclean"]["networkevents"]
    assert got["cleaned"] >= len(old)
    left = {e["created_index"] for e in a.rpc.listnetworkevents()["networkevents"]}
    assert not left & {e["created_index"] for e in old}
    expected[0]["autoclean"]["networkevents"]["cleaned"] = got["cleaned"]
    assert status(a) == expected[0]

    fees = b.rpc.getinfo()["fees_collected_msat"]
    assert once(b, "failedforwards", 1) == {
        "autoclean": {"failedforwards": {"cleaned": 1, "uncleaned": 0}}}
    assert once(b, "succeededforwards", 1) == {
        "autoclean": {"succeededforwards": {"cleaned": 1, "uncleaned": 0}}}
    assert b.rpc.listforwards() == {"forwards": []}
    # Deleting forwards does not forget the fees they earned, as in CLN.
    assert b.rpc.getinfo()["fees_collected_msat"] == fees > 0
    expected[1]["autoclean"]["failedforwards"]["cleaned"] = 1
    expected[1]["autoclean"]["succeededforwards"]["cleaned"] = 1
    assert status(b) == expected[1]

    # A young paid invoice is counted as uncleaned.
    assert once(c, "paidinvoices", 3600) == {
        "autoclean": {"paidinvoices": {"cleaned": 0, "uncleaned": 1}}}
    assert once(c, "expiredinvoices", 1) == {
        "autoclean": {"expiredinvoices": {"cleaned": 1, "uncleaned": 0}}}
    assert once(c, "paidinvoices", 1) == {
        "autoclean": {"paidinvoices": {"cleaned": 1, "uncleaned": 0}}}
    assert c.rpc.listinvoices() == {"invoices": []}
    expected[2]["autoclean"]["expiredinvoices"]["cleaned"] = 1
    expected[2]["autoclean"]["paidinvoices"]["cleaned"] = 1
    assert status(c) == expected[2]
    assert status(c, "paidinvoices") == {
        "autoclean": {"paidinvoices": expected[2]["autoclean"]["paidinvoices"]}}

    # CLN's parameter errors.
    for params in (["paidinvoices", 0], ["everything", 10], ["paidinvoices"], [],
                   {"subsystem": "paidinvoices", "age": 1, "extra": 1}):
        with pytest.raises(RpcError) as e:
            c.rpc.call("autoclean-once", params)
        assert e.value.error["code"] == -32602, params
    with pytest.raises(RpcError) as e:
        status(c, "everything")
    assert e.value.error["code"] == -32602


def test_autoclean_timer_with_setconfig_and_restarts(ln):
    n = ln.node()
    n.rpc.invoice(12_300, "inv1", "description1", expiry=1)
    n.rpc.invoice(12_300, "inv2", "description2", expiry=1)
    n.rpc.invoice(12_300, "keep", "description3", expiry=3600)
    # Ages are integers, checked by `check` too (which sets nothing).
    for call in (lambda: n.rpc.setconfig("autoclean-expiredinvoices-age", "xxx"),
                 lambda: n.rpc.check("setconfig", config="autoclean-expiredinvoices-age",
                                     val="xxx"),
                 lambda: n.rpc.setconfig("autoclean-cycle", 0)):
        with pytest.raises(RpcError):
            call()
    n.rpc.check("setconfig", config="autoclean-expiredinvoices-age", val=2)
    assert status(n, "expiredinvoices")["autoclean"]["expiredinvoices"]["enabled"] is False

    n.rpc.setconfig("autoclean-expiredinvoices-age", 2)
    st = status(n)["autoclean"]["expiredinvoices"]
    assert st == {"enabled": True, "age": 2, "cleaned": 0}
    # The timer takes them once they have been expired for two seconds.
    n.rpc.setconfig("autoclean-cycle", 1)
    wait_for(lambda: [i["label"] for i in n.rpc.listinvoices()["invoices"]] == ["keep"],
             what="expired invoices cleaned by the timer")
    wait_for(lambda: status(n)["autoclean"]["expiredinvoices"]["cleaned"] == 2,
             what="the total")

    # Settings (from setconfig's file) and totals (from the datastore) survive a restart.
    ln.restart(n)
    assert status(n)["autoclean"]["expiredinvoices"] == {"enabled": True, "age": 2,
                                                         "cleaned": 2}
    assert n.rpc.listconfigs("autoclean-cycle")["configs"]["autoclean-cycle"]["value_int"] == 1
    n.rpc.setconfig("autoclean-expiredinvoices-age", 0)
    assert status(n)["autoclean"]["expiredinvoices"] == {"enabled": False, "cleaned": 2}
    ln.restart(n)
    assert status(n)["autoclean"]["expiredinvoices"] == {"enabled": False, "cleaned": 2}
    # autoclean-once adds to the same total.
    n.rpc.invoice(12_300, "inv4", "description4", expiry=1)
    wait_for(lambda: once(n, "expiredinvoices", 1)["autoclean"]["expiredinvoices"]["cleaned"],
             what="inv4 a second past its expiry")
    assert status(n)["autoclean"]["expiredinvoices"]["cleaned"] == 3


def test_autoclean_options_from_the_config_file(ln):
    n = ln.node(config="autoclean-cycle=7\nautoclean-paidinvoices-age=86400\n")
    assert status(n, "paidinvoices")["autoclean"]["paidinvoices"] == {
        "enabled": True, "age": 86400, "cleaned": 0}
    c = n.rpc.listconfigs()["configs"]
    assert c["autoclean-cycle"]["value_int"] == 7
    assert c["autoclean-cycle"]["plugin"].endswith("/autoclean")
    # Claimed by the plugin: no "has no effect" line.
    assert not n.is_in_log(r"Option --autoclean-cycle has no effect")
