"""The built-in `pay` plugin end to end, on one devnet shared by the whole module (built
once: the tests run in file order and each leaves the liquidity it used spent).

    A ──1M── B ──600k── D (payee, pay_rules plugin)
    │        │ ╲──300k── E
    │        ╰──300k (private)── G
    ╰──1M── C ──600k── D
            C ──1M (opened by E: C has nothing to send)── E

Channels are opened by the node named first, so all their funds start on that side. Every
`pay`/`listpays` result is validated against CLN's schemas."""

import hashlib
import threading
import time
from types import SimpleNamespace

import pytest

import clnschema
import lnnet
from conftest import RpcError, plugin_path, wait_for

RULES = plugin_path("pay_rules.py")
STAR = plugin_path("star_plugin.py")  # records A's notifications


def check(method, result):
    clnschema.validate(f"{method}.json", result)
    return result


def pay(node, *args, **kwargs):
    return check("pay", node.rpc.pay(*args, **kwargs))


def listpays(node, **kwargs):
    return check("listpays", node.rpc.listpays(**kwargs))["pays"]


def paid(node, label):
    """Waits until the payee's invoice is paid. Its status changes when LDK reports the claim
    (`PaymentClaimed`), which may come a moment after the payer's `pay` has returned; CLN
    marks it paid before fulfilling (issue 18 notes the difference)."""
    wait_for(lambda: node.rpc.listinvoices(label)["invoices"][0]["status"] == "paid",
             what=f"{label} paid")


def pay_error(node, bolt11, **kwargs):
    with pytest.raises(RpcError) as e:
        node.rpc.pay(bolt11, **kwargs)
    return e.value.error


@pytest.fixture(scope="module")
def net():
    with lnnet.module_network("fulgur-pay-") as ln:
        chain = ln.chain
        n = SimpleNamespace(ln=ln)
        n.a, n.b, n.c = ln.node(plugins=[STAR]), ln.node(), ln.node()
        n.d = ln.node(plugins=[RULES])
        n.e, n.g = ln.node(), ln.node()
        # Two or three confirmed coins each, in one block, so the opens below need no more.
        coins = {n.a: 2, n.b: 3, n.c: 1, n.e: 1}
        for node, k in coins.items():
            for _ in range(k):
                chain.call("sendtoaddress", node.rpc.newaddr("bech32")["bech32"], 0.1)
        ln.mine(1)
        for node, k in coins.items():
            wait_for(lambda: len([o for o in node.rpc.listfunds()["outputs"]
                                  if o["status"] == "confirmed"]) >= k, what="coins")
        opens = [(n.a, n.b, 1_000_000, True), (n.a, n.c, 1_000_000, True),
                 (n.b, n.d, 600_000, True), (n.c, n.d, 600_000, True),
                 (n.e, n.c, 1_000_000, True), (n.b, n.e, 300_000, True),
                 # Private: A learns of it only from G's route hints.
                 (n.b, n.g, 300_000, False)]

        def fund(x, y, sat, public):
            ln.connect(x, y)
            r = x.rpc.fundchannel(y.id, sat, announce=public)
            wait_for(lambda: r["txid"] in chain.call("getrawmempool"), what="funding tx")
        for x, y, sat, public in opens:
            fund(x, y, sat, public)
        # Seven blocks: announced, and old enough that invoices carry no route hints for
        # public channels (LDK adds them below 7 confirmations).
        ln.mine(7)

        def scid(x, y):
            def normal():
                cs = [c for c in x.rpc.listpeerchannels(y.id)["channels"]
                      if c["state"] == "CHANNELD_NORMAL" and c.get("short_channel_id")]
                return cs and cs[0]["short_channel_id"]
            return wait_for(normal, what="channel normal")
        n.ab, n.ac = scid(n.a, n.b), scid(n.a, n.c)
        n.bd, n.cd = scid(n.b, n.d), scid(n.c, n.d)
        n.ce, n.be = scid(n.e, n.c), scid(n.b, n.e)
        n.bg = scid(n.b, n.g)
        scid(n.g, n.b)
        for s in (n.bd, n.cd, n.ce, n.be):
            ln.wait_gossip(n.a, s)
        yield n



def groups(node, payment_hash):
    parts = node.rpc.listsendpays(payment_hash=payment_hash)["payments"]
    out = {}
    for p in parts:
        out.setdefault(p["groupid"], []).append(p)
    return out


