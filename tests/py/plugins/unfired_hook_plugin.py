#!/usr/bin/env python3
"""Test plugin for test_plugins.py: registers the hook named by the environment variable
UNFIRED_HOOK (db_write, commitment_revocation, ...), one Fulgur never calls. The node must
refuse it at registration with the reason, never accept it silently."""
import os

from pyln.client import Plugin

plugin = Plugin()


def on_hook(plugin, **kwargs):
    return {"result": "continue"}


plugin.add_hook(os.environ.get("UNFIRED_HOOK", "db_write"), on_hook)
plugin.run()
