#!/usr/bin/env python3
"""Test plugin: declares the custom notification topic `fulgur_custom` and emits it on
request; can also emit an undeclared topic (which the daemon must drop)."""
from pyln.client import Plugin

plugin = Plugin()
plugin.add_notification_topic("fulgur_custom")


@plugin.method("emit")
def emit(plugin, value, count=1):
    for i in range(int(count)):
        plugin.notify("fulgur_custom", {"value": value, "seq": i})
    return {"emitted": int(count)}


@plugin.method("emit_undeclared")
def emit_undeclared(plugin, value):
    plugin.notify("fulgur_undeclared", {"value": value})
    return {"emitted": 1}


plugin.run()
