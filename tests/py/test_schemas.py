"""Responses of the node checked against CLN's JSON schemas (shared/reference/cln-schemas),
with a custom jsonschema validator for CLN's own types.  The first tests check the
validator itself, so that a green schema test means something."""

import json
import os

import pytest
from pyln.client import Millisatoshi

import clnschema
from lnnet import free_port
from conftest import plugin_path



# ------------------------------------------------------------------ the validator itself

def test_used_schemas_satisfy_meta_schema():
    files = sorted(set(clnschema.RPC_SCHEMAS.values())) + [
        "notification/plugin_started.json", "notification/plugin_stopped.json",
        "notification/shutdown.json"]
    problems = [p for f in files for p in clnschema.meta_errors(f)]
    assert not problems, problems


@pytest.mark.parametrize("typ,good,bad", [
    ("u64", [0, 2 ** 64 - 1], [-1, 2 ** 64, 1.5, True, "1"]),
    ("u32", [0, 2 ** 32 - 1], [2 ** 32, -1, False]),
    ("u16", [65535], [65536]),
    ("u8", [255], [256]),
    ("hex", ["", "00ff", "ABcd"], ["0", "zz", 12, "0x00"]),
    ("hash", ["ab" * 32], ["ab" * 31, "ab" * 33, "gg" * 32]),
    ("secret", ["00" * 32], ["00" * 16]),
    ("txid", ["11" * 32], ["11"]),
    ("pubkey", ["02" + "ab" * 32, "03" + "00" * 32], ["04" + "ab" * 32, "02" + "ab" * 31, 2]),
    ("short_channel_id", ["103x1x0", "0x0x0"], ["103:1:0", "1x2", "16777216x0x0", "1x2x65536"]),
    ("short_channel_id_dir", ["103x1x0/1"], ["103x1x0/2", "103x1x0"]),
    ("outpoint", ["ab" * 32 + ":0"], ["ab" * 32, "zz:0"]),
    ("msat", [0, 1000], ["1000msat", -1, 1.5, True]),
    ("bip340sig", ["aa" * 64], ["aa" * 63]),
])
def test_custom_types_response_side(typ, good, bad):
    schema = {"type": "object", "properties": {"v": {"type": typ}}}
    v = clnschema.ResponseValidator(schema)
    for g in good:
        assert v.is_valid({"v": g}), f"{typ}: {g!r} should be valid"
    for b in bad:
        assert not v.is_valid({"v": b}), f"{typ}: {b!r} should be invalid"


def test_msat_request_side_accepts_units():
    v = clnschema.RequestValidator({"properties": {"v": {"type": "msat"}}})
    for g in [0, 5, "5msat", "5sat", "0.001btc", str(Millisatoshi(42))]:
        assert v.is_valid({"v": g}), g
    for b in ["5", "5 sat", "-5sat", "0.000000000001btc", True, None]:
        assert not v.is_valid({"v": b}), b
    v = clnschema.RequestValidator({"properties": {"v": {"type": "msat_or_any"}}})
    assert v.is_valid({"v": "any"}) and not v.is_valid({"v": "all"})


def test_deprecated_and_added_annotations():
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "old": {"type": "string", "deprecated": ["v23.02", "v24.02"]},
        "going": {"type": "string", "deprecated": ["v26.04", "v27.04"]},
        "new": {"type": "string", "added": "v25.02"}}}
    v = clnschema.ResponseValidator(schema)
    assert v.is_valid({"going": "x", "new": "y"}), "still-deprecated fields are allowed"
    assert v.is_valid({}), "absent removed field is fine"
    errs = list(v.iter_errors({"old": "x"}))
    assert errs and "removed in v24.02" in errs[0].message
    assert not v.is_valid({"new": 1})
    assert clnschema.version_key("pre-v0.10.1") < clnschema.version_key("v24.02") < \
        clnschema.version_key("v26.06")


def test_real_schemas_reject_wrong_shapes():
    good = {"key": ["a"], "generation": 0, "string": "x", "hex": "78"}
    assert not clnschema.errors("datastore.json", good)
    assert clnschema.errors("datastore.json", {**good, "generation": -1})
    assert clnschema.errors("datastore.json", {**good, "extra": 1})
    assert clnschema.errors("datastore.json", {"generation": 0})
    assert clnschema.errors("stop.json", {"result": "Shutting down"})
    assert clnschema.errors("plugin.json", {"command": "stop", "result": "ok", "plugins": []})
    assert clnschema.errors("plugin.json", {"command": "list", "plugins": [{"name": "x"}]})
    assert clnschema.errors("help.json", {"help": [{"verbose": "x"}]})


# ------------------------------------------------------------------ the node's responses