def test_pay_one_hop(net):
    inv = net.b.rpc.invoice(10_000_000, "one-hop", "one hop")
    r = pay(net.a, inv["bolt11"])
    assert r["status"] == "complete" and r["parts"] == 1
    assert r["destination"] == net.b.id
    assert r["amount_msat"] == 10_000_000 == r["amount_sent_msat"]  # no fee on our channel
    assert hashlib.sha256(bytes.fromhex(r["payment_preimage"])).hexdigest() == inv["payment_hash"]
    paid(net.b, "one-hop")


def test_pay_several_hops_by_position(net):
    inv = net.d.rpc.invoice(50_000_000, "two-hops", "two hops")
    # CLN's positional order: bolt11 amount_msat label riskfactor maxfeepercent retry_for
    r = check("pay", net.a.rpc.call("pay", [inv["bolt11"], None, "a-label", 10, 1.0, 30]))
    assert r["status"] == "complete"
    assert r["amount_msat"] == 50_000_000 < r["amount_sent_msat"]
    assert r["amount_sent_msat"] - r["amount_msat"] <= 500_000  # 1 %
    [p] = listpays(net.a, payment_hash=inv["payment_hash"])
    assert p["status"] == "complete" and p["label"] == "a-label"
    assert p["preimage"] == r["payment_preimage"] and p["bolt11"] == inv["bolt11"]


def test_pay_through_private_channel_from_route_hints(net):
    assert not [c for c in net.a.rpc.listchannels()["channels"]
                if c["short_channel_id"] == net.bg]
    inv = net.g.rpc.invoice(20_000_000, "hinted", "private", exposeprivatechannels=True)
    hints = net.a.rpc.decode(inv["bolt11"]).get("routes")
    # The hint names B and (the channel being private) G's alias for it.
    assert hints and hints[0][-1]["pubkey"] == net.b.id
    hint_scid = hints[0][-1]["short_channel_id"]
    r = pay(net.a, inv["bolt11"])
    assert r["status"] == "complete" and r["destination"] == net.g.id
    [part] = net.a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert part["status"] == "complete"
    st = net.a.rpc.paystatus(inv["bolt11"])["pay"][-1]["attempts"]
    assert [h["channel"] for h in st[-1]["route"]] == [net.ab, hint_scid]
    paid(net.g, "hinted")


def test_pay_splits_when_no_single_path_carries_it(net):
    # More than either of D's channels (600k sat each) can carry: both paths are needed.
    caps = [c["amount_msat"] for c in net.a.rpc.listchannels()["channels"]
            if c["short_channel_id"] in (net.bd, net.cd)]
    amount = 700_000_000
    assert caps and all(amount > cap for cap in caps)
    inv = net.d.rpc.invoice(amount, "mpp", "needs parts")
    r = pay(net.a, inv["bolt11"])
    assert r["status"] == "complete" and r["parts"] >= 2
    assert r["amount_msat"] == amount
    [p] = listpays(net.a, payment_hash=inv["payment_hash"])
    assert p["number_of_parts"] == r["parts"] and p["amount_sent_msat"] == r["amount_sent_msat"]
    firsts = {part["destination"] for part in
              net.a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]}
    assert firsts == {net.d.id}
    paid(net.d, "mpp")
    # Both of D's channels carried a part.
    fw_b = [f for f in net.b.rpc.listforwards()["forwards"] if f["status"] == "settled"
            and f["out_channel"] == net.bd]
    fw_c = [f for f in net.c.rpc.listforwards()["forwards"] if f["status"] == "settled"
            and f["out_channel"] == net.cd]
    assert fw_b and fw_c


def test_pay_retries_around_a_channel_without_liquidity(net):
    # Gossip says C–E holds 1M sat toward E, but E opened it: C has nothing to send. The
    # cheapest-looking route A–C–E fails there; pay learns that and goes A–B–E.
    inv = net.e.rpc.invoice(20_000_000, "retry", "retry")
    r = pay(net.a, inv["bolt11"])
    assert r["status"] == "complete" and r["destination"] == net.e.id
    [parts] = groups(net.a, inv["payment_hash"]).values()
    failed = [p for p in parts if p["status"] == "failed"]
    assert failed, "the first route should have failed at C"
    assert [p for p in parts if p["status"] == "complete"]
    st = net.a.rpc.paystatus(inv["bolt11"])["pay"]
    assert st and st[-1]["status"] == "complete"
    failures = [x["failure"] for x in st[-1]["attempts"] if "failure" in x]
    assert any(f.get("erring_channel") == net.ce for f in failures), failures
    # The lesson is persisted: C–E toward E holds less than 20k sat.
    stored = net.a.rpc.listdatastore(["pay", "liquidity"])["datastore"]
    assert stored
    import json
    chans = json.loads(stored[0]["string"])["channels"]
    ce = [v for k, v in chans.items() if k.startswith(net.ce + "/")]
    assert ce and min(v["max"] for v in ce if v["max"] is not None) < 20_000_000
    # And used: the next payment to E goes straight over B.
    inv2 = net.e.rpc.invoice(20_000_000, "learned", "learned")
    pay(net.a, inv2["bolt11"])
    [parts2] = groups(net.a, inv2["payment_hash"]).values()
    assert [p["status"] for p in parts2] == ["complete"]


