#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. Third in the chain (after=[hook_a.py]).
Tries to return its own result for `listdatastore hookreplace`, which hook_c.py already
replaced: the daemon must ignore it (first modification wins). Every call is recorded
(`rpc_command_chain.record`) before it answers."""
from pyln.client import Plugin

from rpc_command_chain import key_of, record

NAME = "hook_b.py"
plugin = Plugin()


@plugin.hook("rpc_command", after=["hook_a.py"])
def on_rpc_command(plugin, rpc_command, **kwargs):
    record(NAME, {"rpc_command": rpc_command, **kwargs})
    method = rpc_command.get("method")
    key = key_of(rpc_command.get("params"))
    if method == "listdatastore" and key == ["hookreplace"]:
        return {"return": {"result": {"datastore": [
            {"key": ["hook_b"], "string": "hook_b must not win"}]}}}
    return {"result": "continue"}


plugin.run()
