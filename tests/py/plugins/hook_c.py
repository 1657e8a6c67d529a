#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. First in the chain (before=[hook_a.py]).
Replaces `listdatastore hookreplace` by `listdatastore hookreplaced`. Every call is recorded
(`rpc_command_chain.record`) before it answers."""
from pyln.client import Plugin

from rpc_command_chain import key_of, record

NAME = "hook_c.py"
plugin = Plugin()


@plugin.hook("rpc_command", before=["hook_a.py"])
def on_rpc_command(plugin, rpc_command, **kwargs):
    record(NAME, {"rpc_command": rpc_command, **kwargs})
    method = rpc_command.get("method")
    key = key_of(rpc_command.get("params"))
    if method == "listdatastore" and key == ["hookreplace"]:
        return {"replace": {"jsonrpc": "2.0", "id": rpc_command.get("id"),
                            "method": "listdatastore", "params": {"key": ["hookreplaced"]}}}
    return {"result": "continue"}


plugin.run()
