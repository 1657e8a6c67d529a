"""Plugins written with pyln-client's Plugin class, run unmodified by fulgurd: options,
init, methods, notifications, hooks, deaths, garbage, dynamic start/stop."""

import json
import os
import re
import shutil

import pytest
from pyln.client import Millisatoshi, RpcError

import clnschema
from conftest import copy_plugin, cycle_plugins, plugin_path, wait_for



def code_of(excinfo):
    return excinfo.value.error["code"]


def next_id(rpc, method):
    """The id pyln's LightningRpc will put on its next call of `method`."""
    return f"{rpc.caller_name}:{method}#{rpc.next_id}"


# ------------------------------------------------------------------ options and init

def test_option_types_arrive_typed(node_factory):
    op = plugin_path("options_plugin.py")
    node = node_factory.get_node(plugins=[op], options={
        "str_opt": "hello world", "int_opt": "-7", "bool_opt": "true", "flag_opt": None,
        "multi_opt": ["a", "b c"], "dyn_opt": "12"})
    init = node.rpc.call("getinit")["init"]
    opts = init["options"]
    assert opts["str_opt"] == "hello world"
    assert opts["int_opt"] == -7 and isinstance(opts["int_opt"], int)
    assert opts["bool_opt"] is True
    assert opts["flag_opt"] is True
    assert opts["multi_opt"] == ["a", "b c"]
    assert opts["dyn_opt"] == 12

    vals = node.rpc.call("getopts")["values"]
    assert vals["int_opt"] == -7 and vals["multi_opt"] == ["a", "b c"]


def test_plugin_start_takes_json_bools_for_bool_and_flag_options(node_factory):
    """As CLN: `plugin start` with JSON `true` for a bool option (issue 18: it failed with
    "requires a value") and for a flag, `false` leaving the flag unset."""
    node = node_factory.get_node()
    node.rpc.call("plugin", {"subcommand": "start", "plugin": plugin_path("options_plugin.py"),
                             "bool_opt": True, "flag_opt": True, "int_opt": 5})
    opts = node.rpc.call("getinit")["init"]["options"]
    assert opts["bool_opt"] is True and opts["flag_opt"] is True and opts["int_opt"] == 5
    node.rpc.plugin_stop(plugin_path("options_plugin.py"))
    node.rpc.call("plugin", {"subcommand": "start", "plugin": plugin_path("options_plugin.py"),
                             "bool_opt": False, "flag_opt": False})
    opts = node.rpc.call("getinit")["init"]["options"]
    assert opts["bool_opt"] is False and "flag_opt" not in opts


def test_option_defaults(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("options_plugin.py")],
                                 options={"bool_opt": "false"})
    opts = node.rpc.call("getinit")["init"]["options"]
    assert opts["str_opt"] == "default-str"
    assert opts["int_opt"] == 42
    assert opts["bool_opt"] is False
    assert opts["dyn_opt"] == 7
    # A flag is only present when set; a multi without value or default is omitted.
    assert "flag_opt" not in opts, opts
    assert "multi_opt" not in opts, opts


def test_init_configuration_env_and_ids(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("options_plugin.py")])
    our_id = next_id(node.rpc, "getinit")
    res = node.rpc.call("getinit")
    conf = res["init"]["configuration"]
    assert conf["lightning-dir"] == str(node.net_dir)
    assert os.path.isabs(conf["lightning-dir"])
    assert os.path.join(conf["lightning-dir"], conf["rpc-file"]) == str(node.rpc_path)
    assert conf["startup"] is True
    assert conf["network"] == "regtest"
    for k in ("init", "node", "channel", "invoice"):
        assert re.match(r"^([0-9a-f]{2})*$", conf["feature_set"][k]), conf["feature_set"]
    assert res["env"]["LIGHTNINGD_PLUGIN"] == "1"
    assert res["deprecated_apis"] in (True, False)
    assert res["cwd"] == str(node.net_dir)

    seen = res["seen"]
    assert [s["method"] for s in seen[:2]] == ["getmanifest", "init"], seen[:3]
    for s in seen:
        assert isinstance(s["id"], str), f"non-string id sent to plugin: {s}"
    assert re.match(r"^(.+/)?cln:getmanifest#\d+$", seen[0]["id"]), seen[0]
    assert re.match(r"^(.+/)?cln:init#\d+$", seen[1]["id"]), seen[1]
    # A passthrough call carries the caller's id as prefix: "<callerid>/cln:getinit#N"
    last = seen[-1]
    assert last["method"] == "getinit"
    assert re.match(rf"^{re.escape(our_id)}/cln:getinit#\d+$", last["id"]), (our_id, last)


