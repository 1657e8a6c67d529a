#!/usr/bin/env python3
"""Test plugin answering the rpc_command hook with malformed replies for
`listdatastore badhook*` keys.  The daemon must log it at BROKEN (naming plugin and hook)
and apply the hook's safe default (continue: the command runs normally).  For
`badhook-crash` it dies in the middle of the hook call: the chain must go on without it."""
import os

from pyln.client import Plugin

plugin = Plugin()


def key_of(params):
    key = params.get("key") if isinstance(params, dict) else (params[0] if params else None)
    return [key] if isinstance(key, str) else key


@plugin.hook("rpc_command")
def on_rpc_command(plugin, rpc_command, **kwargs):
    key = key_of(rpc_command.get("params")) if rpc_command.get("method") == "listdatastore" else None
    if key == ["badhook-result"]:
        return {"result": "bogus-verdict"}
    if key == ["badhook-shape"]:
        return {"neither": "result nor replace nor return"}
    if key == ["badhook-crash"]:
        os._exit(1)  # dies while the daemon waits for its hook answer
    if key == ["badhook-replace"]:
        return {"replace": {"jsonrpc": "2.0", "id": "x", "method": "no-such-method", "params": {}}}
    return {"result": "continue"}


plugin.run()
