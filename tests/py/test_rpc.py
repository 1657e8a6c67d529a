"""The JSON-RPC socket: pyln's LightningRpc against the built-in commands, then raw-socket
tests of framing, validation order, error codes and robustness against bad clients."""

import json
import re
import socket
import threading
import time

import pytest
from pyln.client import RpcError

from conftest import RawRpc, plugin_path, wait_for

PUBKEY_RE = re.compile(r"^0[23][0-9a-f]{64}$")
BUILTIN_COMMANDS = ["getinfo", "help", "stop", "listconfigs", "check", "setconfig", "plugin",
                    "datastore", "listdatastore", "deldatastore", "notifications"]


def err_code(excinfo):
    e = excinfo.value.error
    assert isinstance(e, dict), f"error is not an object: {e!r}"
    return e["code"]


# ------------------------------------------------------------------ via pyln LightningRpc

def test_getinfo(node):
    info = node.rpc.getinfo()  # also validated against getinfo.json
    assert PUBKEY_RE.match(info["id"]), info["id"]
    assert info["network"] == "regtest"
    assert info["lightning-dir"] == str(node.net_dir)
    assert info["blockheight"] == 0
    for k in ("num_peers", "num_pending_channels", "num_active_channels", "num_inactive_channels"):
        assert info[k] == 0, k
    assert info["fees_collected_msat"] == 0
    assert isinstance(info["version"], str) and info["version"]
    assert re.match(r"^[0-9a-f]{6}$", info["color"])
    # A second client sees the same node.
    assert node.new_rpc().getinfo()["id"] == info["id"]


