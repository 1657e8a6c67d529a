#!/usr/bin/env python3
"""Test plugin that dies in the middle of an RPC call (os._exit inside a method), leaving
the call unanswered.  Used as a normal and as an --important-plugin."""
import os

from pyln.client import Plugin

plugin = Plugin()


@plugin.method("crash_alive")
def alive(plugin):
    return {"alive": True, "pid": os.getpid()}


@plugin.method("crash_now")
def crash_now(plugin, code=1):
    # Exits the process without replying.
    os._exit(int(code))


plugin.run()