def test_pay_fee_limit(net):
    inv = net.d.rpc.invoice(1_000_000, "fee", "fee")
    err = pay_error(net.a, inv["bolt11"], maxfee=1)
    assert err["code"] == 206, err
    assert err["data"]["fee"] > 1
    err = pay_error(net.a, inv["bolt11"], maxfeepercent=0, exemptfee=0)
    assert err["code"] == 206
    # A delay limit below what the route needs is "too expensive" too, as in CLN.
    err = pay_error(net.a, inv["bolt11"], maxdelay=5)
    assert err["code"] == 206 and err["data"]["delay"] > 5
    err = pay_error(net.a, inv["bolt11"], maxfee=1, maxfeepercent=1)
    assert err["code"] == -32602
    assert net.a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"] == []


def test_pay_exclude_leaves_no_route(net):
    inv = net.d.rpc.invoice(1_000_000, "excluded", "excluded")
    err = pay_error(net.a, inv["bolt11"], exclude=[net.b.id, net.c.id])
    assert err["code"] == 205 and err["data"]["attempts"] == []
    dirs = [f"{c['short_channel_id']}/{c['direction']}"
            for c in net.a.rpc.listchannels()["channels"]
            if c["short_channel_id"] in (net.bd, net.cd) and c["destination"] == net.d.id]
    assert len(dirs) == 2
    assert pay_error(net.a, inv["bolt11"], exclude=dirs)["code"] == 205
    assert pay_error(net.a, inv["bolt11"], exclude=["nonsense"])["code"] == -32602
    # Excluding one of the two ways in still pays, over the other.
    r = pay(net.a, inv["bolt11"], exclude=[net.b.id])
    assert r["status"] == "complete"
    fw = [f for f in net.c.rpc.listforwards()["forwards"] if f["status"] == "settled"
          and f["out_channel"] == net.cd and f["out_msat"] == 1_000_000]
    assert fw


def test_pay_expired_invoice(net):
    inv = net.d.rpc.invoice(1_000_000, "expired", "expired", expiry=1)
    # pay refuses an invoice once its clock is past the expiry (whole seconds, as CLN).
    wait_for(lambda: int(time.time()) > inv["expires_at"], what="a second past the expiry")
    err = pay_error(net.a, inv["bolt11"])
    assert err["code"] == 207
    assert err["data"]["now"] > err["data"]["expiry"]


def test_pay_amount_params_like_cln(net):
    inv = net.d.rpc.invoice(1_000_000, "has-amount", "x")
    assert pay_error(net.a, inv["bolt11"], amount_msat=5)["code"] == -32602
    any_inv = net.b.rpc.invoice("any", "no-amount", "x")
    assert pay_error(net.a, any_inv["bolt11"])["code"] == -32602
    r = pay(net.a, any_inv["bolt11"], amount_msat="3000sat")
    assert r["amount_msat"] == 3_000_000


def test_pay_retry_for_runs_out(net):
    # D fails this payment's HTLCs after 3 seconds with a temporary failure: with retry_for=1,
    # time is up when the first part comes back.
    inv = net.d.rpc.invoice(2_000_000, "slow", "slow")
    net.d.rpc.call("payrules-set", {"payment_hash": inv["payment_hash"], "mode": "fail",
                                    "seconds": 3})
    err = pay_error(net.a, inv["bolt11"], retry_for=1)
    assert err["code"] == 210, err
    attempts = err["data"]["attempts"]
    assert attempts and all(a["state"] == "completed" for a in attempts)
    # No part was started once retry_for had passed (the first parts took 3 s to fail).
    starts = [float(a["start_time"]) for a in attempts]
    assert max(starts) - min(starts) <= 1, starts
    assert listpays(net.a, payment_hash=inv["payment_hash"])[0]["status"] == "failed"


