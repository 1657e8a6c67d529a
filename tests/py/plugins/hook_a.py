#!/usr/bin/env python3
"""Test plugin on the rpc_command hook. Second in the chain (hook_c.py declares before=[hook_a.py]).
Returns a custom result for `listdatastore hookreturn` and a custom error for
`listdatastore hookerror`. Every call is recorded
(`rpc_command_chain.record`) before it answers."""
from rpc_command_chain import run


def answer(rpc_command, key):
    if key == ["hookreturn"]:
        return {"return": {"result": {"datastore": [
            {"key": ["hook_a", "custom"], "string": "from hook_a"}]}}}
    if key == ["hookerror"]:
        return {"return": {"error": {"code": 4242, "message": "blocked by hook_a"}}}
    return None


run("hook_a.py", answer)
