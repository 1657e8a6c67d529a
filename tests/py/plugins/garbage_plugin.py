#!/usr/bin/env python3
"""Test plugin that writes garbage to its stdout (the JSON-RPC channel) when asked:
either text that is not JSON, or a JSON object without the "jsonrpc" member.
The daemon must kill it and keep going."""
import os

from pyln.client import Plugin

plugin = Plugin()


@plugin.method("garbage_alive")
def alive(plugin):
    return {"alive": True}


@plugin.method("garbage_text")
def garbage_text(plugin):
    # Bypasses pyln's monkey-patched sys.stdout: raw bytes on fd 1.
    os.write(1, b"this is definitely not JSON {{{\n\n")
    return {"unreachable": "the daemon should have killed us"}


@plugin.method("garbage_nojsonrpc")
def garbage_nojsonrpc(plugin):
    os.write(1, b'{"hello": "world", "id": 12}\n\n')
    return {"unreachable": "the daemon should have killed us"}


plugin.run()
