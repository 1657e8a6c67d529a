"""Plugins that misbehave in less common ways: noise on stdout before the handshake, a
plugin that never answers getmanifest, one that ignores `shutdown`, one that dies inside a
hook call; plus `shutdown` on `plugin stop` and setconfig persistence across restarts.

`--plugin-timeout` and `--plugin-shutdown-grace` are Fulgur options (CLN hard-codes 120 s
and 30 s); they only make these tests fast."""

import json
import os
import time

import pytest
from pyln.client import RpcError

from conftest import plugin_path, wait_for


def code_of(excinfo):
    return excinfo.value.error["code"]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        # gone between the two checks (reading /proc/PID/stat of a vanishing process
        # raises ESRCH)
        return False


def test_stdout_noise_before_handshake(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("noisy_start_plugin.py"),
                                          plugin_path("methods_plugin.py")])
    line = node.wait_for_log(r"Killing plugin: ")
    assert "noisy_start_plugin.py" in line, line
    with pytest.raises(RpcError) as e:
        node.rpc.call("noisy_hello")
    assert code_of(e) == -32601
    assert node.rpc.call("hello") == {"greeting": "hello world"}


def test_plugin_start_of_hanging_plugin_times_out(node_factory):
    node = node_factory.get_node(options={"plugin-timeout": "3"})
    hp = plugin_path("hang_plugin.py")
    t0 = time.monotonic()
    with pytest.raises(RpcError) as e:
        node.rpc.plugin_start(hp)
    assert code_of(e) == -3, e.value.error
    assert "getmanifest" in e.value.error["message"], e.value.error
    assert time.monotonic() - t0 < 50
    assert hp not in [p["name"] for p in node.rpc.plugin_list()["plugins"]]
    assert node.rpc.getinfo()["network"] == "regtest"


def test_shutdown_notification_on_plugin_stop(node_factory):
    node = node_factory.get_node()
    np_ = plugin_path("notify_plugin.py")
    node.rpc.plugin_start(np_)
    res = node.rpc.plugin_stop("notify_plugin.py")
    assert res == {"command": "stop", "result": "Successfully stopped notify_plugin.py."}
    path = node.net_dir / "notify_plugin.shutdown.json"
    assert path.exists(), "plugin stop did not send `shutdown` to a subscribed plugin"
    assert json.loads(path.read_text())["raw"]["params"] == {"shutdown": {}}
    assert node.rpc.getinfo()["network"] == "regtest"


def test_plugin_ignoring_shutdown_is_killed_on_stop(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("stubborn_plugin.py")],
                                 options={"plugin-shutdown-grace": "2"})
    pid = node.rpc.call("stubborn_pid")["pid"]
    assert pid_alive(pid)
    res, rc = node.stop(timeout=40)
    assert res == {"result": "Shutdown complete"} and rc == 0
    wait_for(lambda: not pid_alive(pid), timeout=10, what="stubborn plugin to be gone")
    assert node.is_in_log(r"stubborn_plugin got shutdown and ignores it")


def test_plugin_ignoring_shutdown_on_plugin_stop(node_factory):
    node = node_factory.get_node(options={"plugin-shutdown-grace": "2"})
    node.rpc.plugin_start(plugin_path("stubborn_plugin.py"))
    pid = node.rpc.call("stubborn_pid")["pid"]
    res = node.rpc.plugin_stop("stubborn_plugin.py")
    assert res["result"] == "Successfully stopped stubborn_plugin.py."
    wait_for(lambda: not pid_alive(pid), timeout=10, what="stubborn plugin to be gone")
    with pytest.raises(RpcError) as e:
        node.rpc.call("stubborn_pid")
    assert code_of(e) == -32601


def test_plugin_dies_inside_hook_call(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("hook_c.py"),
                                          plugin_path("badhook_plugin.py"),
                                          plugin_path("hook_b.py")])
    node.rpc.datastore(key=["badhook-crash", "x"], string="survives")
    # The chain goes on without the dead plugin; the command itself runs.
    r = node.rpc.listdatastore(["badhook-crash"])
    assert r["datastore"][0]["string"] == "survives", r
    names = [os.path.basename(p["name"]) for p in node.rpc.plugin_list()["plugins"]]
    assert "badhook_plugin.py" not in names
    assert {"hook_c.py", "hook_b.py"} <= set(names)
    # later commands go through the remaining hooks normally
    assert node.rpc.listdatastore(["badhook-crash"])["datastore"][0]["string"] == "survives"


def test_setconfig_persists_unless_transient(node_factory):
    op = plugin_path("options_plugin.py")
    node = node_factory.get_node(plugins=[op])
    node.rpc.setconfig(config="dyn_opt", val=55)
    node.stop()
    node.start()
    assert node.rpc.listconfigs("dyn_opt")["configs"]["dyn_opt"]["value_int"] == 55
    assert node.rpc.call("getinit")["init"]["options"]["dyn_opt"] == 55
    node.rpc.setconfig(config="dyn_opt", val=66, transient=True)
    assert node.rpc.call("getopts")["values"]["dyn_opt"] in ("66", 66)
    node.stop()
    node.start()
    assert node.rpc.listconfigs("dyn_opt")["configs"]["dyn_opt"]["value_int"] == 55
