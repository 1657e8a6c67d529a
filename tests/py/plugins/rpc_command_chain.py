"""Shared by the rpc_command hook-chain test plugins (hook_a.py, hook_b.py, hook_c.py); a
module, not a plugin (not executable)."""
import json
import os

from pyln.client import Plugin


def record(name, payload):
    """Appends one JSON line to <cwd>/rpc_command_order.jsonl (plugin name and the full hook
    payload) before the plugin answers, so a test can read the order in which the chain
    called the plugins and validate the payloads."""
    with open(os.path.join(os.getcwd(), "rpc_command_order.jsonl"), "a") as f:
        f.write(json.dumps({"plugin": name, "payload": payload}) + "\n")
        f.flush()


def key_of(params):
    """The datastore key of a `listdatastore` call's params, as a list (or None)."""
    if isinstance(params, dict):
        key = params.get("key")
    elif isinstance(params, list) and params:
        key = params[0]
    else:
        key = None
    return [key] if isinstance(key, str) else key


def run(name, answer, **order):
    """Runs the plugin `name` on the rpc_command hook (`order`: pyln's before=/after=). It
    records every call, then answers a `listdatastore` call with `answer(rpc_command, key)`
    when that is not None, and continues everything else."""
    plugin = Plugin()

    @plugin.hook("rpc_command", **order)
    def on_rpc_command(plugin, rpc_command, **kwargs):
        record(name, {"rpc_command": rpc_command, **kwargs})
        if rpc_command.get("method") == "listdatastore":
            result = answer(rpc_command, key_of(rpc_command.get("params")))
            if result is not None:
                return result
        return {"result": "continue"}

    plugin.run()