def test_listconfigs_shows_plugin_options(node_factory):
    op = plugin_path("options_plugin.py")
    node = node_factory.get_node(plugins=[op], options={
        "str_opt": "s", "int_opt": "3", "bool_opt": "true", "flag_opt": None,
        "multi_opt": ["m1", "m2"]})
    cfg = node.rpc.listconfigs()["configs"]
    assert cfg["str_opt"] == {"value_str": "s", "source": "cmdline", "plugin": op}
    assert cfg["int_opt"] == {"value_int": 3, "source": "cmdline", "plugin": op}
    assert cfg["bool_opt"] == {"value_bool": True, "source": "cmdline", "plugin": op}
    assert cfg["flag_opt"] == {"set": True, "source": "cmdline", "plugin": op}
    assert cfg["multi_opt"] == {"values_str": ["m1", "m2"], "sources": ["cmdline", "cmdline"],
                                "plugin": op}
    assert cfg["dyn_opt"] == {"value_int": 7, "source": "default", "plugin": op, "dynamic": True}
    # the node's own options are there too
    assert cfg["network"]["value_str"] == "regtest"
    assert cfg["lightning-dir"]["value_str"] in (str(node.lightning_dir), str(node.net_dir))
    assert op in cfg["plugin"]["values_str"]

    one = node.rpc.listconfigs("int_opt")
    assert one == {"configs": {"int_opt": {"value_int": 3, "source": "cmdline", "plugin": op}}}
    with pytest.raises(RpcError) as e:
        node.rpc.listconfigs("no-such-config")
    assert code_of(e) == -32602


def test_setconfig_dynamic_option(node_factory):
    op = plugin_path("options_plugin.py")
    node = node_factory.get_node(plugins=[op])
    res = node.rpc.setconfig(config="dyn_opt", val=50)
    c = res["config"]
    assert c["config"] == "dyn_opt" and c["value_int"] == 50
    assert c["dynamic"] is True and c["plugin"] == op
    after = node.rpc.call("getopts")
    # CLN sends the new value to the plugin as a string, even for int options.
    assert after["changes"] == [["dyn_opt", "50"]], after["changes"]
    assert node.rpc.listconfigs("dyn_opt")["configs"]["dyn_opt"]["value_int"] == 50

    # The plugin refuses: its error comes back verbatim and the value does not change.
    with pytest.raises(RpcError) as e:
        node.rpc.setconfig(config="dyn_opt", val=1000)
    assert "dyn_opt must be <= 100" in e.value.error["message"], e.value.error
    assert code_of(e) == -32600, "plugin's error code must be passed through"
    assert node.rpc.listconfigs("dyn_opt")["configs"]["dyn_opt"]["value_int"] == 50

    # check routes setconfig without applying it
    assert node.rpc.check("setconfig", config="dyn_opt", val=5) == {"command_to_check": "setconfig"}
    assert node.rpc.listconfigs("dyn_opt")["configs"]["dyn_opt"]["value_int"] == 50

    # Non-dynamic and unknown options are refused with -32602.
    with pytest.raises(RpcError) as e:
        node.rpc.setconfig(config="str_opt", val="x")
    assert code_of(e) == -32602
    with pytest.raises(RpcError) as e:
        node.rpc.setconfig(config="no-such-option", val="x")
    assert code_of(e) == -32602
    # `check setconfig` did not reach the plugin (pyln plugins do not declare cancheck)
    assert node.rpc.call("getopts")["changes"] == [["dyn_opt", "50"], ["dyn_opt", "1000"]]


# ------------------------------------------------------------------ methods

