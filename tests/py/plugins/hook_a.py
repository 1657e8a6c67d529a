#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. Second in the chain (hook_c.py declares before=[hook_a.py]).
Returns a custom result for `listdatastore hookreturn` and a custom error for
`listdatastore hookerror`. Every call is recorded
(`rpc_command_chain.record`) before it answers."""
from pyln.client import Plugin

from rpc_command_chain import key_of, record

NAME = "hook_a.py"
plugin = Plugin()


@plugin.hook("rpc_command")
def on_rpc_command(plugin, rpc_command, **kwargs):
    record(NAME, {"rpc_command": rpc_command, **kwargs})
    method = rpc_command.get("method")
    key = key_of(rpc_command.get("params"))
    if method == "listdatastore" and key == ["hookreturn"]:
        return {"return": {"result": {"datastore": [
            {"key": ["hook_a", "custom"], "string": "from hook_a"}]}}}
    if method == "listdatastore" and key == ["hookerror"]:
        return {"return": {"error": {"code": 4242, "message": "blocked by hook_a"}}}
    return {"result": "continue"}


plugin.run()
