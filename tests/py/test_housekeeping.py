"""CLN's housekeeping and signer commands (issue 18), as CLN's own tests use them:
`datastoreusage` (CLN's `test_datastoreusage` figures), `makesecret`, `parsefeerate`,
`batching`, `preapproveinvoice`/`preapprovekeysend`, `delpay`, `delforward` and `getlog`.
Replies are validated against CLN's schemas by the tests' ValidatingRpc."""

import pytest

from conftest import RpcError, wait_for


def test_datastoreusage_counts_as_clns(ln):
    n = ln.node()
    use = n.rpc.datastoreusage
    assert use() == {"datastoreusage": {"key": "[]", "total_bytes": 0}}
    data = "somedatatostoreinthedatastore"  # 29 bytes
    n.rpc.datastore(key=["a", "b"], string=data)
    assert use() == {"datastoreusage": {"key": "[]", "total_bytes": 29 + 1 + 1 + 1}}
    assert use(key="a") == {"datastoreusage": {"key": "[a]", "total_bytes": 32}}
    assert use(key=["a", "b"]) == {"datastoreusage": {"key": "[a,b]", "total_bytes": 32}}
    n.rpc.datastore(key=["a", "c"], string=data)
    assert use()["datastoreusage"]["total_bytes"] == 64
    assert use(key=["a", "c"])["datastoreusage"]["total_bytes"] == 32
    # A key is a prefix by whole strings: [ab] holds nothing.
    assert use(key="ab")["datastoreusage"]["total_bytes"] == 0
    long = "thisissomelongkeythattriestostore46bytesofdata"
    n.rpc.datastore(key=["a", long], string=data)
    assert use()["datastoreusage"]["total_bytes"] == 29 + 1 + 1 + 46 + 64
    n.rpc.datastore(key=["a", "d", "e", "f", "g"], string=data)
    assert use(key=["a", "d", "e", "f", "g"]) == {
        "datastoreusage": {"key": "[a,d,e,f,g]", "total_bytes": 29 + 1 + 1 + 1 + 1 + 1 + 4}}
    # An empty key is all of it, as in CLN.
    assert use(key="")["datastoreusage"] == {"key": "[]", "total_bytes": 29 + 5 + 4 + 77 + 64}


def test_makesecret_is_stable_per_node_and_data(ln):
    a, b = ln.node(), ln.node()
    s1 = a.rpc.makesecret(string="scb")["secret"]
    assert len(s1) == 64 and int(s1, 16) >= 0
    # hex and string forms of the same bytes agree; other data, another secret.
    assert a.rpc.makesecret(hex=b"scb".hex())["secret"] == s1
    assert a.rpc.makesecret(string="scc")["secret"] != s1
    assert b.rpc.makesecret(string="scb")["secret"] != s1
    a.stop()
    a.start()
    assert a.rpc.makesecret(string="scb")["secret"] == s1
    for params, message in [({}, "Must have either hex or string"),
                            ({"hex": "00", "string": "x"}, "Cannot have both hex and string")]:
        with pytest.raises(RpcError) as e:
            a.rpc.call("makesecret", params)
        assert e.value.error == {"code": -32602, "message": message}
    with pytest.raises(RpcError) as e:
        a.rpc.makesecret(hex="zz")
    assert e.value.error["code"] == -32602 and "hex" in e.value.error["message"]


