#!/usr/bin/env python3
"""pyln-client plugin for test_watchtower.py, a watchtower client as CLN's test has one:
registers `commitment_revocation` and appends each call's params, one JSON object per line,
to `watchtower.jsonl` in its working directory (the node's network directory)."""
import json

from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("commitment_revocation")
def on_commitment_revocation(plugin, **params):
    with open("watchtower.jsonl", "a") as f:
        f.write(json.dumps(params) + "\n")
    return {"result": "continue"}


plugin.run()
