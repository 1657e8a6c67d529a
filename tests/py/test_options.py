"""CLN's lightningd options (issue 18): every one is accepted from config files and the
command line; those with a meaning here change what the node does, the others log one
UNUSUAL line saying so; `listconfigs` shows them as CLN does; `getinfo.version` reads as the
CLN release whose interface we implement."""

import re
import subprocess

import pytest
from pyln.client import RpcError

from conftest import FULGURD, wait_for
from lnnet import free_port


def options_in(node):
    return node.rpc.listconfigs()["configs"]


def test_cln_options_from_a_config_file(ln):
    config = "\n".join([
        "fee-base=2000",
        "fee-per-satoshi=15",
        "cltv-delta=80",
        "cltv-final=50",
        "funding-confirms=2",
        "htlc-minimum-msat=5",
        "ignore-fee-limits=true",
        "large-channels",
        "commit-time=10",            # accepted, no effect here
        "rescan=15",                 # the wallet scans the last 15 blocks again
        "accept-htlc-tlv-type=65537",
        "funder-fuzz-percent=5",     # a CLN plugin's option no plugin declares
        "xpay-handle-pay=true",
        "",
    ])
    n = ln.node(config=config)
    conf = str(n.lightning_dir / "config")
    c = options_in(n)
    assert c["fee-base"] == {"value_int": 2000, "source": f"{conf}:1"}
    assert c["fee-per-satoshi"]["value_int"] == 15
    assert c["cltv-delta"]["value_int"] == 80
    assert c["cltv-final"]["value_int"] == 50
    assert c["funding-confirms"]["value_int"] == 2
    assert c["ignore-fee-limits"]["value_bool"] is True
    assert c["large-channels"]["set"] is True
    assert c["accept-htlc-tlv-type"]["values_int"] == [65537]
    assert c["funder-fuzz-percent"] == {"value_int": 5, "source": f"{conf}:12"}
    assert c["xpay-handle-pay"]["value_bool"] is True
    # Without a `cltv`, an invoice carries --cltv-final's, as in CLN.
    inv = n.rpc.invoice(1000, "a", "a")
    assert n.rpc.decode(inv["bolt11"])["min_final_cltv_expiry"] == 50
    inv = n.rpc.invoice(1000, "b", "b", cltv=60)
    assert n.rpc.decode(inv["bolt11"])["min_final_cltv_expiry"] == 60
    # One UNUSUAL line for each option that changes nothing here.
    for name in ["commit-time", "accept-htlc-tlv-type", "funder-fuzz-percent",
                 "xpay-handle-pay"]:
        assert n.is_in_log(rf"UNUSUAL lightningd: Option --{name} has no effect in Fulgur \("), name
    assert not n.is_in_log(r"Option --fee-base has no effect")
    assert not n.is_in_log(r"Option --rescan has no effect")
    assert c["rescan"]["value_int"] == 15


def test_values_below_ldks_minimums_are_raised_with_a_note(ln):
    n = ln.node(options={"cltv-final": 18, "cltv-delta": 6})
    assert n.is_in_log(r"UNUSUAL lightningd: Option --cltv-final=18 is below LDK's minimum "
                       r"of 42: using 42")
    assert n.is_in_log(r"UNUSUAL lightningd: Option --cltv-delta=6 is below LDK's minimum")
    inv = n.rpc.invoice(1000, "a", "a")
    assert n.rpc.decode(inv["bolt11"])["min_final_cltv_expiry"] == 42


def test_unknown_options_still_stop_fulgurd(node_factory):
    n = node_factory.get_node(options={"no-such-option": 1}, start=False)
    rc, err = n.start_expect_exit()
    assert rc == 1 and "no-such-option" in err, err


def test_version_reads_as_the_cln_release_we_implement(node_factory):
    out = subprocess.run([str(FULGURD), "--version"], capture_output=True, text=True, timeout=30)
    assert re.fullmatch(r"v26\.06-fulgur-\d+\.\d+\.\d+\n", out.stdout), out.stdout
    n = node_factory.get_node()
    assert n.rpc.getinfo()["version"] == out.stdout.strip()
    # pyln's and plugins' version checks parse it as v26.06.
    major, minor = re.match(r"v(\d+)\.(\d+)", n.rpc.getinfo()["version"]).groups()
    assert (int(major), int(minor)) == (26, 6)


