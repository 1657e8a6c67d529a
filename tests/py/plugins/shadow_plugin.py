#!/usr/bin/env python3
"""Test plugin that tries to register `getinfo`, a built-in command name.  The daemon must
refuse it (kill the plugin) and keep its own getinfo."""
from pyln.client import Plugin

plugin = Plugin()


@plugin.method("getinfo")
def getinfo(plugin):
    return {"shadow": True}


plugin.run()
