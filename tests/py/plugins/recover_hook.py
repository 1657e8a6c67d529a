#!/usr/bin/env python3
"""pyln-client plugin for test_recovery.py: registers the `recover` hook, as CLN's recover
plugin does, and appends each call's params, one JSON object per line, to
`recover-hook.jsonl` in its working directory (the node's network directory)."""
import json

from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("recover")
def on_recover(plugin, **params):
    with open("recover-hook.jsonl", "a") as f:
        f.write(json.dumps(params) + "\n")
    return {"result": "continue"}


plugin.run()
