#!/usr/bin/env python3
"""Benchmark plugin (tests/benches/rpc.rs): a pyln-client `hello [name]` method, the
Python counterpart of the SDK example `hello`, to time an RPC served by a pyln plugin."""
from pyln.client import Plugin

plugin = Plugin()


@plugin.method("hello")
def hello(plugin, name="world"):
    """Greet someone."""
    return {"message": "Hello, {}!".format(name)}


plugin.run()
