#!/usr/bin/env python3
"""Test plugin (plain CLN plugin protocol, no pyln): appends every `invoice_creation` and
`invoice_payment` notification, one JSON per line, to the file named by the option
`invoice-notes-file`."""
from rawplugin import record, refuse_unknown, reply, requests

opts = {"file": None}

for method, mid, params in requests():
    if method == "getmanifest":
        reply(mid, {
            "options": [
                {"name": "invoice-notes-file", "type": "string", "default": "", "description": "log file"},
            ],
            "rpcmethods": [],
            "subscriptions": ["invoice_creation", "invoice_payment"],
            "hooks": [],
            "dynamic": False,
        })
    elif method == "init":
        opts["file"] = params.get("options", {}).get("invoice-notes-file") or None
        reply(mid, {})
    elif method in ("invoice_creation", "invoice_payment"):
        record(opts["file"], method, params)
    else:
        refuse_unknown(mid)
