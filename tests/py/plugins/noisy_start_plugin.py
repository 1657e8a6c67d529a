#!/usr/bin/env python3
"""Test plugin with the classic mistake: it prints to stdout before pyln takes over
stdout, so the first bytes the daemon reads are not JSON.  The daemon must kill it and
start normally."""
import sys

print("Hello from noisy_start_plugin, this is not JSON-RPC")
sys.stdout.flush()

from pyln.client import Plugin  # noqa: E402

plugin = Plugin()


@plugin.method("noisy_hello")
def noisy_hello(plugin):
    return {"noisy": True}


plugin.run()
