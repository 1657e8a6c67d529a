"""Plugins that misbehave in less common ways: noise on stdout before the handshake, a
plugin that never answers getmanifest, one that ignores `shutdown`, one that dies inside a
hook call; plus `shutdown` on `plugin stop` and setconfig persistence across restarts.

`--plugin-timeout` and `--plugin-shutdown-grace` are Fulgur options (CLN hard-codes 120 s
and 30 s); they only make these tests fast."""

import json
import os
import re
import threading
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
    line = node.wait_for_log(r"noisy_start_plugin\.py: Killing plugin: ")
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


NOTIFICATION_QUEUE_LIMIT = 8 << 20


def test_plugin_that_stops_reading_stdin_is_bounded(node_factory):
    """A plugin that stops reading: notifications to it are dropped (counted, logged with
    the queue's size, which never passes the limit); a request that would pass the hard
    limit kills it as hung, and its callers get "plugin terminated"."""
    node = node_factory.get_node(plugins=[plugin_path("flood_plugin.py"),
                                          plugin_path("deaf_plugin.py")])
    node.wait_for_log(r"plugin-deaf_plugin.py.*deaf from now on")
    # 40 MiB of notifications for a subscriber that reads nothing.
    assert node.rpc.call("flood", {"count": 40, "size": 1 << 20}) == {"emitted": 40}
    line = node.wait_for_log(r"plugin-deaf_plugin.py.*not reading its stdin: \d+ bytes queued "
                             r"\(notification limit \d+\); dropped 10 notification")
    queued, limit = [int(x) for x in re.search(r"(\d+) bytes queued \(notification limit (\d+)\)",
                                               line).groups()]
    assert limit == NOTIFICATION_QUEUE_LIMIT
    assert 0 < queued <= limit, line
    # The first drop was logged too, and every count logged stays under the limit.
    counts = [re.search(r"(\d+) bytes queued", l).group(1)
              for l in node.log_lines() if "not reading its stdin" in l]
    assert len(counts) >= 2 and all(int(c) <= limit for c in counts), counts
    assert node.rpc.getinfo()["network"] == "regtest"

    # Requests go past the notification limit, up to a hard limit (32 MiB): two 15 MiB
    # calls cannot both be queued behind 8 MiB of notifications.
    pad = "p" * (15 << 20)
    errors = []

    def call():
        try:
            node.new_rpc().call("deaf_ping", {"pad": pad})
            errors.append(None)
        except RpcError as e:
            errors.append(e.error["code"])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [-4, -4], errors
    node.wait_for_log(r"plugin-deaf_plugin.py.*Killing plugin: stopped reading its stdin")
    names = [os.path.basename(p["name"]) for p in node.rpc.plugin_list()["plugins"]]
    assert "deaf_plugin.py" not in names and "flood_plugin.py" in names
    assert node.rpc.getinfo()["network"] == "regtest"


def test_plugin_stderr_endless_line_and_invalid_utf8(node_factory):
    """50 MB on stderr without a newline, with invalid UTF-8: the node keeps the head of
    the line, counts the rest, and still logs the plugin's later stderr lines."""
    node = node_factory.get_node(plugins=[plugin_path("flood_plugin.py")])
    written = node.rpc.call("stderr_flood", {"mb": 50})["written"]
    assert written > 50_000_000
    line = node.wait_for_log(r"plugin-flood_plugin.py.*\[end of an overlong stderr line: "
                             r"\d+ bytes of it dropped\]")
    dropped = int(re.search(r"line: (\d+) bytes", line).group(1))
    head = node.is_in_log(r"plugin-flood_plugin.py.*\[stderr line longer than \d+ bytes")
    assert head is not None
    kept = int(re.search(r"longer than (\d+) bytes", head).group(1))
    assert dropped + kept == written
    assert node.rpc.getinfo()["network"] == "regtest"
    # A later line, itself starting with invalid UTF-8, is still logged.
    node.rpc.call("stderr_line", {"text": "still heard after the flood"})
    node.wait_for_log(r"plugin-flood_plugin.py.*still heard after the flood")
    node.rpc.call("stderr_line", {"text": "and again"})
    node.wait_for_log(r"plugin-flood_plugin.py.*and again")


class Background:
    """Runs one RPC call on its own connection in a thread; `.outcome` is ("ok", result),
    ("error", code) or ("closed", message) once it returns."""

    def __init__(self, node, method, params=None):
        self.outcome = None
        self.message = None
        rpc = node.new_rpc()

        def run():
            try:
                self.outcome = ("ok", rpc.call(method, params or {}))
            except RpcError as e:
                self.message = e.error.get("message")
                self.outcome = ("error", e.error["code"])
            except (OSError, ValueError) as e:
                self.outcome = ("closed", str(e))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait(self, what):
        wait_for(lambda: self.outcome is not None, what=what)
        return self.outcome


