#!/usr/bin/env python3
"""Test plugin: subscribes to plugin_started, plugin_stopped, shutdown and the custom topic
`fulgur_custom` (emitted by emitter_plugin.py); records every notification, raw envelope
included.  On `shutdown` it writes what it got to <cwd>/notify_plugin.shutdown.json and
exits, as a well-behaved plugin must."""
import copy
import json
import os

from pyln.client import Plugin

plugin = Plugin()
plugin.raw = []        # raw envelopes of notifications as read from stdin
plugin.got = []        # {"topic", "kwargs"} as pyln handed them to the handlers
_orig_parse = plugin._parse_request


def _recording_parse(jsrequest):
    if jsrequest.get("id") is None:
        plugin.raw.append(copy.deepcopy(jsrequest))
    return _orig_parse(jsrequest)


plugin._parse_request = _recording_parse


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


@plugin.subscribe("plugin_started")
def on_started(plugin, plugin_started, **kwargs):
    plugin.got.append({"topic": "plugin_started", "payload": plugin_started})


@plugin.subscribe("plugin_stopped")
def on_stopped(plugin, plugin_stopped, **kwargs):
    plugin.got.append({"topic": "plugin_stopped", "payload": plugin_stopped})


@plugin.subscribe("fulgur_custom")
def on_custom(plugin, **kwargs):
    plugin.got.append({"topic": "fulgur_custom", "kwargs": _jsonable(kwargs)})


@plugin.subscribe("shutdown")
def on_shutdown(plugin, **kwargs):
    record = {"kwargs": _jsonable(kwargs), "raw": plugin.raw[-1] if plugin.raw else None}
    path = os.path.join(os.getcwd(), "notify_plugin.shutdown.json")
    with open(path, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os._exit(0)


@plugin.method("notifications_received")
def received(plugin):
    return {"got": plugin.got, "raw": plugin.raw}


plugin.run()
