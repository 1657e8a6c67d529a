#!/usr/bin/env python3
"""Benchmark plugin (tests/benches/rpc.rs): an `rpc_command` hook that always continues,
to time what one pyln-client hook adds to every RPC call."""
from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("rpc_command")
def on_rpc_command(plugin, rpc_command, **kwargs):
    return {"result": "continue"}


plugin.run()