def test_log_prefix_and_timestamps(node_factory):
    n = node_factory.get_node(options={"log-prefix": "nodeX:", "log-timestamps": "false"})
    lines = [ln for ln in n.log_lines() if ln]
    assert lines and all(ln.startswith("nodeX:") for ln in lines), lines[:3]
    ready = n.is_in_log(r"Server started with public key")
    assert re.match(r"nodeX:INFO\s+lightningd: Server started", ready), ready


def test_channel_options_shape_new_channels(ln):
    # A charges 2000 + 15 ppm with a 80-block delta; B wants 1 confirmation, a 150-block
    # delay on A's outputs, and no channel under 1.5 M sat.
    a = ln.node(options={"fee-base": 2000, "fee-per-satoshi": 15, "cltv-delta": 80,
                         "htlc-minimum-msat": 5000})
    b = ln.node(options={"funding-confirms": 1, "watchtime-blocks": 150,
                         "min-capacity-sat": 1_500_000})
    ln.fund(a)
    ln.connect(a, b)
    with pytest.raises(RpcError) as e:
        a.rpc.fundchannel(b.id, 1_000_000)
    assert "less than the user specified limit (1500000)" in e.value.error["message"]
    # A refused open is no fault of either node: UNUSUAL, not BROKEN (teardown checks).
    assert b.is_in_log(r"UNUSUAL lightning: .*Funding satoshis \(1000000\) is less than")
    assert a.is_in_log(r"UNUSUAL lightning: .*Force-closing channel")
    r = a.rpc.fundchannel(b.id, 2_000_000)
    assert r["txid"] in ln.chain.call("getrawmempool")
    ln.mine(1)  # B's funding-confirms: one block is enough

    def normal(n, peer):
        ch = n.rpc.listpeerchannels(peer.id)["channels"]
        return [c for c in ch if c["state"] == "CHANNELD_NORMAL"]
    wait_for(lambda: normal(a, b) and normal(b, a), what="channel normal after one block")
    ch = normal(a, b)[0]
    assert ch["fee_base_msat"] == 2000 and ch["fee_proportional_millionths"] == 15
    assert ch["updates"]["local"]["cltv_expiry_delta"] == 80
    assert ch["minimum_htlc_in_msat"] == 5000
    assert ch["our_to_self_delay"] == 150
    # B sees A's policy once A's channel_update reaches it.
    wait_for(lambda: normal(b, a)[0]["updates"].get("remote", {}).get("fee_base_msat") == 2000,
             what="A's fees at B")


def test_wallet_names_the_database(node_factory, tmp_path):
    """CLN's `--wallet`: `sqlite3://PATH` (relative to the network directory) is where the
    node keeps its state; DSNs Fulgur cannot serve yet stop it at start instead of being
    ignored."""
    n = node_factory.get_node(options={"wallet": "sqlite3://elsewhere.sqlite3"})
    n.rpc.datastore(key="kept", string="here")
    assert (n.net_dir / "elsewhere.sqlite3").is_file()
    assert not (n.net_dir / "fulgur.sqlite3").exists()
    n.stop()
    n.start()
    assert n.rpc.listdatastore("kept")["datastore"][0]["string"] == "here"

    # A PostgreSQL server that is not there stops the node, named without its password
    # (test_postgres.py runs nodes on a real one).
    closed = free_port()
    for dsn, why in ((f"postgres://u:secret@127.0.0.1:{closed}/db",
                      f"postgres://u:***@127.0.0.1:{closed}/db"),
                     ("sqlite3://a.sqlite3:a.sqlite3", "another file than the main one"),
                     ("mysql://x", "unknown DSN scheme")):
        d = tmp_path / dsn.split(":")[0]
        r = subprocess.run([str(FULGURD), f"--lightning-dir={d}", "--network=regtest",
                            f"--wallet={dsn}"], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, (dsn, r.stdout, r.stderr)
        assert why in r.stderr + r.stdout, (dsn, r.stderr)
        assert "secret" not in r.stderr + r.stdout
        assert not (d / "regtest" / "fulgur.sqlite3").exists()
    r = subprocess.run([str(FULGURD), f"--lightning-dir={tmp_path / 'imp'}", "--network=regtest",
                        "--fulgur-import-sqlite=fulgur.sqlite3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "needs --wallet=postgres://" in r.stderr, r.stderr