def test_methods_named_positional_and_errors(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    rpc = node.rpc
    assert rpc.call("hello") == {"greeting": "hello world"}
    assert rpc.call("hello", {"name": "named"}) == {"greeting": "hello named"}
    assert rpc.call("hello", ["positional"]) == {"greeting": "hello positional"}

    r = rpc.call("echo", ["x", "y", "z"])
    assert (r["a"], r["b"], r["c"], r["params_were"]) == ("x", "y", "z", "list")
    r = rpc.call("echo", {"a": 1, "b": [2], "c": {"three": 3}})
    assert (r["a"], r["b"], r["c"], r["params_were"]) == (1, [2], {"three": 3}, "dict")

    # plugin error: code, message (and extra members) reach the caller unchanged
    with pytest.raises(RpcError) as e:
        rpc.call("fail_rpc", {"code": 777})
    assert e.value.error["code"] == 777
    assert e.value.error["message"] == "custom failure from methods_plugin"
    with pytest.raises(RpcError) as e:
        rpc.call("fail_rpc", {"code": -1})
    assert e.value.error["code"] == -1
    with pytest.raises(RpcError) as e:
        rpc.call("fail_exception")
    assert e.value.error["code"] == -32600
    assert "boom in methods_plugin" in e.value.error["message"]
    # missing argument: pyln's own error text
    with pytest.raises(RpcError) as e:
        rpc.call("echo", {"a": 1})
    assert "missing a required argument" in e.value.error["message"]


def test_msat_passthrough(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    rpc = node.rpc
    assert rpc.call("msat_echo", {"amount": 1000})["msat"] == 1000
    r = rpc.call("msat_echo", {"amount": "5sat", "label": "l"})
    assert (r["msat"], r["is_millisatoshi"], r["label"]) == (5000, True, "l")
    assert rpc.call("msat_echo", ["1000sat"])["msat"] == 1_000_000
    assert rpc.call("msat_echo", ["123msat", "pos"]) == {"msat": 123, "is_millisatoshi": True,
                                                          "label": "pos"}
    # pyln's Millisatoshi serialises itself as "<n>msat"
    assert rpc.call("msat_echo", {"amount": Millisatoshi(987654)})["msat"] == 987654
    assert rpc.call("msat_echo", [Millisatoshi("0.001btc")])["msat"] == 100_000_000


def test_plugin_calls_node_rpc(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    r = node.rpc.call("call_getinfo")
    assert r == {"id": node.rpc.getinfo()["id"], "network": "regtest"}
    # the plugin's own calls carry the id of the command being served as prefix
    r = node.rpc.call("ds_put", {"key": "a", "value": "b"})
    assert r["stored"]["string"] == "b"


# ------------------------------------------------------------------ notifications

def _received(node):
    return node.rpc.call("notifications_received")


def test_plugin_started_stopped_notifications(node_factory):
    dp = plugin_path("dynamic_plugin.py")
    node = node_factory.get_node(plugins=[plugin_path("notify_plugin.py"),
                                          plugin_path("methods_plugin.py")])
    node.rpc.plugin_start(dp)
    got = wait_for(lambda: [g for g in _received(node)["got"] if g["topic"] == "plugin_started"
                            and g["payload"]["plugin_name"] == "dynamic_plugin.py"])
    p = got[0]["payload"]
    assert p["plugin_path"] == dp
    assert "greet" in p["methods"]
    node.rpc.plugin_stop("dynamic_plugin.py")
    got = wait_for(lambda: [g for g in _received(node)["got"] if g["topic"] == "plugin_stopped"
                            and g["payload"]["plugin_name"] == "dynamic_plugin.py"])
    p = got[0]["payload"]
    assert p["plugin_path"] == dp
    assert "greet" in p["methods"]
    # methods_plugin subscribes to nothing: pyln raises (and the plugin dies) on any
    # notification it did not ask for, so it must still be alive.
    assert node.rpc.call("hello") == {"greeting": "hello world"}
    raw = [r for r in _received(node)["raw"] if r["method"] == "plugin_started"][-1]
    assert set(raw) == {"jsonrpc", "method", "params"}, raw
    assert list(raw["params"]) == ["plugin_started"], "payload must be wrapped in the topic name"
    for topic in ("plugin_started", "plugin_stopped"):
        for g in _received(node)["got"]:
            if g["topic"] == topic:
                clnschema.validate(f"notification/{topic}.json", g["payload"])


def test_custom_notification_between_plugins(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("emitter_plugin.py"),
                                          plugin_path("notify_plugin.py")])
    assert node.rpc.call("emit", {"value": "v-1", "count": 3}) == {"emitted": 3}
    got = wait_for(lambda: len([g for g in _received(node)["got"]
                                if g["topic"] == "fulgur_custom"]) >= 3 and
                   [g for g in _received(node)["got"] if g["topic"] == "fulgur_custom"])
    assert len(got) == 3
    for i, g in enumerate(got):
        kw = g["kwargs"]
        assert kw["origin"] == "emitter_plugin.py", kw
        # pyln hands the payload under the topic name (and at top level: params as sent)
        assert kw["fulgur_custom"]["value"] == "v-1" and kw["fulgur_custom"]["seq"] == i, kw
        assert kw["value"] == "v-1" and kw["seq"] == i, kw
    raw = [r for r in _received(node)["raw"] if r["method"] == "fulgur_custom"]
    assert len(raw) == 3
    # current CLN envelope: origin at top level, params exactly as the emitter sent them
    assert raw[0]["origin"] == "emitter_plugin.py", raw[0]
    assert raw[0]["params"]["value"] == "v-1", raw[0]
    assert "id" not in raw[0]


def test_undeclared_custom_notification_dropped(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("emitter_plugin.py"),
                                          plugin_path("star_plugin.py")])
    node.rpc.call("emit_undeclared", {"value": "nope"})
    node.wait_for_log(r"UNUSUAL.*fulgur_undeclared")
    node.rpc.call("emit", {"value": "marker"})
    got = wait_for(lambda: [g for g in node.rpc.call("star_received")["got"]
                            if g["topic"] == "fulgur_custom"])
    topics = [g["topic"] for g in node.rpc.call("star_received")["got"]]
    assert "fulgur_undeclared" not in topics
    assert got[0]["params"]["origin"] == "emitter_plugin.py"


def test_star_subscription(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("star_plugin.py"),
                                          plugin_path("emitter_plugin.py")])
    node.rpc.plugin_start(plugin_path("dynamic_plugin.py"))
    node.rpc.call("emit", {"value": 42})
    node.rpc.plugin_stop("dynamic_plugin.py")

    def topics():
        return [g["topic"] for g in node.rpc.call("star_received")["got"]]
    wait_for(lambda: {"plugin_started", "fulgur_custom", "plugin_stopped"} <= set(topics()),
             what="notifications at the * subscriber")
    assert "log" not in topics(), "`*` must not include the log topic"
    res, rc = node.stop()
    assert rc == 0
    with open(node.net_dir / "star_plugin.shutdown.json") as f:
        final = json.load(f)
    assert final[-1]["topic"] == "shutdown"


