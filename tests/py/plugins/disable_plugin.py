#!/usr/bin/env python3
"""Test plugin that disables itself in its init reply: the daemon must drop it quietly
(no error at startup), and `plugin start` must report why."""
from pyln.client import Plugin

plugin = Plugin()


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    return {"disable": "not today, thanks"}


@plugin.method("disabled_hello")
def disabled_hello(plugin):
    return {"should": "never be callable"}


plugin.run()