def test_help(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    h = node.rpc.help()
    assert h.get("format-hint") == "simple"
    commands = [e["command"] for e in h["help"]]
    names = [c.split(" ")[0] for c in commands]
    for c in BUILTIN_COMMANDS:
        assert c in names, f"{c} missing from help: {names}"
    assert len(names) == len(set(names)), "duplicate commands in help"
    # Plugin methods appear as "<name> <usage>"
    assert "hello [name]" in commands
    assert "echo a b [c]" in commands
    assert "msat_echo amount [label]" in commands

    one = node.rpc.help("hello")
    assert one["format-hint"] == "simple"
    assert [e["command"] for e in one["help"]] == ["hello [name]"], one
    one = node.rpc.help("getinfo")
    assert [e["command"].split(" ")[0] for e in one["help"]] == ["getinfo"]

    with pytest.raises(RpcError) as e:
        node.rpc.help("no-such-command")
    assert err_code(e) == -32601


def test_unknown_method_via_pyln(node):
    with pytest.raises(RpcError) as e:
        node.rpc.call("frobnicate", {})
    assert err_code(e) == -32601
    assert "Unknown command 'frobnicate'" in e.value.error["message"]


def test_check(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    assert node.rpc.check("getinfo") == {"command_to_check": "getinfo"}
    assert node.rpc.check("datastore", key=["a"], string="b") == {"command_to_check": "datastore"}
    assert node.rpc.check("hello", name="x") == {"command_to_check": "hello"}
    # check must not execute the command
    assert node.rpc.listdatastore(["a"])["datastore"] == []
    with pytest.raises(RpcError) as e:
        node.rpc.check("datastore")  # missing required key
    assert err_code(e) == -32602
    with pytest.raises(RpcError) as e:
        node.rpc.check("no-such-command")
    assert err_code(e) == -32601


def test_plugin_list(node_factory):
    mp = plugin_path("methods_plugin.py")
    sp = plugin_path("static_plugin.py")
    node = node_factory.get_node(plugins=[mp, sp])
    res = node.rpc.plugin_list()
    assert res["command"] == "list"
    by_name = {p["name"]: p for p in res["plugins"]}
    assert by_name[mp] == {"name": mp, "active": True, "dynamic": True}
    assert by_name[sp] == {"name": sp, "active": True, "dynamic": False}


def test_notifications_command(node):
    assert node.rpc.notifications(enable=True) == {}
    assert node.rpc.notifications(enable=False) == {}
    with pytest.raises(RpcError) as e:
        node.rpc.notifications(enable="yes")
    assert err_code(e) == -32602


def test_stop(node_factory):
    node = node_factory.get_node()
    res, rc = node.stop()
    assert res == {"result": "Shutdown complete"}
    assert rc == 0
    assert not node.rpc_path.exists() or not _can_connect(node.rpc_path)


def _can_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ------------------------------------------------------------------ raw socket

def req(method, params, id=1):
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def assert_alive(node):
    r = RawRpc(node.rpc_path)
    try:
        resp = r.call(req("getinfo", {}, id="alive-check"))
        assert resp["id"] == "alive-check" and "result" in resp, resp
    finally:
        r.close()
    assert node.running()


def test_raw_reply_framing_and_ids(node):
    r = node.raw()
    r.send(req("getinfo", {}, id=12345))
    raw = r.read_raw()
    assert raw.endswith(b"\n\n")
    resp = json.loads(raw)
    assert resp["jsonrpc"] == "2.0"
    assert resp["id"] == 12345 and isinstance(resp["id"], int)
    assert "result" in resp and "error" not in resp
    for weird in ["weird/id:with#chars", "cli:getinfo#1/cln:getinfo#2", "ünïcødé-⚡", ""]:
        resp = r.call(req("getinfo", {}, id=weird))
        assert resp["id"] == weird, resp
    resp = r.call(req("getinfo", [], id=-7))
    assert resp["id"] == -7 and "result" in resp
    r.close()


def test_raw_invalid_json(node):
    r = node.raw()
    r.send(b'{"jsonrpc": "2.0", "id": 1, "method": getinfo, }')
    resp = r.read()
    assert resp is not None, "connection closed without a reply"
    assert resp["error"]["code"] == -32700, resp
    r.close()
    assert_alive(node)


@pytest.mark.parametrize("bad", [
    pytest.param([1, 2, 3], id="array"),
    # raw bytes: valid JSON texts that are not objects (JSON-RPC: -32600, not -32700)
    pytest.param(b'"just a string"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="bool"),
    pytest.param({"jsonrpc": "2.0", "method": "getinfo", "params": {}}, id="no-id"),
    pytest.param({"jsonrpc": "2.0", "id": {"an": "object"}, "method": "getinfo", "params": {}},
                 id="object-id"),
    pytest.param({"jsonrpc": "1.0", "id": 1, "method": "getinfo", "params": {}}, id="jsonrpc-1.0"),
    pytest.param({"id": 1, "method": "getinfo", "params": {}}, id="no-jsonrpc"),
])
def test_raw_invalid_request_null_id(node, bad):
    r = node.raw()
    resp = r.call(bad)
    assert resp is not None, "connection closed without a reply"
    assert resp["error"]["code"] == -32600, resp
    assert resp.get("id") is None, resp
    r.close()
    assert_alive(node)


@pytest.mark.parametrize("bad,what", [
    ({"jsonrpc": "2.0", "id": "m1", "method": "getinfo"}, "params"),
    ({"jsonrpc": "2.0", "id": "m1", "params": {}}, "method"),
    ({"jsonrpc": "2.0", "id": "m1", "method": 42, "params": {}}, "method"),
])
def test_raw_invalid_request_with_id(node, bad, what):
    r = node.raw()
    resp = r.call(bad)
    assert resp["id"] == "m1", resp
    assert resp["error"]["code"] == -32600, resp
    r.close()
    assert_alive(node)


def test_raw_params_neither_object_nor_array(node):
    r = node.raw()
    resp = r.call({"jsonrpc": "2.0", "id": "m2", "method": "getinfo", "params": "a string"})
    assert resp["id"] == "m2", resp
    assert resp["error"]["code"] in (-32600, -32602), resp
    r.close()
    assert_alive(node)


def test_raw_unknown_method(node):
    r = node.raw()
    resp = r.call(req("frobnicate_xyz", {}, id="u1"))
    assert resp["id"] == "u1"
    assert resp["error"]["code"] == -32601
    assert "Unknown command 'frobnicate_xyz'" in resp["error"]["message"], resp
    r.close()


def test_raw_positional_and_named_params(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    r = node.raw()
    named = r.call(req("help", {"command": "getinfo"}, id=1))
    positional = r.call(req("help", ["getinfo"], id=2))
    assert named["result"] == positional["result"]
    # null in a positional array means "omitted"
    res = r.call(req("datastore", [["pos"], "val", None, "create-or-replace"], id=3))
    assert res["result"]["key"] == ["pos"] and res["result"]["string"] == "val", res
    # plugin methods: both forms are forwarded as given
    res = r.call(req("echo", ["x", "y", "z"], id=4))["result"]
    assert (res["a"], res["b"], res["c"], res["params_were"]) == ("x", "y", "z", "list")
    res = r.call(req("echo", {"b": "B", "a": "A"}, id=5))["result"]
    assert (res["a"], res["b"], res["c"], res["params_were"]) == ("A", "B", None, "dict")
    r.close()


@pytest.mark.parametrize("method,params", [
    ("help", {"nonsense": 1}),
    ("getinfo", ["extra"]),
    ("datastore", {}),
    ("datastore", {"key": 5, "string": "x"}),
    ("listconfigs", [1, 2, 3]),
    ("plugin", {"subcommand": "explode"}),
])
def test_raw_bad_params(node, method, params):
    r = node.raw()
    resp = r.call(req(method, params, id="bp"))
    assert resp["id"] == "bp"
    assert resp.get("error", {}).get("code") == -32602, resp
    r.close()


def test_raw_pipelined_requests_one_write(node):
    r = node.raw()
    batch = "".join(json.dumps(req("getinfo", {}, id=f"p{i}")) for i in range(20))
    r.send(batch)  # no delimiter between objects, like pyln and lightning-cli
    ids = set()
    for _ in range(20):
        resp = r.read()
        assert "result" in resp, resp
        ids.add(resp["id"])
    assert ids == {f"p{i}" for i in range(20)}
    r.close()


def test_raw_request_split_across_writes(node):
    r = node.raw()
    data = json.dumps(req("getinfo", {}, id="split")).encode()
    for i in range(0, len(data), 7):
        r.send(data[i:i + 7])
        time.sleep(0.005)  # pacing the client, not synchronisation: pieces in separate reads
    resp = r.read()
    assert resp["id"] == "split" and "result" in resp
    r.close()


def test_raw_half_message_then_disconnect(node):
    for _ in range(5):
        r = node.raw()
        r.send(b'{"jsonrpc": "2.0", "id": 1, "meth')
        r.close()
    r = node.raw()
    r.send(b'{"jsonrpc": "2.0", "id": 2, "method": "getinfo", "params": {}')  # missing }
    r.sock.shutdown(socket.SHUT_WR)
    r.closed_by_peer(timeout=10)
    r.close()
    assert_alive(node)


def test_raw_huge_message(node):
    """A request far over any sane size: the daemon may answer with an error or close the
    connection, but it must not die or stop serving others."""
    r = node.raw()
    total = 0
    outcome = None
    chunk = b"A" * (1 << 20)
    r.sock.settimeout(30)
    try:
        r.send(b'{"jsonrpc": "2.0", "id": "huge", "method": "getinfo", "params": {"x": "')
        for _ in range(32):  # 32 MiB
            r.sock.sendall(chunk)
            total += len(chunk)
        r.send(b'"}}')
        outcome = "sent"
    except (BrokenPipeError, ConnectionResetError):
        outcome = "closed"
        # Anything the daemon wrote before closing must be an error reply.
        try:
            r.sock.settimeout(5)
            pending = r.read()
        except (OSError, AssertionError):
            pending = None
        if pending is not None:
            assert "error" in pending and "result" not in pending, pending
    except socket.timeout:
        outcome = "stalled"
    # Meanwhile and afterwards, other clients are served.
    assert_alive(node)
    if outcome == "sent":
        r.sock.settimeout(60)
        try:
            resp = r.read()
        except (ConnectionResetError, BrokenPipeError):
            resp = None
        if resp is not None:
            assert "error" in resp, f"huge getinfo with bogus param got a result: {str(resp)[:200]}"
    r.close()
    assert_alive(node)


def test_raw_client_disconnects_before_plugin_replies(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    r = node.raw()
    r.send(req("slow", {"seconds": 1}, id="gone"))
    # The plugin has the call: the caller goes away before the answer.
    node.wait_for_log(r"plugin-methods_plugin\.py: slow: holding the call")
    r.close()
    # The plugin answers one request at a time, so this answer comes after the one for the
    # caller that is gone: the node has handled that one when this returns.
    assert node.rpc.call("hello", {"name": "after"}) == {"greeting": "hello after"}
    assert_alive(node)


def test_raw_notifications_forwarded_to_caller(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    r = node.raw()
    en = r.call(req("notifications", {"enable": True}, id="en"))
    assert en == {"jsonrpc": "2.0", "id": "en", "result": {}}
    r.send(req("notify_me", {}, id="nm-1"))
    msgs = []
    while True:
        m = r.read()
        if "id" in m and m.get("method") is None:
            final = m
            break
        msgs.append(m)
    assert final["result"] == {"done": True}
    assert [m["method"] for m in msgs] == ["message", "message"], msgs
    assert msgs[0]["params"]["id"] == "nm-1", "notification id must be the caller's id"
    assert msgs[0]["params"]["message"] == "first message"
    assert msgs[0]["params"]["level"] == "info"
    assert msgs[1]["params"]["message"] == "second message"
    r.send(req("progress_me", {}, id="pg-1"))
    m = r.read()
    assert m["method"] == "progress", m
    assert m["params"]["id"] == "pg-1" and m["params"]["num"] == 1 and m["params"]["total"] == 2
    assert r.read()["result"] == {"done": True}
    r.close()

    # A connection that did not enable notifications gets only the reply.
    r = node.raw()
    resp = r.call(req("notify_me", {}, id="nm-2"))
    assert resp == {"jsonrpc": "2.0", "id": "nm-2", "result": {"done": True}}, resp
    r.close()


def test_many_concurrent_clients(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    errors = []
    nthreads, nreq = 40, 5

    def client(i):
        try:
            r = RawRpc(node.rpc_path)
            for j in range(nreq):
                if j % 3 == 0:
                    resp = r.call(req("getinfo", {}, id=f"c{i}-{j}"))
                    assert "result" in resp, resp
                elif j % 3 == 1:
                    resp = r.call(req("hello", {"name": f"n{i}-{j}"}, id=f"c{i}-{j}"))
                    assert resp["result"] == {"greeting": f"hello n{i}-{j}"}, resp
                else:
                    resp = r.call(req("datastore", {"key": ["conc", str(i), str(j)],
                                                    "string": f"v{i}"}, id=f"c{i}-{j}"))
                    assert resp["result"]["key"] == ["conc", str(i), str(j)], resp
                assert resp["id"] == f"c{i}-{j}", resp
            r.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "some clients never got answers"
    assert not errors, errors[:5]
    entries = node.rpc.listdatastore(["conc"])["datastore"]
    assert len(entries) == nthreads
    assert_alive(node)


def test_pyln_request_notify(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    got = []

    def on_msg(message, progress, request, **kwargs):
        got.append(message)

    with node.rpc.notify(on_msg):
        assert node.rpc.call("notify_me") == {"done": True}
    assert got == ["first message", "second message"]
    got.clear()
    assert node.rpc.call("notify_me") == {"done": True}
    assert got == []


def test_utf8_roundtrip(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    s = "Grüße ⚡ 雷 \u00e9\u0301 \U0001F600"
    assert node.rpc.call("hello", {"name": s}) == {"greeting": f"hello {s}"}
    node.rpc.datastore(["utf8"], string=s)
    assert node.rpc.listdatastore(["utf8"])["datastore"][0]["string"] == s
    r = node.raw()
    raw = json.dumps(req("hello", {"name": s}, id="u"), ensure_ascii=False).encode()
    r.send(raw)
    assert r.read()["result"]["greeting"] == f"hello {s}"
    r.close()


def test_socket_is_replaced_on_restart(node_factory):
    node = node_factory.get_node()
    node.stop()
    node.start()
    wait_for(lambda: node.rpc_path.exists())
    assert_alive(node)


# ------------------------------------------------------------------ limits (--fulgur-rpc-*)

def test_request_stalled_after_its_first_byte_is_closed(node_factory):
    """The request timeout starts with a request's first byte, even on a fresh connection
    (it used to apply only when bytes were already buffered); an idle connection is kept."""
    node = node_factory.get_node(options={"fulgur-rpc-request-timeout": 1})
    idle = node.raw()
    stalled = node.raw()
    stalled.send(b"{")
    assert stalled.closed_by_peer(timeout=30), "stalled request not closed"
    node.wait_for_log(r"did not arrive within 1s of its first byte")
    half = node.raw()
    half.send(b'{"jsonrpc": "2.0", "id": 1, "meth')
    assert half.closed_by_peer(timeout=30)
    assert_alive(node)
    # The idle connection outlived both and still works.
    resp = idle.call(req("getinfo", {}, id="idle"))
    assert resp["id"] == "idle" and "result" in resp, resp
    for c in (idle, stalled, half):
        c.close()


def test_too_many_connections_get_an_error(node_factory):
    node = node_factory.get_node(options={"fulgur-rpc-max-connections": 3})
    held = [node.raw() for _ in range(3)]
    for h in held:  # all three are served: they hold the slots
        assert "result" in h.call(req("getinfo", {}, id="h"))
    extra = node.raw()
    resp = extra.read()
    assert resp is not None and resp["error"]["code"] == -1, resp
    assert "Too many RPC connections (limit 3)" in resp["error"]["message"], resp
    assert extra.closed_by_peer(timeout=30)
    extra.close()
    assert "result" in held[0].call(req("getinfo", {}, id="still"))
    held.pop().close()

    def served():
        r = node.raw()
        try:
            resp = r.call(req("getinfo", {}, id="again"))
            return resp is not None and "result" in resp
        except OSError:
            return False
        finally:
            r.close()
    wait_for(served, what="a freed slot serves a new connection")
    for h in held:
        h.close()


def test_request_over_max_size_is_refused(node_factory):
    node = node_factory.get_node(options={"fulgur-rpc-max-request": 1000})
    r = node.raw()
    small = r.call(req("getinfo", {"x": "a" * 100}, id="small"))
    assert small["error"]["code"] == -32602, small  # parsed: a params error, not a size one
    big = node.raw()
    big.send(json.dumps(req("getinfo", {"x": "a" * 2000}, id="big")))
    resp = big.read()
    assert resp is not None and resp["error"]["code"] == -32600, resp
    assert "larger than 1000 bytes" in resp["error"]["message"], resp
    assert big.closed_by_peer(timeout=30)
    big.close()
    r.close()
    assert_alive(node)


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "in-params"])
def test_deep_nesting_is_a_parse_error(node, wrap):
    depth = 100_000
    nested = "[" * depth + "]" * depth
    body = (f'{{"jsonrpc": "2.0", "id": "deep", "method": "getinfo", "params": {nested}}}'
            if wrap else nested)
    r = node.raw()
    r.send(body)
    resp = r.read()
    assert resp is not None and resp["error"]["code"] == -32700, resp
    assert "recursion limit" in resp["error"]["message"], resp
    r.close()
    assert_alive(node)


def test_client_not_reading_its_replies_is_paused_not_buffered(node):
    """A client pipelining requests without reading the replies: once 32 MiB of replies wait
    for it, fulgurd stops reading its requests (its writes then block) instead of queueing
    replies without bound; other clients are served meanwhile; when it reads, every reply
    arrives and the rest of its requests are served."""
    import threading
    r = node.raw()
    mark = node.log_mark()
    sent = []
    stop = threading.Event()

    def sender():
        i = 0
        while not stop.is_set():
            r.send(json.dumps(req("help", {}, id=i)))
            sent.append(i)
            i += 1
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    node.wait_for_log(r"RPC client not reading its replies", start=mark)
    stop.set()
    assert_alive(node)
    ids = set()
    while t.is_alive() or len(ids) < len(sent):
        resp = r.read()
        assert resp is not None and "result" in resp, resp
        ids.add(resp["id"])
    assert ids == set(sent)
    r.close()
