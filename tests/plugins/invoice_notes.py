#!/usr/bin/env python3
"""Test plugin (plain CLN plugin protocol, no pyln): appends every `invoice_creation` and
`invoice_payment` notification, one JSON per line, to the file named by the option
`invoice-notes-file`."""
import json
import sys

opts = {"file": None}


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n\n")
    sys.stdout.flush()


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
                {"name": "invoice-notes-file", "type": "string", "default": "", "description": "log file"},
            ],
            "rpcmethods": [],
            "subscriptions": ["invoice_creation", "invoice_payment"],
            "hooks": [],
            "dynamic": False,
        }})
    elif method == "init":
        opts["file"] = params.get("options", {}).get("invoice-notes-file") or None
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    elif method in ("invoice_creation", "invoice_payment"):
        if opts["file"]:
            with open(opts["file"], "a") as f:
                f.write(json.dumps({"kind": method, "params": params}) + "\n")
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "unknown"}})
