#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. Second in the chain (hook_c.py declares before=[hook_a.py]).
Returns a custom result for `listdatastore hookreturn` and a custom error for
`listdatastore hookerror`.

Every call is appended as one JSON line to <cwd>/rpc_command_order.jsonl (plugin name,
request id, method, full hook payload) before answering, so a test can read the order in
which the chain called the plugins and validate the payloads."""
import json
import os

from pyln.client import Plugin

NAME = "hook_a.py"
plugin = Plugin()


def record(payload):
    with open(os.path.join(os.getcwd(), "rpc_command_order.jsonl"), "a") as f:
        f.write(json.dumps({"plugin": NAME, "payload": payload}) + "\n")
        f.flush()


def key_of(params):
    if isinstance(params, dict):
        key = params.get("key")
    elif isinstance(params, list) and params:
        key = params[0]
    else:
        key = None
    return [key] if isinstance(key, str) else key


@plugin.hook("rpc_command")
def on_rpc_command(plugin, rpc_command, **kwargs):
    record({"rpc_command": rpc_command, **kwargs})
    method = rpc_command.get("method")
    key = key_of(rpc_command.get("params"))
    if method == "listdatastore" and key == ["hookreturn"]:
        return {"return": {"result": {"datastore": [
            {"key": ["hook_a", "custom"], "string": "from hook_a"}]}}}
    if method == "listdatastore" and key == ["hookerror"]:
        return {"return": {"error": {"code": 4242, "message": "blocked by hook_a"}}}
    return {"result": "continue"}


plugin.run()
