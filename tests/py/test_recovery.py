"""Static channel backups and emergency recovery (issue 20), as CLN's `test_emergencyrecover`,
`test_recoverchannel`, `test_getemergencyrecoverdata` and `test_recover` use them: a node
that lost its database gets its channels' funds back from `hsm_secret` and
`emergency.recover` alone: its peer closes when it reconnects, and our balance on the
peer's commitment is swept into the wallet. Every reply is checked against CLN's schemas
(the `rpc` wrapper validates them)."""

import json
import shutil

import pytest

import clnschema
import pgserver
from conftest import RpcError, plugin_path, wait_for
from lnnet import free_port

RECOVER_HOOK = plugin_path("recover_hook.py")


def lose_database(n):
    """The node's database is gone: its SQLite files deleted, or on PostgreSQL
    (FULGUR_TEST_DB=postgres) the node pointed at a new, empty database."""
    if "wallet" in n.options and n.options["wallet"].startswith("postgres"):
        n.options["wallet"] = pgserver.shared().database()
        return
    files = [p for p in n.net_dir.iterdir() if p.name.startswith("fulgur.sqlite3")]
    assert files
    for f in files:
        f.unlink()


def mempool(ln):
    return ln.chain.call("getrawmempool")


def channel_with(a, b):
    [c] = a.rpc.listpeerchannels(b.id)["channels"]
    return c


def spent_funding(ln, txid):
    """The transaction in the mempool spending the funding output `txid` (the close)."""
    for t in mempool(ln):
        tx = ln.chain.call("getrawtransaction", t, True)
        if any(i.get("txid") == txid for i in tx["vin"]):
            return t
    return None


def test_getemergencyrecoverdata_and_staticbackup_follow_the_channels(ln):
    a = ln.node()
    b = ln.node()
    # Before any channel: an empty file, there already (CLN writes it at start).
    r = a.rpc.getemergencyrecoverdata()
    # A static backup cannot punish a peer that closes with a revoked state.
    assert r["can_create_penalty"] is False
    assert r["backed_up_channel_ids"] == []
    assert (a.net_dir / "emergency.recover").read_bytes().hex() == r["filedata"]
    assert a.rpc.staticbackup() == {"scb": []}

    ln.fund(a)
    ln.open(a, b)
    chan = channel_with(a, b)
    # Written as the channel opened, before anyone asked.
    wait_for(lambda: (a.net_dir / "emergency.recover").read_bytes().hex()
             != r["filedata"], what="emergency.recover rewritten for the channel")
    r = a.rpc.getemergencyrecoverdata()
    assert r["backed_up_channel_ids"] == [chan["channel_id"]]
    assert (a.net_dir / "emergency.recover").read_bytes().hex() == r["filedata"]
    [scb] = a.rpc.staticbackup()["scb"]
    # Our backup names the channel, the peer and the funding outpoint.
    raw = bytes.fromhex(scb)
    assert raw[1:33].hex() == chan["channel_id"]
    assert raw[33:66].hex() == b.id
    assert raw[66:98][::-1].hex() == chan["funding_txid"]

    # A node with the same channel recovers nothing (CLN: "already exists").
    assert a.rpc.recoverchannel([scb]) == {"stubs": []}
    assert a.rpc.emergencyrecover() == {"stubs": []}
    a.wait_for_log(f"channel {chan['channel_id']} already exists!")

    # Malformed backups are refused as bad parameters, and nothing is recorded.
    for bad in (["zz"], [scb[:-2]], ["02" + scb[2:]], "notalist", [1]):
        with pytest.raises(RpcError) as e:
            a.rpc.recoverchannel(bad)
        assert e.value.error["code"] == -32602, (bad, e.value.error)
    assert a.rpc.getemergencyrecoverdata()["backed_up_channel_ids"] == [chan["channel_id"]]