def test_shutdown_notification_and_stop(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("notify_plugin.py")])
    res, rc = node.stop()
    assert res == {"result": "Shutdown complete"}
    assert rc == 0
    path = node.net_dir / "notify_plugin.shutdown.json"
    assert path.exists(), "shutdown subscriber did not get the shutdown notification"
    rec = json.loads(path.read_text())
    assert rec["raw"]["method"] == "shutdown"
    assert "id" not in rec["raw"]
    assert rec["raw"]["params"] == {"shutdown": {}}, rec["raw"]
    clnschema.validate("notification/shutdown.json", rec["raw"]["params"]["shutdown"])


# ------------------------------------------------------------------ rpc_command hook chain

def _hook_calls(node):
    path = node.net_dir / "rpc_command_order.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _calls_for(node, req_id):
    return [c for c in _hook_calls(node) if c["payload"]["rpc_command"].get("id") == req_id]


def test_rpc_command_chain_order_and_outcomes(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("hook_a.py"), plugin_path("hook_b.py"),
                                          plugin_path("hook_c.py")])
    rpc = node.rpc
    rpc.datastore(key=["hookreplaced"], string="the replacement ran")

    # Order: hook_c (before hook_a), hook_a, hook_b (after hook_a) — not load order a, b, c.
    probe_id = next_id(rpc, "listdatastore")
    assert rpc.listdatastore(["probe"]) == {"datastore": []}
    calls = _calls_for(node, probe_id)
    assert [c["plugin"] for c in calls] == ["hook_c.py", "hook_a.py", "hook_b.py"], calls
    payload = calls[0]["payload"]["rpc_command"]
    assert payload["method"] == "listdatastore"
    assert payload["params"] == {"key": ["probe"]}
    assert payload["jsonrpc"] == "2.0"

    # hook_a returns a custom result
    r = rpc.listdatastore(["hookreturn"])
    assert r == {"datastore": [{"key": ["hook_a", "custom"], "string": "from hook_a"}]}

    # hook_a returns a custom error
    with pytest.raises(RpcError) as e:
        rpc.listdatastore(["hookerror"])
    assert e.value.error["code"] == 4242
    assert e.value.error["message"] == "blocked by hook_a"

    # hook_c replaces the request; hook_b's later attempt to return is ignored
    rid = next_id(rpc, "listdatastore")
    r = rpc.listdatastore(["hookreplace"])
    assert len(r["datastore"]) == 1, f"replacement did not run (or hook_b won): {r}"
    assert r["datastore"][0]["key"] == ["hookreplaced"], r
    assert r["datastore"][0]["string"] == "the replacement ran", r
    assert [c["plugin"] for c in _calls_for(node, rid)][:1] == ["hook_c.py"]

    # positional params are passed to the hook as sent
    pid = next_id(rpc, "listdatastore")
    rpc.call("listdatastore", [["probe2"]])
    assert _calls_for(node, pid)[0]["payload"]["rpc_command"]["params"] == [["probe2"]]

    # stopping a plugin in the middle of the chain leaves the others in order
    rpc.plugin_stop("hook_a.py")
    sid = next_id(rpc, "listdatastore")
    rpc.listdatastore(["probe3"])
    assert [c["plugin"] for c in _calls_for(node, sid)] == ["hook_c.py", "hook_b.py"]
    assert rpc.listdatastore(["hookreturn"]) == {"datastore": []}


