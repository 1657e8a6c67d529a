"""The channel side of the plugin surface, end to end on devchain with pyln-client plugins
and LightningRpc (fundchannel, close, listpeerchannels, listfunds, listforwards, listhtlcs
and sendcustommsg results are checked against CLN's schemas by the RPC client):

* the `openchannel` hook: a rejecting plugin makes the opener's `fundchannel` fail with the
  plugin's message and leaves no channel and no reserved input; a continuing one lets the
  channel open; the payload matches CLN's hook schema;
* notifications, each validated against CLN's notification schema and checked for the
  `{"<topic>": {...}}` envelope: channel_opened, channel_state_changed (both sides, open and
  close), connect/disconnect, block_added (one per block, hash and height), coin_movement
  (channel_open, channel_close);
* `sendcustommsg` and the `custommsg` hook and notification, and the refused cases;
* setchannel, getinfo's channel counts, mutual and unilateral `close`;
* closed channels as CLN keeps them: in listpeerchannels/listfunds/listpeers (CLOSINGD_COMPLETE
  or AWAITING_UNILATERAL, then ONCHAIN once the spend confirms) until resolved and 100 blocks
  deep, then in `listclosedchannels` (checked against CLN's result schema), across restarts;
* channel peers reconnecting by themselves after either side restarts."""

import pytest

import clnschema
from conftest import ASKED_FORCE_CLOSE, RpcError, plugin_path, wait_for

NOTES = plugin_path("chan_notes.py")
OPENHOOK = plugin_path("chan_openchannel.py")
# A valid node id (secp256k1's generator) that no test node has.
UNKNOWN_ID = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


# CLN's setchannel result (doc/schemas/setchannel.json, not in shared/reference), written out
# here with the same types, so the result is checked as strictly as the others.
SETCHANNEL_RESPONSE = {
    "type": "object", "additionalProperties": False, "required": ["channels"],
    "properties": {"channels": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["peer_id", "channel_id", "fee_base_msat", "fee_proportional_millionths",
                     "minimum_htlc_out_msat", "maximum_htlc_out_msat", "ignore_fee_limits"],
        "properties": {
            "peer_id": {"type": "pubkey"},
            "channel_id": {"type": "hash"},
            "short_channel_id": {"type": "short_channel_id"},
            "fee_base_msat": {"type": "msat"},
            "fee_proportional_millionths": {"type": "u32"},
            "ignore_fee_limits": {"type": "boolean"},
            "minimum_htlc_out_msat": {"type": "msat"},
            "warning_htlcmin_too_low": {"type": "string"},
            "maximum_htlc_out_msat": {"type": "msat"},
            "warning_htlcmax_too_high": {"type": "string"}}}}}}


# CLN's listclosedchannels result (doc/schemas/listclosedchannels.json, not in
# shared/reference), written out with the same required fields and types.
_SCID_ALIAS = {"type": "object", "additionalProperties": False, "required": [],
               "properties": {"local": {"type": "short_channel_id"},
                              "remote": {"type": "short_channel_id"}}}
LISTCLOSEDCHANNELS_RESPONSE = {
    "type": "object", "additionalProperties": False, "required": ["closedchannels"],
    "properties": {"closedchannels": {"type": "array", "items": {
        "type": "object", "additionalProperties": True,
        "required": ["channel_id", "opener", "private", "total_msat", "total_local_commitments",
                     "total_remote_commitments", "total_htlcs_sent", "funding_txid",
                     "funding_outnum", "funding_withheld", "leased", "final_to_us_msat",
                     "min_to_us_msat", "max_to_us_msat", "close_cause"],
        "properties": {
            "peer_id": {"type": "pubkey"},
            "channel_id": {"type": "hash"},
            "short_channel_id": {"type": "short_channel_id"},
            "alias": _SCID_ALIAS,
            "opener": {"type": "string", "enum": ["local", "remote"]},
            "closer": {"type": "string", "enum": ["local", "remote"]},
            "private": {"type": "boolean"},
            "channel_type": {"type": "object", "additionalProperties": False,
                             "required": ["bits", "names"],
                             "properties": {"bits": {"type": "array", "items": {"type": "u32"}},
                                            "names": {"type": "array",
                                                      "items": {"type": "string"}}}},
            "total_local_commitments": {"type": "u64"},
            "total_remote_commitments": {"type": "u64"},
            "total_htlcs_sent": {"type": "u64"},
            "funding_txid": {"type": "txid"},
            "funding_outnum": {"type": "u32"},
            "funding_withheld": {"type": "boolean"},
            "leased": {"type": "boolean"},
            "funding_fee_paid_msat": {"type": "msat"},
            "funding_fee_rcvd_msat": {"type": "msat"},
            "funding_pushed_msat": {"type": "msat"},
            "total_msat": {"type": "msat"},
            "final_to_us_msat": {"type": "msat"},
            "min_to_us_msat": {"type": "msat"},
            "max_to_us_msat": {"type": "msat"},
            "last_commitment_txid": {"type": "hash"},
            "last_commitment_fee_msat": {"type": "msat"},
            "close_cause": {"type": "string", "enum": ["unknown", "local", "user", "remote",
                                                      "protocol", "onchain"]},
            "last_stable_connection": {"type": "u64"}}}}}}


