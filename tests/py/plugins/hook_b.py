#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. Third in the chain (after=[hook_a.py]).
Tries to return its own result for `listdatastore hookreplace`, which hook_c.py already
replaced: the daemon must ignore it (first modification wins). Every call is recorded
(`rpc_command_chain.record`) before it answers."""
from rpc_command_chain import run


def answer(rpc_command, key):
    if key == ["hookreplace"]:
        return {"return": {"result": {"datastore": [
            {"key": ["hook_b"], "string": "hook_b must not win"}]}}}
    return None


run("hook_b.py", answer, after=["hook_a.py"])
