#!/usr/bin/env python3
"""Test plugin (plain CLN plugin protocol, no pyln): answers `peer_connected` with
`disconnect` when the option `peer-gate-refuse` is true (`continue` otherwise), and appends
every `connect`/`disconnect` notification and hook payload, one JSON per line, to the file
named by `peer-gate-file`."""
import json
import sys

opts = {"file": None, "refuse": False}


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n\n")
    sys.stdout.flush()


def record(kind, params):
    if opts["file"]:
        with open(opts["file"], "a") as f:
            f.write(json.dumps({"kind": kind, "params": params}) + "\n")


def messages():
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


for msg in messages():
    method = msg.get("method")
    mid = msg.get("id")
    params = msg.get("params", {})
    if method == "getmanifest":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "options": [
                {"name": "peer-gate-file", "type": "string", "default": "", "description": "log file"},
                {"name": "peer-gate-refuse", "type": "bool", "default": False, "description": "disconnect peers"},
            ],
            "rpcmethods": [],
            "subscriptions": ["connect", "disconnect"],
            "hooks": [{"name": "peer_connected"}],
            "dynamic": False,
        }})
    elif method == "init":
        o = params.get("options", {})
        opts["file"] = o.get("peer-gate-file") or None
        opts["refuse"] = o.get("peer-gate-refuse") in (True, "true")
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    elif method == "peer_connected":
        record("peer_connected", params)
        if opts["refuse"]:
            send({"jsonrpc": "2.0", "id": mid, "result": {"result": "disconnect", "error_message": "go away"}})
        else:
            send({"jsonrpc": "2.0", "id": mid, "result": {"result": "continue"}})
    elif method in ("connect", "disconnect"):
        record(method, params)
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "unknown"}})