def closed(n, peer=None):
    """n's listclosedchannels (of `peer`), checked against CLN's result schema."""
    res = n.rpc.call("listclosedchannels", {"id": peer.id} if peer else {})
    errs = list(clnschema.ResponseValidator(LISTCLOSEDCHANNELS_RESPONSE).iter_errors(res))
    assert not errs, (errs, res)
    return res["closedchannels"]


def calls(n, method, hook=False):
    """Raw params of the notifications (or hook calls) `method` that n's chan_notes got."""
    return [c["params"] for c in
            n.rpc.call("chan-notes", {"method": method, "hook": hook})["calls"]]


def notes(n, topic):
    """Inner objects of n's `topic` notifications, each checked for CLN's envelope and
    against CLN's notification schema."""
    out = []
    for params in calls(n, topic):
        assert list(params) == [topic], f"{topic} not wrapped in {{{topic!r}: ...}}: {params}"
        clnschema.validate(f"notification/{topic}.json", params[topic])
        out.append(params[topic])
    return out


def states(n, peer):
    return [(s.get("old_state"), s["new_state"], s["cause"])
            for s in notes(n, "channel_state_changed") if s["peer_id"] == peer.id]


def wait_state(n, peer, new_state):
    return wait_for(lambda: [s for s in notes(n, "channel_state_changed")
                             if s["peer_id"] == peer.id and s["new_state"] == new_state],
                    what=f"{n.name}: channel_state_changed to {new_state}")


def movements(n, tag):
    return [m for m in notes(n, "coin_movement") if m["primary_tag"] == tag]


def reserved(n):
    return [o for o in n.rpc.listfunds()["outputs"] if o["reserved"]]


def counts(n):
    i = n.rpc.getinfo()
    return i["num_pending_channels"], i["num_active_channels"], i["num_inactive_channels"]


