#!/usr/bin/env python3
"""Test plugin declaring dynamic: false — it may only be loaded at startup and cannot be
stopped or started with the `plugin` RPC while the node runs."""
from pyln.client import Plugin

plugin = Plugin(dynamic=False)


@plugin.method("static_hello")
def static_hello(plugin):
    return {"static": True}


plugin.run()