def test_rpc_command_payloads_match_schema(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("hook_a.py"), plugin_path("hook_b.py"),
                                          plugin_path("hook_c.py"),
                                          plugin_path("methods_plugin.py")])
    node.rpc.getinfo()
    node.rpc.call("echo", ["1", "2"])
    node.rpc.call("hello", {"name": "x"})
    node.rpc.help()
    calls = _hook_calls(node)
    assert len(calls) >= 12
    for c in calls:
        clnschema.validate("hook/rpc_command.json", c["payload"], part="request")


def test_rpc_command_hook_cycle_refused_at_plugin_start(node_factory, test_dir):
    paths = cycle_plugins(test_dir)
    node = node_factory.get_node(plugins=[paths[0]])
    with pytest.raises(RpcError) as e:
        node.rpc.plugin_start(paths[1])
    assert code_of(e) == -3
    active = {p["name"]: p["active"] for p in node.rpc.plugin_list()["plugins"]}
    assert active.get(paths[0]) is True
    assert paths[1] not in active
    assert node.rpc.getinfo()["network"] == "regtest"


@pytest.mark.parametrize("hook,why", [
    ("openchannel2", "dual-funded channels are not supported"),
    ("rbf_channel", "dual-funded channels are not supported"),
    ("onion_message_recv", "onion messages"),
])
def test_hooks_never_called_are_refused_at_registration(node_factory, monkeypatch, hook, why):
    """Issue 18: a hook the node never calls is refused when a plugin registers it, with
    the reason; a dual-funding plugin must not run believing it is called."""
    # The node passes its environment on to the plugins it starts.
    monkeypatch.setenv("UNFIRED_HOOK", hook)
    node = node_factory.get_node()
    with pytest.raises(RpcError) as e:
        node.rpc.plugin_start(plugin_path("unfired_hook_plugin.py"))
    assert f"Hook {hook} is never called by this node" in e.value.error["message"]
    assert why in e.value.error["message"]
    names = [p["name"] for p in node.rpc.plugin_list()["plugins"]]
    assert not any("unfired_hook_plugin.py" in n for n in names)


@pytest.mark.parametrize("key", ["badhook-result", "badhook-shape"])
def test_malformed_hook_reply_uses_safe_default(node_factory, key):
    # The bad hook reply is logged at BROKEN: that is what this test provokes.
    node = node_factory.get_node(
        plugins=[plugin_path("badhook_plugin.py")],
        broken_log=r"badhook_plugin\.py.*rpc_command|rpc_command.*badhook_plugin\.py")
    node.rpc.datastore(key=[key, "child"], string="present")
    # safe default for rpc_command is "continue": the command runs normally
    r = node.rpc.listdatastore([key])
    assert r["datastore"][0]["string"] == "present", r
    line = node.wait_for_log(r"BROKEN.*badhook_plugin\.py.*rpc_command|BROKEN.*rpc_command.*badhook_plugin\.py")
    assert line
    assert node.rpc.listdatastore([key])["datastore"][0]["string"] == "present"
    assert node.running()


def test_hook_replace_with_unknown_method(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("badhook_plugin.py")])
    # CLN answers the caller with -32600 "Bad response to 'rpc_command' hook";
    # either that or running the original command is acceptable, not a hang or a crash.
    try:
        r = node.rpc.listdatastore(["badhook-replace"])
        assert r == {"datastore": []}
    except RpcError as e:
        assert e.error["code"] == -32600, e.error
    assert node.rpc.getinfo()["network"] == "regtest"


# ------------------------------------------------------------------ plugins dying