def test_emergencyrecover_gets_the_funds_back_after_the_database_is_lost(ln):
    # B closes when A, back without its state, answers B's reestablish.
    a = ln.node()
    b = ln.node()
    ln.fund(a)
    ln.open(a, b)
    chan = channel_with(a, b)
    # A pays B so that both have a balance: A's is what must come back.
    a.rpc.pay(b.rpc.invoice(300_000_000, "one", "B's share")["bolt11"])
    wait_for(lambda: channel_with(a, b)["htlcs"] == [], what="payment settled")
    ours_msat = channel_with(a, b)["to_us_msat"]
    assert 600_000_000 < ours_msat <= 700_000_000

    a.stop()
    lose_database(a)
    # The file and hsm_secret are all A has left.
    assert (a.net_dir / "emergency.recover").exists()
    mark = a.log_mark()
    a.start()
    a.wait_for_log("Lightning engine started", start=mark)
    assert a.rpc.listpeerchannels()["channels"] == []
    # The file still holds the channel A no longer knows (not overwritten at start).
    assert a.rpc.getemergencyrecoverdata()["backed_up_channel_ids"] == [chan["channel_id"]]

    r = a.rpc.emergencyrecover()
    assert r == {"stubs": [chan["channel_id"]]}
    # Once only.
    assert a.rpc.emergencyrecover() == {"stubs": []}
    # The stub outlives a restart (it is in the database), and so does the watch for the
    # close: from the funding block at every start.
    ln.restart(a)
    assert a.rpc.emergencyrecover() == {"stubs": []}

    # B learns A lost its state and broadcasts its latest commitment.
    close = wait_for(lambda: spent_funding(ln, chan["funding_txid"]), what="B's close")
    ln.mine(1)
    a.wait_for_log(f"Recovery: funding output of channel {chan['channel_id']} spent by {close}")
    a.wait_for_log("Recovery: sweeping [0-9]+ sat of channel")

    # The sweep spends our output on B's commitment (1-block CSV on anchor channels: the
    # close has its block already); the sweeper sends it at its next round.
    line = a.wait_for_log("Generating and broadcasting sweeping transaction [0-9a-f]{64}")
    sweep_txid = line.split()[-1]
    # That line comes before the broadcast, which goes in the background.
    wait_for(lambda: sweep_txid in ln.chain.call("getrawmempool"),
             what=f"the sweep {sweep_txid} in the mempool")
    sweep_tx = ln.chain.call("getrawtransaction", sweep_txid, True)
    assert [i["txid"] for i in sweep_tx["vin"]] == [close]
    ln.mine(1)

    def back():
        outs = [o for o in a.rpc.listfunds()["outputs"]
                if o["txid"] == sweep_txid and o["status"] == "confirmed"]
        return outs and outs[0]
    got = wait_for(back, what=f"the swept funds in A's wallet: {sweep_tx}, "
                              f"{a.rpc.listfunds()['outputs']}")
    # All of A's balance but the sweep's fee (and B's commitment's reserve rounding).
    assert ours_msat - 5_000_000 < got["amount_msat"] <= ours_msat, (got, ours_msat)
    # The recovered coins are spendable.
    w = a.rpc.withdraw(b.rpc.newaddr("bech32")["bech32"], "all")
    assert any(i["txid"] == sweep_txid
               for i in ln.chain.call("decoderawtransaction", w["tx"])["vin"])
    # A's file no longer holds the channel: it is recovered.
    wait_for(lambda: a.rpc.getemergencyrecoverdata()["backed_up_channel_ids"] == [],
             what="the stub leaves emergency.recover")


def test_recover_writes_hsm_secret_fires_the_hook_and_recovers(ln, tmp_path):
    """`--recover=<codex32>` on an empty directory: hsm_secret from the secret (same node
    id), the `recover` hook with the secret, then `emergencyrecover` by itself (what CLN's
    recover plugin does), so the peer closes."""
    a = ln.node(options={"exposesecret-passphrase": "pw"})
    b = ln.node()
    ln.fund(a)
    ln.open(a, b)
    chan = channel_with(a, b)
    # A's coins besides the channel: the change of its funding, which the new machine's
    # wallet must find (it rescans from the birthday the file gives).
    change = sorted((o["txid"], o["output"]) for o in a.rpc.listfunds()["outputs"]
                    if o["status"] == "confirmed")
    assert change
    codex32 = a.rpc.exposesecret("pw")["codex32"]
    a.rpc.getemergencyrecoverdata()
    backup = tmp_path / "emergency.recover"
    shutil.copy2(a.net_dir / "emergency.recover", backup)
    a.stop()

    # The new machine: no hsm_secret, no database; the backup file, and the secret.
    opts = dict(ln.chain.options())
    port = free_port()
    opts.update({"bind-addr": f"127.0.0.1:{port}", "recover": codex32})
    r = ln.factory.get_node(plugins=[RECOVER_HOOK], options=opts, start=False)
    r.port = port
    hook_log = r.net_dir / "recover-hook.jsonl"
    r.net_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(backup, r.net_dir / "emergency.recover")
    r.start()
    r.wait_for_log("Lightning engine started")
    assert r.rpc.getinfo()["id"] == a.id
    assert (r.net_dir / "hsm_secret").read_bytes() == (a.net_dir / "hsm_secret").read_bytes()
    payloads = wait_for(lambda: hook_log.exists() and hook_log.read_text().splitlines(),
                        what="the recover hook")
    got = json.loads(payloads[0])
    clnschema.validate("hook/recover.json", got, part="request")
    assert got == {"codex32": codex32}
    r.wait_for_log(r"--recover: 1 channel\(s\) of .*emergency.recover being recovered")
    wait_for(lambda: spent_funding(ln, chan["funding_txid"]), what="B's close")
    r.wait_for_log(r"--recover: the wallet rescans from block [0-9]+, its birthday in")
    wait_for(lambda: sorted((o["txid"], o["output"]) for o in r.rpc.listfunds()["outputs"]
                            if o["status"] == "confirmed") == change,
             what="A's old coins found by the new wallet")

    # A second start with --recover still given is refused, as CLN: the secret exists.
    r.stop()
    code, err = r.start_expect_exit()
    assert code != 0
    assert "hsm_secret already exists!" in err


def test_recover_refuses_what_is_not_a_secret(node_factory):
    for bad, why in (("00" * 31, "Invalid length: must be 32 bytes"),
                     ("cl10strasmms5axpgnml3svm0urkrvv2cuvxmz0xyd3dlfhaljvcy5wuu2gts07pad39rz85w7",
                      "Invalid checksum!"),
                     ("not a secret", "Not a valid hex or codex32 string")):
        n = node_factory.get_node(options={"recover": bad}, start=False)
        code, err = n.start_expect_exit()
        assert code != 0 and why in err, (bad, err)
        assert not (n.net_dir / "hsm_secret").exists()