def test_openchannel_hook_and_channel_life(ln):
    # B's plugin refuses A's first open: LDK "force-closes" A's unfunded outbound channel,
    # which fulgurd logs as UNUSUAL (no BROKEN: nothing was ever at stake).
    a = ln.node(plugins=[NOTES])
    # defect, issue 16: engine ("Error spending outputs" after the close)
    a.allow_broken(r"Error spending outputs")
    b = ln.node(plugins=[NOTES, OPENHOOK])
    start_height = ln.chain.height()
    ln.fund(a)
    # B holds the emergency reserve, so it takes anchor channels.
    ln.fund(b, 0.001)
    ln.connect(a, b)

    # --- connect: both sides, with the direction each one sees.
    wait_for(lambda: notes(b, "connect"), what="connect on b")
    ca = [c for c in notes(a, "connect") if c["id"] == b.id]
    cb = [c for c in notes(b, "connect") if c["id"] == a.id]
    assert ca[-1]["direction"] == "out" and cb[-1]["direction"] == "in"
    assert ca[-1]["address"] == {"type": "ipv4", "address": "127.0.0.1", "port": b.port}

    # --- openchannel rejects: fundchannel fails with the plugin's message, nothing remains.
    with pytest.raises(RpcError) as e:
        a.rpc.fundchannel(b.id, 500_000)
    assert "no thanks" in e.value.error["message"], e.value.error
    seen = b.rpc.call("chan-open-seen")["seen"]
    # A proposes an anchor channel first. When the peer refuses an open, LDK tries again with
    # the next weaker channel type (anchors -> static_remotekey) before giving up, so a
    # rejecting plugin is asked twice (CLN would ask once).
    assert len(seen) == 2
    for s in seen:
        clnschema.validate("hook/openchannel.json", s, part="request")
    assert [s["openchannel"]["channel_type"] for s in seen] == [
        {"bits": [12, 22], "names": ["static_remotekey/even", "anchors/even"]},
        {"bits": [12], "names": ["static_remotekey/even"]}]
    p = seen[0]["openchannel"]
    assert p["id"] == a.id
    assert (p["funding_msat"], p["push_msat"], p["channel_flags"]) == (500_000_000, 0, 1)
    assert p["feerate_per_kw"] >= 253 and p["to_self_delay"] > 0
    for n in (a, b):
        assert n.rpc.listpeerchannels()["channels"] == []
        assert n.rpc.listfunds()["channels"] == []
        assert counts(n) == (0, 0, 0)
    assert reserved(a) == []
    assert ln.chain.call("getrawmempool") == []
    assert notes(b, "channel_opened") == [] and states(a, b) == [] and states(b, a) == []

    # The peers stay connected (a BOLT 1 error about one channel does not drop them).
    assert a.rpc.listpeers(b.id)["peers"] and b.rpc.listpeers(a.id)["peers"]

    # --- openchannel continues: the channel opens.
    b.rpc.call("chan-open-set", {"mode": "continue"})
    r = a.rpc.fundchannel(b.id, 500_000, push_msat=10_000_000)
    assert len(b.rpc.call("chan-open-seen")["seen"]) == 3
    assert b.rpc.call("chan-open-seen")["seen"][2]["openchannel"]["push_msat"] == 10_000_000
    # Broadcast before fundchannel answers (CLN's order), not some time after.
    assert r["txid"] in ln.chain.call("getrawmempool")
    # Both ends negotiate anchors (option_anchors_zero_fee_htlc_tx), as CLN and LND do.
    assert r["channel_type"] == {"bits": [12, 22],
                                 "names": ["static_remotekey/even", "anchors/even"]}
    for n, peer in ((a, b), (b, a)):
        wait_for(lambda: counts(n) == (1, 0, 0), what=f"{n.name}: one pending channel")
        ch = n.rpc.listpeerchannels(peer.id)["channels"]
        assert [c["state"] for c in ch] == ["CHANNELD_AWAITING_LOCKIN"]
        assert ch[0]["channel_id"] == r["channel_id"] and ch[0]["funding_txid"] == r["txid"]
        assert ch[0]["opener"] == ("local" if n is a else "remote")
        wait_state(n, peer, "CHANNELD_AWAITING_LOCKIN")
    # channel_opened: only the fundee hears of it (CLN), once funding is signed.
    wait_for(lambda: notes(b, "channel_opened"), what="channel_opened on b")
    [op] = notes(b, "channel_opened")
    assert op == {"id": a.id, "funding_msat": 500_000_000, "funding_txid": r["txid"],
                  "channel_ready": False}
    assert notes(a, "channel_opened") == []

    ln.mine(6)
    for n, peer in ((a, b), (b, a)):
        wait_state(n, peer, "CHANNELD_NORMAL")
        wait_for(lambda: counts(n) == (0, 1, 0), what=f"{n.name}: one active channel")
    scid = wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"][0].get("short_channel_id"))
    for n, peer in ((a, b), (b, a)):
        cause = "user" if n is a else "remote"
        assert states(n, peer) == [(None, "CHANNELD_AWAITING_LOCKIN", cause),
                                   ("CHANNELD_AWAITING_LOCKIN", "CHANNELD_NORMAL", cause)]
        st = [s for s in notes(n, "channel_state_changed") if s["peer_id"] == peer.id]
        assert {s["channel_id"] for s in st} == {r["channel_id"]}
        assert st[1]["short_channel_id"] == scid
        # listpeerchannels and listfunds with a channel, on both sides (schemas checked).
        [ch] = n.rpc.listpeerchannels()["channels"]
        assert ch["state"] == "CHANNELD_NORMAL" and ch["peer_connected"]
        assert ch["short_channel_id"] == scid and ch["total_msat"] == 500_000_000
        [fc] = n.rpc.listfunds()["channels"]
        assert fc["peer_id"] == peer.id and fc["short_channel_id"] == scid
        assert fc["state"] == "CHANNELD_NORMAL" and fc["amount_msat"] == 500_000_000
        assert fc["funding_txid"] == r["txid"] and fc["funding_output"] == r["outnum"]

    # coin_movement channel_open on both sides, once the channel is locked in.
    wait_for(lambda: movements(a, "channel_open") and movements(b, "channel_open"))
    conf_height = int(scid.split("x")[0])
    for n, peer, credit in ((a, b, 500_000_000), (b, a, 0)):
        [m] = movements(n, "channel_open")
        assert m["type"] == "chain_mvt" and m["account_id"] == r["channel_id"]
        assert m["utxo"] == f"{r['txid']}:{r['outnum']}" and m["peer_id"] == peer.id
        assert (m["credit_msat"], m["debit_msat"]) == (credit, 0)
        assert m["output_msat"] == 500_000_000 and m["blockheight"] == conf_height
        assert m["node_id"] == n.id and m["coin_type"] == "bcrt"

    # The wallet's confirmed deposit, the funding transaction spending it, and its change
    # coming back as a deposit.
    deposits = movements(a, "deposit")
    dep = deposits[0]
    assert dep["account_id"] == "wallet" and dep["credit_msat"] == 100_000_000_000
    spent = movements(a, "withdrawal")
    assert [w["utxo"] for w in spent] == [dep["utxo"]]
    assert spent[0]["spending_txid"] == r["txid"]
    assert all(d["utxo"].startswith(r["txid"] + ":") for d in deposits[1:])
    assert sum(d["credit_msat"] for d in deposits[1:]) < dep["credit_msat"] - 500_000_000

    # block_added: every block since start, once each, with devchain's hashes.
    tip = ln.chain.height()
    wait_for(lambda: any(x["height"] == tip for x in notes(a, "block_added")))
    got = [(x["height"], x["hash"]) for x in notes(a, "block_added")]
    heights = [h for h, _ in got]
    assert heights == list(range(heights[0], tip + 1)), heights
    assert heights[0] <= start_height
    for h, hsh in got:
        assert ln.chain.call("getblockhash", h) == hsh

    # --- setchannel (CLN's result shape), seen in listpeerchannels.
    res = a.rpc.setchannel(scid, feebase=4000, feeppm=300)
    errs = list(clnschema.ResponseValidator(SETCHANNEL_RESPONSE).iter_errors(res))
    assert not errs, (errs, res)
    [sc] = res["channels"]
    assert (sc["peer_id"], sc["channel_id"], sc["short_channel_id"]) == (b.id, r["channel_id"], scid)
    assert (sc["fee_base_msat"], sc["fee_proportional_millionths"]) == (4000, 300)
    ch = a.rpc.listpeerchannels(b.id)["channels"][0]
    assert (ch["fee_base_msat"], ch["fee_proportional_millionths"]) == (4000, 300)
    assert a.rpc.setchannel("all", feeppm=10)["channels"][0]["fee_proportional_millionths"] == 10
    with pytest.raises(RpcError):
        a.rpc.setchannel("1x1x1", feebase=1)
    # What LDK cannot set per channel is refused, not ignored; enforcedelay is accepted
    # (LDK honours the old fees for about five minutes).
    for bad in ({"htlcmax": 1000}, {"htlcmin": 5}, {"ignorefeelimits": True}):
        with pytest.raises(RpcError) as e:
            a.rpc.call("setchannel", {"id": scid, **bad})
        assert e.value.error["code"] == -32602, e.value.error
    assert a.rpc.setchannel(scid, ignorefeelimits=False, enforcedelay=60)["channels"]
    a.rpc.listforwards()
    a.rpc.listhtlcs()

    # --- mutual close: both sides keep showing the channel, CLOSINGD_COMPLETE until the
    # closing transaction confirms (CLN's states, notifications and fields).
    cl = a.rpc.close(b.id)
    assert cl["type"] == "mutual" and len(cl["txids"]) == 1
    closing_txid = cl["txids"][0]
    wait_for(lambda: closing_txid in ln.chain.call("getrawmempool"), what="closing tx")
    to_us = {a: 490_000_000, b: 10_000_000}
    for n, peer in ((a, b), (b, a)):
        [last] = wait_state(n, peer, "CLOSINGD_COMPLETE")
        assert last["old_state"] == "CHANNELD_NORMAL"
        assert last["cause"] == ("user" if n is a else "remote")
        assert last["channel_id"] == r["channel_id"] and last.get("short_channel_id") == scid, (n.name, last, n.rpc.listpeerchannels())
        assert not [s for s in notes(n, "channel_state_changed") if s["new_state"] == "ONCHAIN"]
        [ch] = n.rpc.listpeerchannels(peer.id)["channels"]
        assert ch["state"] == "CLOSINGD_COMPLETE" and ch["closer"] == ("local" if n is a else "remote")
        assert ch["opener"] == ("local" if n is a else "remote")
        assert (ch["channel_id"], ch["short_channel_id"]) == (r["channel_id"], scid)
        assert (ch["funding_txid"], ch["funding_outnum"]) == (r["txid"], r["outnum"])
        assert ch["to_us_msat"] == to_us[n] and ch["total_msat"] == 500_000_000
        assert ch["spendable_msat"] == 0 and ch["htlcs"] == []
        assert ch["channel_type"] == {"bits": [12, 22], "names": ["static_remotekey/even", "anchors/even"]}
        assert ch["status"] and ch["status"][0].startswith("CLOSINGD_COMPLETE:")
        # The same through the filters, in listfunds and listpeers; inactive in getinfo.
        assert n.rpc.call("listpeerchannels", {"short_channel_id": scid})["channels"] == [ch]
        assert n.rpc.call("listpeerchannels", {"channel_id": r["channel_id"]})["channels"] == [ch]
        [fc] = n.rpc.listfunds()["channels"]
        assert (fc["state"], fc["our_amount_msat"], fc["short_channel_id"]) == \
            ("CLOSINGD_COMPLETE", to_us[n], scid)
        assert [p["num_channels"] for p in n.rpc.listpeers(peer.id)["peers"]] == [1]
        assert counts(n) == (0, 0, 1)
        # Not forgotten: not in listclosedchannels yet (CLN lists only forgotten channels).
        assert closed(n) == []
    ln.mine(1)
    for n, peer in ((a, b), (b, a)):
        [last] = wait_state(n, peer, "ONCHAIN")
        assert (last["old_state"], last["cause"]) == ("CLOSINGD_COMPLETE", "onchain")
        assert closing_txid in last["message"]
        [ch] = n.rpc.listpeerchannels(peer.id)["channels"]
        assert ch["state"] == "ONCHAIN" and ch["to_us_msat"] == to_us[n]
        assert n.rpc.listfunds()["channels"][0]["state"] == "ONCHAIN"
        wait_for(lambda: movements(n, "channel_close"), what=f"{n.name}: channel_close")
        [m] = movements(n, "channel_close")
        assert m["account_id"] == r["channel_id"] and m["credit_msat"] == 0
        assert m["utxo"] == f"{r['txid']}:{r['outnum']}" and m["output_msat"] == 500_000_000
        # Closed, still resolving: counted inactive, as CLN counts ONCHAIN channels.
        wait_for(lambda: counts(n) == (0, 0, 1), what=f"{n.name}: closed channel inactive")
    # Each side's balance in the channel (the commitment fee is not part of it, as in CLN;
    # nor are the two 330 sat anchor outputs of this anchor channel, which the opener pays
    # on chain out of its side: the debits are the same as for a static_remotekey channel).
    [ma], [mb] = movements(a, "channel_close"), movements(b, "channel_close")
    assert (ma["debit_msat"], mb["debit_msat"]) == (490_000_000, 10_000_000)

    # --- disconnect: both sides (the first one since they connected).
    assert notes(a, "disconnect") == [] and notes(b, "disconnect") == []
    a.rpc.disconnect(b.id, force=True)
    wait_for(lambda: [d for d in notes(a, "disconnect") if d["id"] == b.id], what="disconnect on a")
    wait_for(lambda: [d for d in notes(b, "disconnect") if d["id"] == a.id], what="disconnect on b")

    # --- 100 blocks after the spend, with nothing left to claim, both sides forget the
    # channel (CLN's rule): it leaves listpeerchannels, listfunds, listpeers and getinfo and
    # is listed by listclosedchannels from then on.
    ln.mine(99)
    for n, peer in ((a, b), (b, a)):
        assert [c["state"] for c in n.rpc.listpeerchannels()["channels"]] == ["ONCHAIN"]
    ln.mine(1)
    for n, peer in ((a, b), (b, a)):
        wait_for(lambda: n.rpc.listpeerchannels()["channels"] == [], what=f"{n.name}: forgotten")
        [last] = wait_state(n, peer, "CLOSED")
        assert (last["old_state"], last["cause"]) == ("ONCHAIN", "onchain")
        assert n.rpc.listfunds()["channels"] == [] and counts(n) == (0, 0, 0)
        assert n.rpc.listpeers(peer.id)["peers"] == []
        [cc] = closed(n)
        assert closed(n, peer) == [cc]
        assert n.rpc.call("listclosedchannels", {"id": UNKNOWN_ID})["closedchannels"] == []
        assert (cc["channel_id"], cc["peer_id"], cc["short_channel_id"]) == \
            (r["channel_id"], peer.id, scid)
        assert cc["opener"] == ("local" if n is a else "remote")
        assert cc["closer"] == ("local" if n is a else "remote")
        assert cc["close_cause"] == ("user" if n is a else "remote")
        assert (cc["funding_txid"], cc["funding_outnum"]) == (r["txid"], r["outnum"])
        assert cc["total_msat"] == 500_000_000 and cc["final_to_us_msat"] == to_us[n]
        assert cc["min_to_us_msat"] <= to_us[n] <= cc["max_to_us_msat"]
        assert cc["last_commitment_txid"] == closing_txid
        assert 0 < cc["last_commitment_fee_msat"] < 10_000_000
        assert cc["private"] is False and cc["leased"] is False
        assert cc["channel_type"] == {"bits": [12, 22], "names": ["static_remotekey/even", "anchors/even"]}
    assert closed(a)[0]["last_commitment_fee_msat"] == closed(b)[0]["last_commitment_fee_msat"]
    # Forgotten channels stay in listclosedchannels across a restart.
    before = closed(a)
    ln.restart(a)
    assert closed(a) == before and a.rpc.listpeerchannels()["channels"] == []
    with pytest.raises(RpcError) as e:
        a.rpc.call("listclosedchannels", {"id": "nonsense"})
    assert e.value.error["code"] == -32602

    validated = {m for n in (a, b) for m, _ in n.rpc.validated}
    assert validated >= {"fundchannel", "close", "listpeerchannels", "listfunds",
                         "listforwards", "listhtlcs"}, validated