def test_pay_twice_pays_once(net):
    inv = net.d.rpc.invoice(5_000_000, "twice", "twice")
    first = pay(net.a, inv["bolt11"])
    before = net.a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    second = pay(net.a, inv["bolt11"])
    assert second == first
    after = net.a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert after == before
    gs = groups(net.a, inv["payment_hash"])
    assert len(gs) == 1 and all(p["status"] == "complete" for p in after)
    assert len(listpays(net.a, payment_hash=inv["payment_hash"], status="complete")) == 1


def test_pay_runs_alongside_a_held_payment(net):
    held = net.d.rpc.invoice(3_000_000, "held", "held")
    h = held["payment_hash"]
    net.d.rpc.call("payrules-set", {"payment_hash": h, "mode": "hold"})
    out = {}

    def run():
        try:
            out["r"] = net.a.new_rpc().pay(held["bolt11"])
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            out["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: h in net.d.rpc.call("payrules-seen")["held"], what="HTLC held at D")
    # A second pay of the same invoice waits for the first instead of paying again.
    again = {}
    t2 = threading.Thread(target=lambda: again.update(r=net.a.new_rpc().pay(held["bolt11"])),
                          daemon=True)
    t2.start()
    # While that pay waits: other commands answer, and another pay completes.
    assert net.a.rpc.getinfo()["id"] == net.a.id
    assert listpays(net.a, payment_hash=h)[0]["status"] == "pending"  # answered meanwhile
    st = net.a.rpc.paystatus(held["bolt11"])["pay"][-1]
    assert st["status"] == "pending" and st["attempts"][0]["state"] == "pending"
    other = net.b.rpc.invoice(4_000_000, "meanwhile", "meanwhile")
    assert pay(net.a, other["bolt11"])["status"] == "complete"
    assert t.is_alive()
    assert net.d.rpc.call("payrules-release", {"payment_hash": h})["released"] >= 1
    t.join(60)
    assert "e" not in out, out.get("e")
    assert check("pay", out["r"])["status"] == "complete"
    t2.join(60)
    assert again.get("r") == out["r"]
    assert len(groups(net.a, h)) == 1
    assert [p["status"] for p in listpays(net.a, payment_hash=h)] == ["complete"]
    assert {p["status"] for p in listpays(net.a)} <= {"complete", "failed"}


def test_pay_learned_liquidity_survives_a_restart(net):
    net.ln.restart(net.a)
    # Channels come back once the peers reconnect.
    for peer in (net.b, net.c):
        net.ln.connect(net.a, peer)
    wait_for(lambda: all(c["peer_connected"] and c["state"] == "CHANNELD_NORMAL"
                         for c in net.a.rpc.listpeerchannels()["channels"]), what="peers back")
    wait_for(lambda: any(c["short_channel_id"] == net.ce
                         for c in net.a.rpc.listchannels()["channels"]), what="graph")
    inv = net.e.rpc.invoice(20_000_000, "after-restart", "after restart")
    r = pay(net.a, inv["bolt11"])
    assert r["status"] == "complete"
    assert net.a.is_in_log(r"loaded liquidity bounds of [1-9]")
    # What was learned before the restart still steers around C–E: one part, no failure.
    [parts] = groups(net.a, inv["payment_hash"]).values()
    assert [p["status"] for p in parts] == ["complete"]


def xpay(node, *args, **kwargs):
    return check("xpay", node.rpc.call("xpay", *args, **kwargs))


def test_xpay_pays_with_clns_result(net):
    # BTCPay's CLN client pays with xpay only: its result is the preimage and part counts.
    inv = net.d.rpc.invoice(3_000_000, "xpay", "xpay")
    r = xpay(net.a, {"invstring": inv["bolt11"], "layers": ["auto.localchans"]})
    assert set(r) == {"payment_preimage", "failed_parts", "successful_parts", "amount_msat",
                      "amount_sent_msat"}
    assert hashlib.sha256(bytes.fromhex(r["payment_preimage"])).hexdigest() == inv["payment_hash"]
    assert r["amount_msat"] == 3_000_000 < r["amount_sent_msat"]
    assert r["successful_parts"] == 1 and r["failed_parts"] == 0
    paid(net.d, "xpay")
    # It is pay underneath: listpays shows it, and paying again returns the same payment.
    [p] = listpays(net.a, payment_hash=inv["payment_hash"])
    assert p["status"] == "complete"
    assert xpay(net.a, [inv["bolt11"]]) == r
    # Each part is announced as CLN's xpay does, and the payment as CLN's pay does.
    # As CLN's plugins send them: the payload under the topic, nothing else beside it.
    got = [(g["topic"], g["params"]) for g in net.a.rpc.call("star_received")["got"]
           if g["topic"] in ("pay_part_start", "pay_part_end", "pay_success", "pay_failure")
           and g["params"][g["topic"]].get("payment_hash") == inv["payment_hash"]]
    assert all(set(p) - {"origin"} == {t} for t, p in got), got
    assert [t for t, _ in got] == ["pay_part_start", "pay_part_end", "pay_success"], got
    for topic, params in got[:2]:
        clnschema.validate(f"notification/xpay_{topic}.json", params[topic])
    start, end = got[0][1]["pay_part_start"], got[1][1]["pay_part_end"]
    assert start["total_payment_msat"] == start["attempt_msat"] == 3_000_000
    assert [h["next_node"] for h in start["hops"]][-1] == net.d.id
    assert start["hops"][0]["channel_in_msat"] == start["hops"][0]["channel_out_msat"]
    assert start["hops"][-1]["channel_out_msat"] == 3_000_000
    assert (end["status"], end["partid"], end["groupid"]) == ("success", start["partid"],
                                                              start["groupid"])
    assert got[2][1]["pay_success"] == {"payment_hash": inv["payment_hash"],
                                        "bolt11": inv["bolt11"]}
    # Positional as CLN (invstring amount_msat maxfee ...), and an invoice with only a
    # description hash needs no description (pay's would).
    dh = net.b.rpc.invoice("any", "xpay-dh", "long text", deschashonly=True)
    assert "description_hash" in net.a.rpc.decode(dh["bolt11"])
    r = xpay(net.a, [dh["bolt11"], "2000sat", "1sat"])
    assert r["amount_msat"] == r["amount_sent_msat"] == 2_000_000


def test_xpay_refuses_and_fails_like_cln(net):
    inv = net.d.rpc.invoice(1_000_000, "xpay-refused", "x")
    for params in ({"invstring": inv["bolt11"], "layers": ["my-layer"]},
                   {"invstring": inv["bolt11"], "amount_msat": 5},
                   {"invstring": inv["bolt11"], "maxfee": "lots"},
                   {"bolt11": inv["bolt11"]}):
        with pytest.raises(RpcError) as e:
            net.a.rpc.call("xpay", params)
        assert e.value.error["code"] == -32602, params
    with pytest.raises(RpcError) as e:
        net.a.rpc.call("xpay", {"invstring": inv["bolt11"], "maxfee": 1})
    assert e.value.error["code"] == 206
    assert net.a.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"] == []
    failure = [g["params"]["pay_failure"] for g in net.a.rpc.call("star_received")["got"]
               if g["topic"] == "pay_failure"
               and g["params"]["pay_failure"]["payment_hash"] == inv["payment_hash"]]
    assert failure and failure[-1]["error"]["message"].startswith("Route too expensive")


def test_listpays_pages_like_cln(net):
    parts = net.a.rpc.listsendpays(index="created")["payments"]
    assert len(parts) >= 3
    second = parts[1]["created_index"]
    page = listpays(net.a, index="created", start=second, limit=1)
    assert [p["payment_hash"] for p in page] == [parts[1]["payment_hash"]]
    assert len(listpays(net.a, index="created", start=second)) >= 1
    with pytest.raises(RpcError) as e:
        net.a.rpc.listpays(index="sideways")
    assert e.value.error["code"] == -32602


def test_wait_sees_new_sendpays_and_forwards(net):
    from concurrent.futures import ThreadPoolExecutor
    sent = net.a.rpc.wait("sendpays", "created", 0)["created"]
    updated = net.a.rpc.wait("sendpays", "updated", 0)["updated"]
    fw = {x: x.rpc.wait("forwards", "created", 0)["created"] for x in (net.b, net.c)}
    with ThreadPoolExecutor(4) as pool:
        a_new = pool.submit(lambda: net.a.new_rpc().wait("sendpays", "created", sent + 1))
        a_upd = pool.submit(lambda: net.a.new_rpc().wait("sendpays", "updated", updated + 1))
        inv = net.d.rpc.invoice(1_000_000, "wait-index", "wait")
        pay(net.a, inv["bolt11"])
        assert a_new.result(timeout=30)["created"] >= sent + 1
        assert a_upd.result(timeout=30)["updated"] >= updated + 1
    # The part went through B or C, whose forwards index moved.
    assert any(x.rpc.wait("forwards", "created", 0)["created"] > n for x, n in fw.items())
