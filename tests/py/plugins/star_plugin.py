#!/usr/bin/env python3
"""Test plugin: subscribes to `*` and records every notification topic it receives.
Exits on `shutdown` after writing <cwd>/star_plugin.shutdown.json."""
import json
import os

from pyln.client import Plugin

plugin = Plugin()
plugin.got = []


@plugin.subscribe("*")
def on_any(plugin, request, **kwargs):
    params = json.loads(json.dumps(kwargs, default=str))
    plugin.got.append({"topic": request.method, "params": params})
    if request.method == "shutdown":
        with open(os.path.join(os.getcwd(), "star_plugin.shutdown.json"), "w") as f:
            json.dump(plugin.got, f)
        os._exit(0)


@plugin.method("star_received")
def star_received(plugin):
    return {"got": plugin.got}


plugin.run()