def test_custommsg(ln):
    a = ln.node()
    b = ln.node(plugins=[NOTES])
    ln.connect(a, b)
    r = a.rpc.sendcustommsg(b.id, "ffff" + "cafe01")
    assert r["status"]
    a.rpc.sendcustommsg(b.id, "8001")           # 32769, empty body
    a.rpc.sendcustommsg(b.id, "00ff" + "00")    # odd type below 32768, unknown to BOLTs
    want = ["ffffcafe01", "8001", "00ff00"]
    hooked = wait_for(lambda: len(calls(b, "custommsg", hook=True)) == 3
                      and calls(b, "custommsg", hook=True), what="three custommsg hook calls")
    for h in hooked:
        clnschema.validate("hook/custommsg.json", h, part="request")
    assert [h["payload"] for h in hooked] == want
    assert {h["peer_id"] for h in hooked} == {a.id}
    got = wait_for(lambda: len(notes(b, "custommsg")) == 3 and notes(b, "custommsg"))
    assert [(x["peer_id"], x["payload"]) for x in got] == [(a.id, w) for w in want]

    # Refused as CLN does (-32600): even types (below 32768 too: 34 is funding_created),
    # odd types the engine handles itself (33 is accept_channel), unknown peers; bad hex.
    for msg, why in (("0022aa", "type 34"), ("8000", "even-typed 32768"),
                     ("0021" + "00" * 8, "type 33")):
        with pytest.raises(RpcError) as e:
            a.rpc.sendcustommsg(b.id, msg)
        assert e.value.error["code"] == -32600 and why in e.value.error["message"], e.value.error
    with pytest.raises(RpcError) as e:
        a.rpc.sendcustommsg(UNKNOWN_ID, "ffff")
    assert e.value.error["code"] == -32600 and "No such peer" in e.value.error["message"]
    for bad in ("ff", "fffz", "fff"):
        with pytest.raises(RpcError) as e:
            a.rpc.sendcustommsg(b.id, bad)
        assert e.value.error["code"] == -32602
    # Still connected, and nothing else reached the plugin.
    assert a.rpc.listpeers(b.id)["peers"][0]["connected"]
    assert len(calls(b, "custommsg", hook=True)) == 3
    assert a.rpc.call("sendcustommsg", {"node_id": b.id, "msg": "fffd"})["status"]
    wait_for(lambda: len(notes(b, "custommsg")) == 4)
    assert "sendcustommsg" in {m for m, _ in a.rpc.validated}


