#!/usr/bin/env python3
"""Test plugin (plain CLN plugin protocol, no pyln): registers only two of the five Bitcoin
backend methods, `getchaininfo` and `estimatefees`; fulgurd must refuse to start with it.
Every request gets an empty result."""
from rawplugin import messages, reply

for msg in messages():
    result = {}
    if msg.get("method") == "getmanifest":
        result = {"options": [], "rpcmethods": [
            {"name": "getchaininfo", "usage": "", "description": "x"},
            {"name": "estimatefees", "usage": "", "description": "x"},
        ]}
    if "id" in msg:
        reply(msg["id"], result)