def test_plugin_dies_mid_call(node_factory):
    cp = plugin_path("crash_plugin.py")
    node = node_factory.get_node(plugins=[cp, plugin_path("notify_plugin.py")])
    assert node.rpc.call("crash_alive")["alive"] is True
    with pytest.raises(RpcError) as e:
        node.rpc.call("crash_now")
    assert code_of(e) == -4, e.value.error
    line = node.wait_for_log(r"Killing plugin: exited during normal operation")
    assert "crash_plugin.py" in line, f"log line does not name the plugin: {line}"
    # node lives; the dead plugin's methods are gone
    assert node.rpc.getinfo()["network"] == "regtest"
    with pytest.raises(RpcError) as e:
        node.rpc.call("crash_alive")
    assert code_of(e) == -32601
    assert cp not in [p["name"] for p in node.rpc.plugin_list()["plugins"]]
    assert "crash_alive" not in json.dumps(node.rpc.help())
    got = wait_for(lambda: [g for g in _received(node)["got"] if g["topic"] == "plugin_stopped"
                            and g["payload"]["plugin_name"] == "crash_plugin.py"])
    assert "crash_now" in got[0]["payload"]["methods"]


def test_important_plugin_death_stops_node(node_factory):
    # As CLN, the node logs the shutdown it is forced into at BROKEN.
    node = node_factory.get_node(important_plugins=[plugin_path("crash_plugin.py")],
                                 broken_log=r"Plugin marked as important, shutting down")
    assert node.rpc.call("crash_alive")["alive"] is True
    with pytest.raises((RpcError, OSError, ValueError)):
        node.rpc.call("crash_now")
    rc = node.wait_exit()
    assert rc == 1, f"exit code {rc}"
    assert node.is_in_log(r"Plugin marked as important, shutting down lightningd!"), node.log()[-2000:]


@pytest.mark.parametrize("method,reason", [
    ("garbage_text", r"garbage_plugin\.py: Killing plugin: .+"),
    ("garbage_nojsonrpc", r'Killing plugin: JSON-RPC message does not contain "jsonrpc" field'),
])
def test_plugin_writing_garbage_is_killed(node_factory, method, reason):
    node = node_factory.get_node(plugins=[plugin_path("garbage_plugin.py"),
                                          plugin_path("methods_plugin.py")])
    assert node.rpc.call("garbage_alive") == {"alive": True}
    with pytest.raises(RpcError) as e:
        node.rpc.call(method)
    assert code_of(e) == -4, e.value.error
    line = node.wait_for_log(reason)
    assert "garbage_plugin.py" in line, f"log line does not name the plugin: {line}"
    with pytest.raises(RpcError) as e:
        node.rpc.call("garbage_alive")
    assert code_of(e) == -32601
    assert node.rpc.call("hello", {"name": "fine"}) == {"greeting": "hello fine"}
    assert node.running()


def test_raw_control_characters_in_plugin_json_are_read_as_cln_reads_them(node_factory):
    """CLN's `cowsay.sh` writes raw newlines inside JSON strings; CLN's parser reads them,
    so a plugin written for it must not be killed here (issue 18)."""
    node = node_factory.get_node(plugins=[plugin_path("rawnewline_plugin.py")])
    assert node.rpc.call("rawsay") == {"cow": " ___\n< moo >\n ---\t!"}
    node.wait_for_log(r"raw\\nline|raw$")
    assert node.rpc.call("rawsay")["cow"].startswith(" ___")
    assert not node.is_in_log(r"rawnewline_plugin\.py: Killing plugin")


# ------------------------------------------------------------------ dynamic start/stop

def test_dynamic_start_stop(node_factory):
    dp = plugin_path("dynamic_plugin.py")
    node = node_factory.get_node()
    res = node.rpc.plugin_start(dp, greeting="bonjour")
    assert res["command"] == "start"
    entry = [p for p in res["plugins"] if p["name"] == dp]
    assert entry == [{"name": dp, "active": True, "dynamic": True}], res
    assert node.rpc.call("greet") == {"greeting": "bonjour you", "startup": False}
    cfg = node.rpc.listconfigs()["configs"]
    assert cfg["greeting"]["value_str"] == "bonjour" and cfg["greeting"]["plugin"] == dp
    assert "greet [name]" in [h["command"] for h in node.rpc.help()["help"]]

    res = node.rpc.plugin_stop("dynamic_plugin.py")
    assert res == {"command": "stop", "result": "Successfully stopped dynamic_plugin.py."}
    with pytest.raises(RpcError) as e:
        node.rpc.call("greet")
    assert code_of(e) == -32601
    assert "greeting" not in node.rpc.listconfigs()["configs"]
    assert dp not in [p["name"] for p in node.rpc.plugin_list()["plugins"]]

    # options array form, with a bare flag; stop by full path
    node.rpc.call("plugin", {"subcommand": "start", "plugin": dp,
                             "options": ["greeting=hi", "shout"]})
    assert node.rpc.call("greet", ["me"])["greeting"] == "HI ME"
    assert node.rpc.plugin_stop(dp)["result"] == "Successfully stopped dynamic_plugin.py."
    # positional form: plugin start PATH [options...]
    node.rpc.call("plugin", ["start", dp, ["greeting=pos"]])
    assert node.rpc.call("greet")["greeting"] == "pos you"


