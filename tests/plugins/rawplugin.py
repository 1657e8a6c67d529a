"""Shared by the test plugins in this folder that speak CLN's plugin protocol by hand (no
pyln): the JSON-RPC messages fulgurd writes to stdin, and what they write back."""
import json
import sys


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n\n")
    sys.stdout.flush()


def reply(mid, result):
    send({"jsonrpc": "2.0", "id": mid, "result": result})


def refuse_unknown(mid):
    """The error for a request the plugin does not serve (notifications, without an id, get none)."""
    if mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "unknown"}})


def record(path, kind, params):
    """Appends `{"kind": kind, "params": params}` as one JSON line to `path` (if set)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"kind": kind, "params": params}) + "\n")


def messages():
    """Each message read from stdin, decoded, until stdin closes."""
    dec = json.JSONDecoder()
    buf = ""
    for chunk in iter(lambda: sys.stdin.readline(), ""):
        buf += chunk
        while True:
            s = buf.lstrip()
            if not s:
                buf = ""
                break
            try:
                obj, end = dec.raw_decode(s)
            except ValueError:
                break
            buf = s[end:]
            yield obj


def requests():
    """`(method, id, params)` of each message read from stdin, until stdin closes."""
    for msg in messages():
        yield msg.get("method"), msg.get("id"), msg.get("params", {})