def test_reconnect_after_restart_and_unilateral_close(ln):
    # `dev-fail`: a unilateral close while B is online (`close` would negotiate).
    a = ln.node(broken_log=ASKED_FORCE_CLOSE, options={"developer": None})
    b = ln.node(plugins=[NOTES], broken_log=ASKED_FORCE_CLOSE)
    ln.fund(a)
    scid = ln.open(a, b, push_msat=20_000)

    def usable(n, peer):
        ch = n.rpc.listpeerchannels(peer.id)["channels"]
        return (ch and ch[0]["peer_connected"] and ch[0]["state"] == "CHANNELD_NORMAL"
                and n.rpc.listpeers(peer.id)["peers"])

    # B stops: the channel stays active (CLN counts it so while the peer is away).
    b.stop()
    wait_for(lambda: not a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"])
    assert a.rpc.listpeerchannels(b.id)["channels"][0]["state"] == "CHANNELD_NORMAL"
    assert counts(a) == (0, 1, 0)
    # A channel peer stays in listpeers while disconnected, as in CLN.
    assert [(p["connected"], p["num_channels"]) for p in a.rpc.listpeers(b.id)["peers"]] \
        == [(False, 1)]
    # B starts again: A (which knows B's address) reconnects within its 5 s retry period.
    mark = b.log_mark()
    b.start()
    b.wait_for_log("Lightning engine started", start=mark)
    assert wait_for(lambda: usable(a, b) and usable(b, a), timeout=12, interval=0.2,
                    what="reconnected after B restarted")
    assert [c["direction"] for c in notes(b, "connect") if c["id"] == a.id] == ["in"]
    # A restarts: it reconnects from the address it persisted.
    ln.restart(a)
    assert wait_for(lambda: usable(a, b) and usable(b, a), timeout=12, interval=0.2,
                    what="reconnected after A restarted")
    assert counts(a) == (0, 1, 0) and counts(b) == (0, 1, 0)
    assert a.rpc.listpeerchannels(b.id)["channels"][0]["spendable_msat"] > 0
    assert a.rpc.listpeerchannels(b.id)["channels"][0]["short_channel_id"] == scid

    # Unilateral close at once: A broadcast its commitment (AWAITING_UNILATERAL until it
    # confirms); B hears of it from A's error and broadcasts its own, as CLN does. The two
    # conflict and the mempool keeps whichever came first: A's goes out through LDK's
    # fee-bump event for anchor channels, so either may win.
    [before] = a.rpc.listpeerchannels(b.id)["channels"]
    funding = (before["funding_txid"], before["funding_outnum"])
    cl = a.rpc.call("dev-fail", [b.id])
    assert cl["type"] == "unilateral" and len(cl["txs"]) == len(cl["txids"]) == 1
    ours = cl["txids"][0]
    [commitment] = wait_for(lambda: ln.chain.call("getrawmempool"), what="a commitment tx")
    spent = ln.chain.call("getrawtransaction", commitment, True)["vin"]
    assert [(i["txid"], i["vout"]) for i in spent] == [funding], spent
    # (close returns once the commitment is broadcast; the close event follows.)
    [ca] = wait_for(lambda: [c for c in a.rpc.listpeerchannels(b.id)["channels"]
                             if c["state"] != "CHANNELD_NORMAL"], what="a: closed channel")
    assert (ca["state"], ca["closer"], ca["opener"]) == ("AWAITING_UNILATERAL", "local", "local")
    assert ca["short_channel_id"] == scid and ca["status"][0].startswith("AWAITING_UNILATERAL:")
    assert counts(a) == (0, 0, 1)
    [last] = wait_state(b, a, "AWAITING_UNILATERAL")
    assert last["old_state"] == "CHANNELD_NORMAL" and last["cause"] == "remote"
    [cb] = b.rpc.listpeerchannels(a.id)["channels"]
    assert (cb["state"], cb["closer"], cb["opener"]) == ("AWAITING_UNILATERAL", "remote", "remote")
    assert cb["to_us_msat"] == 20_000
    ln.mine(1)
    for n, peer in ((a, b), (b, a)):
        wait_for(lambda: n.rpc.listpeerchannels(peer.id)["channels"][0]["state"] == "ONCHAIN",
                 what=f"{n.name}: ONCHAIN")
        assert counts(n) == (0, 0, 1)
        assert n.rpc.listfunds()["channels"][0]["state"] == "ONCHAIN"
    [last] = wait_state(b, a, "ONCHAIN")
    assert (last["old_state"], last["cause"]) == ("AWAITING_UNILATERAL", "onchain")
    assert commitment in last["message"]
    wait_for(lambda: movements(b, "channel_close"), what="channel_close on b")
    [m] = movements(b, "channel_close")
    assert m["debit_msat"] == 20_000 and m["output_msat"] == 1_000_000_000
    with pytest.raises(RpcError):
        a.rpc.close(scid)
    # The record survives a restart.
    ln.restart(b)
    [cb] = b.rpc.listpeerchannels(a.id)["channels"]
    assert (cb["state"], cb["closer"], cb["short_channel_id"]) == ("ONCHAIN", "remote", scid)
    assert closed(b) == []
    # 100 blocks later B, with nothing to claim (its 20 sat were below dust), forgets the
    # channel; A still waits for its delayed output (to_self_delay 144), so keeps it.
    ln.mine(100)
    wait_for(lambda: b.rpc.listpeerchannels()["channels"] == [], what="b forgets the channel")
    [cc] = closed(b)
    assert (cc["opener"], cc["closer"], cc["close_cause"]) == ("remote", "remote", "remote")
    assert cc["final_to_us_msat"] == 20_000 and cc["short_channel_id"] == scid
    assert cc["last_commitment_txid"] == commitment
    assert counts(b) == (0, 0, 0)
    if commitment == ours:
        # A's commitment: its output waits for B's to_self_delay (144), so A keeps it.
        [ca] = a.rpc.listpeerchannels(b.id)["channels"]
        assert ca["state"] == "ONCHAIN" and "resolving" in ca["status"][0]
        assert closed(a) == [] and counts(a) == (0, 0, 1)
    else:
        # B's commitment: A's output there is spendable after one block and swept, so A
        # forgets the channel too.
        wait_for(lambda: a.rpc.listpeerchannels()["channels"] == [], what="a forgets it")
        [cc] = closed(a)
        assert (cc["opener"], cc["closer"]) == ("local", "local")
        assert cc["last_commitment_txid"] == commitment and counts(a) == (0, 0, 0)


def test_forward_coin_movements_are_clns(ln):
    """A forward moves coins on two channels, and CLN's bookkeeping reads both: a `routed`
    credit of what came in on the incoming channel and a debit of what went out on the
    outgoing one, each with the payment hash and the fee earned (issue 18)."""
    a, b, c = ln.node(), ln.node(plugins=[NOTES]), ln.node()
    ln.line(a, b, c)
    inv = c.rpc.invoice(500_000, "fwd", "through B")
    sent = ln.pay(a, inv["bolt11"], c.id, 500_000)
    fee = sent["amount_sent_msat"] - 500_000
    assert fee > 0
    routed = wait_for(lambda: len(movements(b, "routed")) == 2 and movements(b, "routed"),
                      what="b's two routed movements")
    ab = b.rpc.listpeerchannels(a.id)["channels"][0]["channel_id"]
    bc = b.rpc.listpeerchannels(c.id)["channels"][0]["channel_id"]
    by_account = {m["account_id"]: m for m in routed}
    assert set(by_account) == {ab, bc}
    came_in, went_out = by_account[ab], by_account[bc]
    assert (came_in["credit_msat"], came_in["debit_msat"]) == (500_000 + fee, 0)
    assert (went_out["credit_msat"], went_out["debit_msat"]) == (0, 500_000)
    for m in routed:
        assert m["type"] == "channel_mvt"
        assert m["payment_hash"] == inv["payment_hash"]
        assert m["fees_msat"] == fee


def test_openchannel_hook_terms(ln):
    """`continue` with CLN's `mindepth`, `reserve` and `close_to` (CLN's
    test_openchannel_hook and tests/plugins/openchannel_hook_accepter.py): mindepth 0 gives a
    zero-conf channel, `reserve` is what the opener must keep, `close_to` is where B's own
    mutual close pays B; a bad `close_to` refuses the channel, and a rejection that also sets
    `close_to` is a malformed answer (CLN stops; fulgurd logs it and uses the safe default)."""
    a = ln.node()
    b = ln.node(plugins=[OPENHOOK], options={"chan-open-mode": "continue"},
                broken_log=r"malformed answer to hook openchannel")
    ln.fund(a)
    ln.fund(b, 0.001)
    ln.connect(a, b)

    # mindepth 0 and a 20,000 sat reserve.
    b.rpc.call("chan-open-set", {"mode": "continue",
                                 "extra": {"mindepth": 0, "reserve": "20000sat"}})
    a.rpc.fundchannel(b.id, 1_000_000)
    # Usable with no block mined.
    height = ln.chain.height()
    wait_for(lambda: [c["state"] for c in b.rpc.listpeerchannels(a.id)["channels"]]
             == ["CHANNELD_NORMAL"], what="zero-conf channel usable")
    wait_for(lambda: [c["state"] for c in a.rpc.listpeerchannels(b.id)["channels"]]
             == ["CHANNELD_NORMAL"], what="zero-conf channel usable on the opener")
    assert ln.chain.height() == height
    assert b.rpc.listpeerchannels(a.id)["channels"][0]["their_reserve_msat"] == 20_000_000
    ln.mine(6)

    # close_to: B's own close (no destination) pays B's side there.
    to = a.rpc.newaddr("bech32")["bech32"]
    b.rpc.call("chan-open-set", {"mode": "continue", "extra": {"close_to": to}})
    a.rpc.fundchannel(b.id, 300_000, push_msat=50_000_000)
    ln.mine(6)
    wait_for(lambda: [c for c in b.rpc.listpeerchannels(a.id)["channels"]
                      if c["total_msat"] == 300_000_000
                      and c["state"] == "CHANNELD_NORMAL"], what="second channel")
    second = [c for c in b.rpc.listpeerchannels(a.id)["channels"]
              if c["total_msat"] == 300_000_000][0]
    r = b.rpc.close(second["channel_id"])
    assert r["type"] == "mutual"
    outs = ln.chain.call("decoderawtransaction", r["txs"][0])["vout"]
    paid = [o for o in outs if o["scriptPubKey"].get("address") == to]
    assert len(paid) == 1 and abs(paid[0]["value"] * 10**8 - 50_000) < 1_000, outs

    # An address of another network: refused, with the reason.
    b.rpc.call("chan-open-set", {"mode": "continue", "extra": {
        "close_to": "bc1qlq8srqnz64wgklmqvurv7qnr4rvtq2u96hhfg2"}})
    with pytest.raises(RpcError, match="not on network regtest"):
        a.rpc.fundchannel(b.id, 100_003)
    # A rejection that also sets close_to.
    b.rpc.call("chan-open-set", {"mode": "reject", "extra": {"close_to": to}})
    with pytest.raises(RpcError):
        a.rpc.fundchannel(b.id, 100_004)
    b.wait_for_log(r"malformed answer to hook openchannel \(a rejection cannot also set "
                   r"'close_to'\)")


def test_balance_snapshot(ln):
    """`balance_snapshot` as CLN sends it (coin_mvts.c): at start once the chain is synced,
    then at each block: the wallet's confirmed coins and our side of each usable channel."""
    a = ln.node(plugins=[NOTES])
    b = ln.node()
    first = wait_for(lambda: notes(a, "balance_snapshot"), what="snapshot at start")[0]
    assert first["node_id"] == a.id
    assert first["accounts"] == [{"account_id": "wallet", "balance_msat": 0,
                                  "coin_type": "bcrt"}]
    ln.fund(a)
    ln.open(a, b, push_msat=100_000_000)
    # The snapshot of a block is taken when it arrives: the channel locked in after the
    # block that confirmed it, so the next block's snapshot is the first to list it.
    ln.mine(1)
    height = ln.chain.height()
    snap = wait_for(lambda: [s for s in notes(a, "balance_snapshot")
                             if s["blockheight"] == height], what="snapshot at the tip")[-1]
    chan = a.rpc.listpeerchannels(b.id)["channels"][0]
    accounts = {x["account_id"]: x["balance_msat"] for x in snap["accounts"]}
    assert accounts[chan["channel_id"]] == chan["to_us_msat"]
    confirmed = sum(o["amount_msat"] for o in a.rpc.listfunds()["outputs"]
                    if o["status"] == "confirmed")
    assert accounts["wallet"] == confirmed
    assert {x["coin_type"] for x in snap["accounts"]} == {"bcrt"}
    assert snap["timestamp"] > 1_700_000_000