def test_plugin_command_errors(node_factory, test_dir):
    dp = plugin_path("dynamic_plugin.py")
    sp = plugin_path("static_plugin.py")
    node = node_factory.get_node(plugins=[sp])
    rpc = node.rpc

    with pytest.raises(RpcError) as e:
        rpc.plugin_start(str(test_dir / "nonexistent.py"))
    assert code_of(e) == -32602

    noexec = copy_plugin("dynamic_plugin.py", test_dir / "noexec_plugin.py", mode=0o644)
    with pytest.raises(RpcError) as e:
        rpc.plugin_start(noexec)
    assert code_of(e) == -32602
    assert "is not executable" in e.value.error["message"]

    rpc.plugin_start(dp)
    with pytest.raises(RpcError) as e:
        rpc.plugin_start(dp)
    assert code_of(e) == -32602
    assert "already registered" in e.value.error["message"]

    with pytest.raises(RpcError) as e:
        rpc.plugin_stop("no-such-plugin.py")
    assert code_of(e) == -32602
    assert "Could not find plugin" in e.value.error["message"]

    # a non-dynamic plugin cannot be stopped while the node runs...
    with pytest.raises(RpcError) as e:
        rpc.plugin_stop("static_plugin.py")
    assert code_of(e) == -32602
    assert "cannot be managed when lightningd is up" in e.value.error["message"]
    assert rpc.call("static_hello") == {"static": True}

    # ...nor started at runtime
    static_copy = copy_plugin("static_plugin.py", test_dir / "static_copy.py")
    with pytest.raises(RpcError) as e:
        rpc.plugin_start(static_copy)
    assert code_of(e) == -3
    assert "Not a dynamic plugin" in e.value.error["message"]

    # a plugin that dies before getmanifest
    with pytest.raises(RpcError) as e:
        rpc.plugin_start(plugin_path("exit_plugin.py"))
    assert code_of(e) == -3

    # unknown option for the plugin
    rpc.plugin_stop(dp)
    with pytest.raises(RpcError):
        rpc.plugin_start(dp, no_such_opt="x")
    assert dp not in [p["name"] for p in rpc.plugin_list()["plugins"] if p["active"]]
    assert rpc.getinfo()["network"] == "regtest"


def test_plugin_startdir_and_rescan(node_factory, test_dir):
    sdir = test_dir / "startdir"
    sdir.mkdir()
    shutil.copy(plugin_path("dynamic_plugin.py"), sdir / "dynamic_plugin.py")
    node = node_factory.get_node()
    res = node.rpc.plugin_startdir(str(sdir))
    assert res["command"] == "startdir"
    assert str(sdir / "dynamic_plugin.py") in [p["name"] for p in res["plugins"]]
    assert node.rpc.call("greet")["greeting"] == "hello you"

    pdir = node.lightning_dir / "plugins"
    pdir.mkdir(exist_ok=True)
    shutil.copy(plugin_path("methods_plugin.py"), pdir / "methods_plugin.py")
    res = node.rpc.plugin_rescan()
    assert res["command"] == "rescan"
    assert node.rpc.call("hello") == {"greeting": "hello world"}


# ------------------------------------------------------------------ id mapping and framing

def test_async_replies_out_of_order(node_factory):
    import threading
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    results = {}

    def call(key):
        results[key] = node.new_rpc().call("park", {"key": key})

    threads = [threading.Thread(target=call, args=(k,)) for k in ("k1", "k2", "k3")]
    for t in threads:
        t.start()
    wait_for(lambda: len([s for s in node.rpc.call("seen_requests")["seen"]
                          if s["method"] == "park"]) == 3, what="three parked calls")
    # release in reverse order: each caller must get its own answer
    for k in ("k3", "k1", "k2"):
        assert node.rpc.call("release", {"key": k, "value": k.upper()}) == {"released": k}
    for t in threads:
        t.join(30)
    assert results == {k: {"key": k, "value": k.upper()} for k in ("k1", "k2", "k3")}