def test_parsefeerate_batching_and_preapprove(ln):
    n = ln.node()
    assert n.rpc.call("parsefeerate", ["1000perkw"]) == {"perkw": 1000}
    assert n.rpc.call("parsefeerate", {"feerate_str": "4000perkb"}) == {"perkw": 1000}
    assert n.rpc.call("parsefeerate", ["4000"]) == {"perkw": 1000}  # a bare number is per kvB
    # Below the floor is raised to it (253 perkw), as CLN does.
    assert n.rpc.call("parsefeerate", ["1perkw"]) == {"perkw": 253}
    # Names are CLN's block targets (lightningd/feerate.c): urgent 6, normal 12, slow 100;
    # the named uses are what feerates shows for them.
    names = ["urgent", "normal", "slow", "opening", "mutual_close", "unilateral_close", "penalty"]
    rate = {f: n.rpc.call("parsefeerate", [f])["perkw"]
            for f in names + ["6blocks", "12blocks", "100blocks"]}
    assert rate["urgent"] == rate["6blocks"] and rate["normal"] == rate["12blocks"]
    assert rate["slow"] == rate["100blocks"]
    shown = n.rpc.feerates("perkw")["perkw"]
    for f in ["opening", "mutual_close", "unilateral_close", "penalty"]:
        assert rate[f] == shown[f], f
    with pytest.raises(RpcError) as e:
        n.rpc.call("parsefeerate", ["fast"])
    assert e.value.error["code"] == -32602

    assert n.rpc.call("batching", [True]) == {}
    assert n.rpc.call("batching", {"enable": False}) == {}
    with pytest.raises(RpcError) as e:
        n.rpc.call("batching", ["maybe"])
    assert e.value.error["code"] == -32602

    inv = n.rpc.invoice(1000, "x", "x")["bolt11"]
    assert n.rpc.call("preapproveinvoice", [inv]) == {}
    assert n.rpc.call("preapprovekeysend", [n.id, "00" * 32, 1000]) == {}
    with pytest.raises(RpcError) as e:
        n.rpc.call("preapprovekeysend", ["02ab", "00" * 32, 1000])
    assert e.value.error["code"] == -32602 and "destination" in e.value.error["message"]


def test_delpay_as_clns(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, b)
    inv = b.rpc.invoice(10_000, "one", "one")
    done = a.rpc.pay(inv["bolt11"])
    h = done["payment_hash"]
    [part] = a.rpc.listsendpays(payment_hash=h)["payments"]

    def code_of(*args):
        with pytest.raises(RpcError) as e:
            a.rpc.call("delpay", list(args))
        return e.value.error["code"], e.value.error["message"]

    assert code_of("11" * 32, "complete") == (
        208, f"Unknown payment with payment_hash: {'11' * 32}")
    assert code_of(h, "failed") == (
        208, f"Payment with hash {h} has complete status but it different from the one "
             "provided failed")
    assert code_of(h, "pending")[0] == -32602  # "Cannot delete pending status"
    assert code_of(h, "complete", 0)[0] == -32602  # partid without groupid
    assert code_of(h, "complete", 7, part["groupid"]) == (
        208, "No payment for that payment_hash with that partid and groupid")

    gone = a.rpc.delpay(h, "complete")["payments"]
    assert [p["created_index"] for p in gone] == [part["created_index"]]
    assert gone[0]["status"] == "complete" and gone[0]["payment_preimage"] == part["payment_preimage"]
    assert a.rpc.listsendpays(payment_hash=h)["payments"] == []
    assert code_of(h, "complete")[0] == 208
    # listpays (the pay plugin reads listsendpays) forgets it too.
    assert [p for p in a.rpc.listpays()["pays"] if p["payment_hash"] == h] == []


