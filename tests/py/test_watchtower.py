"""The `commitment_revocation` hook, as CLN's `test_watchtower` uses it: a watchtower client
plugin on B collects, for every commitment of A's that A revokes, the penalty transaction
that takes A's `to_local` output. A restores an old backup and publishes a revoked
commitment while B is down; the penalty the plugin kept is broadcast in B's place and
confirms, and B, started again, finds the penalty's output in its wallet."""

import json
import shutil

import pytest

import clnschema
from conftest import ASKED_FORCE_CLOSE, plugin_path, wait_for

WATCHTOWER = plugin_path("watchtower.py")
CHEAT_SEEN = r"Got broadcast of revoked counterparty commitment transaction"


def penalties(n):
    f = n.net_dir / "watchtower.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def database(n):
    return [p for p in n.net_dir.iterdir() if p.name.startswith("fulgur.sqlite3")]


@pytest.mark.sqlite_only("it brings back an old copy of the node's SQLite file to make it cheat")
def test_watchtower_penalty_takes_a_revoked_commitment(ln, tmp_path):
    a = ln.node(broken_log=ASKED_FORCE_CLOSE)
    # B's own monitor sees A's revoked commitment too once it is back, and LDK says so
    # at error level: this test's cheat, expected here.
    b = ln.node(plugins=[WATCHTOWER], broken_log=CHEAT_SEEN)
    ln.fund(a)
    ln.open(a, b)
    [chan] = b.rpc.listpeerchannels(a.id)["channels"]

    # A's state before any payment, copied aside while A is stopped: the old backup.
    a.stop()
    old = tmp_path / "a-old"
    old.mkdir()
    for f in database(a):
        shutil.copy2(f, old / f.name)
    mark = a.log_mark()
    a.start()
    a.wait_for_log("Lightning engine started", start=mark)
    wait_for(lambda: [c for c in a.rpc.listpeerchannels(b.id)["channels"]
                      if c["peer_connected"] and c["state"] == "CHANNELD_NORMAL"],
             what="A reconnected to B")

    for label in ("one", "two"):
        a.rpc.pay(b.rpc.invoice(25_000_000, label, "moves the channel on")["bolt11"])
    # Each payment makes A revoke commitments; the plugin gets them numbered from 0 as in
    # CLN, one call each, for this channel, in CLN's hook schema.
    wait_for(lambda: len(penalties(b)) >= 2, what="penalties")
    got = penalties(b)
    assert [p["commitnum"] for p in got] == list(range(len(got))), got
    for p in got:
        clnschema.validate("hook/commitment_revocation.json", p, part="request")
        assert p["channel_id"] == chan["channel_id"]
        spent = ln.chain.call("decoderawtransaction", p["penalty_tx"])["vin"]
        assert [i["txid"] for i in spent] == [p["commitment_txid"]]

    # B goes down; A restores its old backup and force-closes with what it believes is its
    # latest commitment, long revoked.
    b.stop()
    a.stop()
    for f in database(a):
        f.unlink()
    for f in old.iterdir():
        shutil.copy2(f, a.net_dir / f.name)
    mark = a.log_mark()
    a.start()
    a.wait_for_log("Lightning engine started", start=mark)
    cheat = a.rpc.close(b.id, unilateraltimeout=1)
    assert cheat["type"] == "unilateral"
    [cheat_txid] = cheat["txids"]
    [penalty] = [p for p in penalties(b) if p["commitment_txid"] == cheat_txid]
    # As CLN's tests (`generate_block(1, wait_for_mempool=1)`): the commitment is handed to
    # the chain as `close` answers, and reaches the mempool a moment later.
    wait_for(lambda: cheat_txid in ln.chain.call("getrawmempool"), what="the cheat in the mempool")
    ln.mine(1)
    assert ln.chain.call("getrawtransaction", cheat_txid, True)["confirmations"] == 1

    # The watchtower's part: the penalty B's plugin kept is valid and confirms.
    penalty_txid = ln.chain.call("sendrawtransaction", penalty["penalty_tx"])
    ln.mine(1)
    assert ln.chain.call("getrawtransaction", penalty_txid, True)["confirmations"] == 1

    # B, back, sees the cheat and the penalty, and its wallet has A's channel balance.
    mark = b.log_mark()
    b.start()
    b.wait_for_log("Lightning engine started", start=mark)
    out = wait_for(lambda: [o for o in b.rpc.listfunds()["outputs"] if o["txid"] == penalty_txid],
                   what="the penalty's output in B's wallet")
    assert out[0]["amount_msat"] > 900_000_000, out
    # Each penalty went to the plugin once: none is handed over again after the restart.
    again = penalties(b)
    assert [p["commitnum"] for p in again] == list(range(len(again))), again
