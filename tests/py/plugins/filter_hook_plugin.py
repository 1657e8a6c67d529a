#!/usr/bin/env python3
"""Test plugin on rpc_command with `filters: ["listdatastore", "hello"]` (CLN v25.12+):
the daemon must only call it for those methods.  Records each call's method in
<cwd>/filter_hook_calls.txt."""
import os

from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("rpc_command", filters=["listdatastore", "hello"])
def on_rpc_command(plugin, rpc_command, **kwargs):
    with open(os.path.join(os.getcwd(), "filter_hook_calls.txt"), "a") as f:
        f.write(rpc_command["method"] + "\n")
    return {"result": "continue"}


plugin.run()