def test_delforward_as_clns(ln):
    a, b, c = ln.node(), ln.node(), ln.node()
    ab, bc = ln.line(a, b, c)
    ok = c.rpc.invoice(20_000, "ok", "ok")
    a.rpc.pay(ok["bolt11"])
    # A payment C no longer knows: B's forward fails downstream.
    gone = c.rpc.invoice(20_000, "gone", "gone")
    c.rpc.delinvoice("gone", "unpaid")
    with pytest.raises(RpcError):
        a.rpc.pay(gone["bolt11"])

    def forwards():
        return {f["status"]: f for f in b.rpc.listforwards()["forwards"]}
    wait_for(lambda: set(forwards()) == {"settled", "failed"}, what="B's two forwards resolved")
    fs = forwards()
    settled, failed = fs["settled"], fs["failed"]
    assert settled["in_channel"] == ab == failed["in_channel"]

    def refused(*args):
        with pytest.raises(RpcError) as e:
            b.rpc.call("delforward", list(args))
        return e.value.error
    # Wrong status, unknown HTLC: CLN's 1401.
    assert refused(ab, settled["in_htlc_id"], "failed") == {
        "code": 1401, "message": "Could not find that forward"}
    assert refused(ab, 999, "settled")["code"] == 1401
    assert refused(ab, settled["in_htlc_id"], "offered")["code"] == -32602
    assert refused(ab, settled["in_htlc_id"], "any")["code"] == -32602
    assert refused("notascid", settled["in_htlc_id"], "settled")["code"] == -32602

    assert b.rpc.delforward(ab, settled["in_htlc_id"], "settled") == {}
    assert [f["status"] for f in b.rpc.listforwards()["forwards"]] == ["failed"]
    assert b.rpc.delforward(ab, failed["in_htlc_id"], "failed") == {}
    assert b.rpc.listforwards()["forwards"] == []


def test_getlog_shows_the_log_book(node_factory):
    n = node_factory.get_node()
    n.rpc.call("plugin", ["list"])
    log = n.rpc.getlog()
    assert float(log["created_at"]) > 1.7e9
    assert 0 < log["bytes_used"] <= log["bytes_max"]
    lines = log["log"]
    assert any(e["type"] == "INFO" and e["source"] == "lightningd"
               and e["log"].startswith("Server started with public key") for e in lines), lines
    # Times count from created_at, in order.
    times = [float(e["time"]) for e in lines]
    assert times == sorted(times) and times[0] >= 0
    assert {e["type"] for e in lines} <= {"INFO", "UNUSUAL", "BROKEN"}
    # A level keeps that level and above.
    assert {e["type"] for e in n.rpc.getlog("unusual")["log"]} <= {"UNUSUAL", "BROKEN"}
    assert len(n.rpc.getlog("debug")["log"]) >= len(lines)
    with pytest.raises(RpcError) as e:
        n.rpc.getlog("loud")
    assert e.value.error["code"] == -32602


def test_wait_follows_the_invoice_indexes(ln):
    from concurrent.futures import ThreadPoolExecutor
    n = ln.node()
    w = n.rpc.wait
    # Already there: at once, as CLN.
    assert w("invoices", "created", 0) == {"subsystem": "invoices", "created": 0}
    assert w("sendpays", "updated", 0) == {"subsystem": "sendpays", "updated": 0}
    assert w("forwards", "deleted", 0) == {"subsystem": "forwards", "deleted": 0}
    with ThreadPoolExecutor(3) as pool:
        created = pool.submit(lambda: n.new_rpc().wait("invoices", "created", 1))
        updated = pool.submit(lambda: n.new_rpc().wait("invoices", "updated", 1))
        deleted = pool.submit(lambda: n.new_rpc().wait("invoices", "deleted", 1))
        n.rpc.invoice(1000, "w1", "d")
        assert created.result(timeout=30) == {"subsystem": "invoices", "created": 1}
        assert not updated.done() and not deleted.done()
        n.rpc.delinvoice("w1", "unpaid", desconly=True)  # an update
        assert updated.result(timeout=30) == {"subsystem": "invoices", "updated": 1}
        n.rpc.delinvoice("w1", "unpaid")
        assert deleted.result(timeout=30) == {"subsystem": "invoices", "deleted": 1}
    # Deleting the newest invoice does not lower `created`.
    assert w("invoices", "created", 0)["created"] == 1
    for bad in (["htlcs", "created", 0], ["everything", "created", 0],
                ["invoices", "sideways", 0], ["invoices", "created", -1]):
        with pytest.raises(RpcError) as e:
            n.rpc.call("wait", bad)
        assert e.value.error["code"] == -32602, bad