def test_concurrent_callers_of_one_plugin(node_factory):
    import threading
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    errors = []

    def worker(i):
        try:
            rpc = node.new_rpc()
            for j in range(10):
                r = rpc.call("echo", {"a": i, "b": j})
                assert (r["a"], r["b"]) == (i, j), r
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


@pytest.mark.parametrize("size", [100_000, 5_000_000])
def test_large_plugin_reply(node_factory, size):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    r = node.rpc.call("big", {"size": size})
    assert r["size"] == size and r["data"] == "x" * size
    assert node.rpc.call("hello") == {"greeting": "hello world"}


def test_method_name_collisions(node_factory, test_dir):
    copy = test_dir / "methods_copy.py"
    shutil.copy(plugin_path("methods_plugin.py"), copy)
    copy.chmod(0o755)
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py"), str(copy),
                                          plugin_path("shadow_plugin.py")])
    # the built-in getinfo stays (schema-validated), the shadowing plugin is refused
    info = node.rpc.getinfo()
    assert "shadow" not in info and info["network"] == "regtest"
    line = node.wait_for_log(r"Killing plugin: .*getinfo|shadow_plugin\.py.*getinfo")
    assert "shadow_plugin.py" in line, line
    # only one of the two plugins offering `hello` survives, and hello works
    active = [os.path.basename(p["name"]) for p in node.rpc.plugin_list()["plugins"]
              if p["active"]]
    assert "shadow_plugin.py" not in active
    assert ("methods_plugin.py" in active) != ("methods_copy.py" in active), active
    assert node.rpc.call("hello") == {"greeting": "hello world"}
    assert [h["command"] for h in node.rpc.help()["help"]].count("hello [name]") == 1


def test_rpc_command_hook_filters(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("filter_hook_plugin.py"),
                                          plugin_path("methods_plugin.py")])
    node.rpc.getinfo()
    node.rpc.listdatastore(["f"])
    node.rpc.call("echo", ["1", "2"])
    node.rpc.call("hello")
    node.rpc.help()
    calls = (node.net_dir / "filter_hook_calls.txt").read_text().split()
    assert calls == ["listdatastore", "hello"], calls


def test_plugin_disabling_itself(node_factory):
    dp = plugin_path("disable_plugin.py")
    node = node_factory.get_node(plugins=[dp])
    assert dp not in [p["name"] for p in node.rpc.plugin_list()["plugins"]]
    with pytest.raises(RpcError) as e:
        node.rpc.call("disabled_hello")
    assert code_of(e) == -32601
    with pytest.raises(RpcError) as e:
        node.rpc.plugin_start(dp)
    assert code_of(e) == -3
    assert "not today, thanks" in e.value.error["message"], e.value.error
    assert node.rpc.getinfo()["network"] == "regtest"


def test_plugin_rescan_restarts_a_changed_dynamic_plugin(node_factory):
    """An upgrade in the plugin directory takes effect at `plugin rescan`: a dynamic plugin
    whose file changed since it started is stopped and started again (CLN's rescan only
    starts new files; restarting the node was the only way)."""
    node = node_factory.get_node()
    pdir = node.lightning_dir / "plugins"
    pdir.mkdir(exist_ok=True)
    dest = pdir / "dynamic_plugin.py"
    shutil.copy(plugin_path("dynamic_plugin.py"), dest)
    node.rpc.plugin_rescan()
    assert node.rpc.call("greet")["greeting"] == "hello you"
    # Unchanged: a rescan leaves it running.
    node.rpc.plugin_rescan()
    assert node.rpc.call("greet")["greeting"] == "hello you"
    assert not node.is_in_log("changed since it started")
    # Upgraded in place: the new code answers after a rescan.
    old = 'plugin.add_option("greeting", "hello",'
    text = dest.read_text()
    assert old in text
    dest.write_text(text.replace(old, 'plugin.add_option("greeting", "howdy",'))
    st = dest.stat()
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    node.rpc.plugin_rescan()
    assert node.rpc.call("greet")["greeting"] == "howdy you"
    node.wait_for_log("plugin rescan: dynamic_plugin.py changed since it started; restarting it")