def test_every_command_response_matches_schema(node_factory, test_dir):
    """Exercise each command with a schema (and each plugin subcommand) and validate."""
    op = plugin_path("options_plugin.py")
    node = node_factory.get_node(plugins=[op, plugin_path("notify_plugin.py")])
    rpc = node.rpc
    v = clnschema.validate

    v("getinfo.json", rpc.getinfo())
    v("help.json", rpc.help())
    v("help.json", rpc.help("getinfo"))
    v("listconfigs.json", rpc.listconfigs())
    v("listconfigs.json", rpc.listconfigs("str_opt"))
    v("check.json", rpc.check("getinfo"))
    v("check.json", rpc.check("setconfig", config="dyn_opt", val=3))
    v("setconfig.json", rpc.setconfig(config="dyn_opt", val=3))
    v("setconfig.json", rpc.setconfig(config="dyn_opt", val="4", transient=True))
    v("plugin.json", rpc.plugin_list())
    v("plugin.json", rpc.plugin_start(plugin_path("dynamic_plugin.py")))
    v("plugin.json", rpc.plugin_stop("dynamic_plugin.py"))
    sdir = test_dir / "sd"
    sdir.mkdir()
    v("plugin.json", rpc.plugin_startdir(str(sdir)))
    v("plugin.json", rpc.plugin_rescan())
    v("datastore.json", rpc.datastore(key=["s", "a"], string="x"))
    v("datastore.json", rpc.datastore(key=["s", "b"], hex="00ff"))
    v("datastore.json", rpc.datastore(key=["s", "a"], string="y", mode="must-append"))
    v("listdatastore.json", rpc.listdatastore())
    v("listdatastore.json", rpc.listdatastore(["s"]))
    v("listdatastore.json", rpc.listdatastore(["s", "b"]))
    v("deldatastore.json", rpc.deldatastore(["s", "a"]))
    v("notifications.json", rpc.notifications(enable=True))
    # BOLT 11's "please make a donation" example invoice.
    donation = ("lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqs"
                "yqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkx"
                "aq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlc"
                "wspyetp5h2tztugp9lfyql")
    v("decode.json", rpc.call("decode", {"string": donation}))
    v("feerates.json", rpc.call("feerates", {"style": "perkw"}))
    v("newaddr.json", rpc.call("newaddr", {"addresstype": "all"}))
    v("listfunds.json", rpc.call("listfunds", {}))
    covered = {m for m, _ in rpc.validated}
    # stop is checked below; withdraw needs funds, so the wallet tests against devchain
    # (tests/tests/wallet.rs) validate it; invoices need the Lightning engine, so
    # test_invoices.py and tests/tests/invoices.rs (devchain) validate them.
    invoices = {"invoice", "listinvoices", "waitinvoice", "waitanyinvoice", "delinvoice",
                "autoclean-once"}
    # Payments and the graph need channels: test_htlc_hooks.py validates them (devchain).
    invoices |= {"sendpay", "waitsendpay", "listsendpays", "getroute", "listchannels",
                 "listnodes", "signmessage", "checkmessage"}
    # Channels, peers' messages, forwards and HTLCs need the engine and a peer too:
    # test_channels_hooks.py validates them (and checks it did).
    channels = {"fundchannel", "close", "listpeerchannels", "listforwards", "listhtlcs",
                "sendcustommsg"}
    assert covered >= set(clnschema.RPC_SCHEMAS) - {"stop", "withdraw"} - invoices - channels, \
        covered

    # Plugin option entries in listconfigs: CLN's schema leaves them open
    # (additionalProperties), so check them against the shape setconfig's schema gives.
    entry_schema = clnschema.load("setconfig.json")["response"]["properties"]["config"]
    val = clnschema.ResponseValidator(entry_schema)
    for name, entry in rpc.listconfigs()["configs"].items():
        if entry.get("plugin") == op:
            errs = [e.message for e in val.iter_errors({"config": name, "dynamic": True, **entry})]
            assert not errs, (name, entry, errs)

    res, rc = node.stop()
    v("stop.json", res)
    assert rc == 0


def test_getinfo_schema_with_builtin_plugins_disabled(node_factory):
    node = node_factory.get_node(extra_args=["--clear-plugins"])
    info = node.rpc.getinfo()
    clnschema.validate("getinfo.json", info)
    assert node.rpc.plugin_list()["plugins"] == []
    assert json.loads(json.dumps(info)) == info
    assert os.path.isdir(info["lightning-dir"])


# ------------------------------------------------------------------ how much of CLN we speak

# The number of CLN's documented commands Fulgur has (issue 18 aims at 110 or more). It only
# goes up: a command that disappears fails this test.
COMMANDS_IN_COMMON = 121


def test_commands_in_common_with_cln(node_factory):
    cln = {p.stem for p in clnschema.SCHEMA_DIR.glob("*.json")} - {"rpc-schema-draft"}
    assert len(cln) > 150, f"CLN's schemas are missing from {clnschema.SCHEMA_DIR}"
    # clnrest serves `clnrest-register-path` only when it runs, as in CLN.
    node = node_factory.get_node(options={"clnrest-port": free_port(),
                                          "clnrest-protocol": "http"})
    node.wait_for_log("REST server running at")
    ours = {h["command"].split()[0] for h in node.rpc.help()["help"]}
    common = sorted(ours & cln)
    print(f"\nFulgur has {len(common)} of CLN's {len(cln)} documented commands; missing: "
          + " ".join(sorted(cln - ours)))
    assert len(common) >= COMMANDS_IN_COMMON, common