def test_hooks_held_forever_block_neither_clients_nor_plugin_stop_nor_stop(ln):
    """A plugin holds rpc_command (listpeers, plugin, stop), peer_connected, custommsg and
    openchannel forever. Other clients are served meanwhile; `plugin stop` and `stop` pass
    its hold after --plugin-timeout. Its death resolves what it held: after `plugin stop`
    the chains go on as in CLN (the held listpeers runs); at `stop` nothing held is let
    through (the held command gets "shutting down", the held channel is never opened)."""
    holder = plugin_path("holder_plugin.py")
    a = ln.node(plugins=[holder], options={"plugin-timeout": "5", "plugin-shutdown-grace": "2"})
    b = ln.node()

    # peer_connected and custommsg held; the peer itself is up.
    ln.connect(b, a)
    a.wait_for_log(rf"plugin-holder_plugin.py.*holding peer_connected {b.id}")
    b.rpc.sendcustommsg(a.id, "8001" + "cafe")
    a.wait_for_log(r"plugin-holder_plugin.py.*holding custommsg 8001cafe")
    held_listpeers = Background(a, "listpeers")
    a.wait_for_log(r"plugin-holder_plugin.py.*holding rpc_command listpeers")

    # Other clients are served while all that is held.
    assert a.rpc.getinfo()["id"] == a.id
    assert a.rpc.call("listconfigs", {"config": "plugin-timeout"})["configs"]
    assert held_listpeers.outcome is None

    # `plugin stop` is held too, until --plugin-timeout; then it runs.
    res = a.rpc.plugin_stop("holder_plugin.py")
    assert res["result"] == "Successfully stopped holder_plugin.py.", res
    assert a.is_in_log(r"plugin-holder_plugin.py.*holding rpc_command plugin")
    assert a.is_in_log(r"holder_plugin.py held the rpc_command hook for plugin")
    # Its death lets the held chains go on (CLN's rule): listpeers runs and sees b.
    kind, result = held_listpeers.wait("held listpeers to finish")
    assert kind == "ok", (kind, result)
    assert b.id in [p["id"] for p in result["peers"]]

    # Again, with `stop` and an inbound channel held.
    a.rpc.plugin_start(holder)
    ln.fund(b)
    mark = a.log_mark()
    opener = Background(b, "fundchannel", {"id": a.id, "amount": 200_000})
    a.wait_for_log(r"plugin-holder_plugin.py.*holding openchannel 200000000", start=mark)
    held_listpeers = Background(a, "listpeers")
    a.wait_for_log(r"plugin-holder_plugin.py.*holding rpc_command listpeers", start=mark)
    assert a.rpc.getinfo()["id"] == a.id
    res, rc = a.stop(timeout=60)
    assert res == {"result": "Shutdown complete"} and rc == 0, (res, rc)
    assert a.is_in_log(r"holder_plugin.py held the rpc_command hook for stop", start=mark)
    # The held command was not run on the way out.
    kind, result = held_listpeers.wait("held listpeers to end")
    assert kind != "ok", result
    if kind == "error":
        assert result == -5, result
    # The held channel was never accepted: the opener failed and has no channel.
    kind, result = opener.wait("fundchannel to end")
    assert kind == "error", (kind, result)
    assert a.is_in_log(r"Channel from \w+ rejected by plugin holder_plugin.py \(openchannel\)",
                       start=mark)
    states = [c["state"] for c in b.rpc.listpeerchannels(a.id)["channels"]]
    assert not {"CHANNELD_AWAITING_LOCKIN", "CHANNELD_NORMAL"} & set(states), states


def test_fundchannel_fails_when_the_peer_disconnects_before_accepting(ln):
    """As CLN kills an uncommitted channel when its peer goes away, a `fundchannel` waiting
    for the peer's accept_channel fails at the disconnect (not at its timeout), and the
    unfunded channel is not re-offered when the peer comes back."""
    a = ln.node(plugins=[plugin_path("holder_plugin.py")])
    b = ln.node()
    ln.connect(b, a)
    ln.fund(b)
    opener = Background(b, "fundchannel", {"id": a.id, "amount": 200_000})
    a.wait_for_log(r"plugin-holder_plugin.py.*holding openchannel 200000000")
    b.rpc.disconnect(a.id, force=True)
    kind, code = opener.wait("fundchannel to fail")
    assert (kind, code) == ("error", -1), (kind, code)
    assert opener.message == "Disconnected during the channel open", opener.message
    assert b.is_in_log(r"Channel open to \w+ abandoned: peer disconnected before accepting")
    wait_for(lambda: b.rpc.listpeerchannels(a.id)["channels"] == [], what="no channel left")
    ln.connect(b, a)
    assert b.rpc.listpeerchannels(a.id)["channels"] == []
    assert a.rpc.listpeerchannels(b.id)["channels"] == []
