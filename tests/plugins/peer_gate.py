#!/usr/bin/env python3
"""Test plugin (plain CLN plugin protocol, no pyln): answers `peer_connected` with
`disconnect` when the option `peer-gate-refuse` is true (`continue` otherwise), and appends
every `connect`/`disconnect` notification and hook payload, one JSON per line, to the file
named by `peer-gate-file`."""
from rawplugin import record, refuse_unknown, reply, requests

opts = {"file": None, "refuse": False}

for method, mid, params in requests():
    if method == "getmanifest":
        reply(mid, {
            "options": [
                {"name": "peer-gate-file", "type": "string", "default": "", "description": "log file"},
                {"name": "peer-gate-refuse", "type": "bool", "default": False, "description": "disconnect peers"},
            ],
            "rpcmethods": [],
            "subscriptions": ["connect", "disconnect"],
            "hooks": [{"name": "peer_connected"}],
            "dynamic": False,
        })
    elif method == "init":
        o = params.get("options", {})
        opts["file"] = o.get("peer-gate-file") or None
        opts["refuse"] = o.get("peer-gate-refuse") in (True, "true")
        reply(mid, {})
    elif method == "peer_connected":
        record(opts["file"], "peer_connected", params)
        if opts["refuse"]:
            reply(mid, {"result": "disconnect", "error_message": "go away"})
        else:
            reply(mid, {"result": "continue"})
    elif method in ("connect", "disconnect"):
        record(opts["file"], method, params)
    else:
        refuse_unknown(mid)
