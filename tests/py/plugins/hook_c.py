#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. First in the chain (before=[hook_a.py]).
Replaces `listdatastore hookreplace` by `listdatastore hookreplaced`. Every call is recorded
(`rpc_command_chain.record`) before it answers."""
from rpc_command_chain import run


def answer(rpc_command, key):
    if key == ["hookreplace"]:
        return {"replace": {"jsonrpc": "2.0", "id": rpc_command.get("id"),
                            "method": "listdatastore", "params": {"key": ["hookreplaced"]}}}
    return None


run("hook_c.py", answer, before=["hook_a.py"])
