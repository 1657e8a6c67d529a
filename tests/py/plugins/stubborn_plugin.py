#!/usr/bin/env python3
"""Test plugin that subscribes to `shutdown` but never exits: the daemon must kill it
after its grace period and still finish `stop`.  Writes its pid to <cwd>/stubborn.pid."""
import os

from pyln.client import Plugin

plugin = Plugin()


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    with open(os.path.join(os.getcwd(), "stubborn.pid"), "w") as f:
        f.write(str(os.getpid()))


@plugin.subscribe("shutdown")
def on_shutdown(plugin, **kwargs):
    plugin.log("stubborn_plugin got shutdown and ignores it")


@plugin.method("stubborn_pid")
def stubborn_pid(plugin):
    return {"pid": os.getpid()}


plugin.run()
