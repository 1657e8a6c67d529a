#!/usr/bin/env python3
"""pyln-client plugin for test_channels_hooks.py: subscribes to the channel-side
notifications (channel_opened, channel_state_changed, connect, disconnect, block_added,
coin_movement, custommsg, balance_snapshot) and registers the `custommsg` hook (answering `continue`).
Every notification and hook call is recorded as its raw JSON-RPC envelope (method + params,
as read from stdin, before pyln unwraps anything); `chan-notes` lists them."""
import copy
import threading

from pyln.client import Plugin

plugin = Plugin()
plugin.lock = threading.Lock()
plugin.calls = []  # {"method", "params", "hook": bool}
_orig_parse = plugin._parse_request

TOPICS = ("channel_opened", "channel_state_changed", "connect", "disconnect", "block_added",
          "coin_movement", "custommsg", "balance_snapshot")


def _recording_parse(jsrequest):
    method = jsrequest.get("method")
    hook = jsrequest.get("id") is not None and method == "custommsg"
    if hook or (jsrequest.get("id") is None and method in TOPICS):
        with plugin.lock:
            plugin.calls.append({"method": method, "hook": hook,
                                 "params": copy.deepcopy(jsrequest.get("params"))})
    return _orig_parse(jsrequest)


plugin._parse_request = _recording_parse


def _ignore(plugin, **kwargs):
    pass


for _topic in TOPICS:
    plugin.add_subscription(_topic, _ignore)


@plugin.hook("custommsg")
def on_custommsg(peer_id, payload, plugin, **kwargs):
    return {"result": "continue"}


@plugin.method("chan-notes")
def chan_notes(plugin, method=None, hook=None, **kwargs):
    """Recorded calls, optionally only those of one method (and hook or notification)."""
    with plugin.lock:
        out = [c for c in plugin.calls
               if (method is None or c["method"] == method)
               and (hook is None or c["hook"] == hook)]
    return {"calls": out}


plugin.run()
