#!/usr/bin/env python3
"""Test plugin meant to be started and stopped at runtime (`plugin start|stop`), with an
option `greeting` settable at start time, and a flag `shout`."""
from pyln.client import Plugin

plugin = Plugin(dynamic=True)
plugin.add_option("greeting", "hello", "the greeting to use")
plugin.add_flag_option("shout", "upper-case the greeting")


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    plugin.startup_flag = configuration.get("startup")


@plugin.method("greet")
def greet(plugin, name="you"):
    g = f"{plugin.get_option('greeting')} {name}"
    if plugin.get_option("shout"):
        g = g.upper()
    return {"greeting": g, "startup": plugin.startup_flag}


plugin.run()
