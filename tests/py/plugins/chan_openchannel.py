#!/usr/bin/env python3
"""pyln-client plugin for test_channels_hooks.py: answers the `openchannel` hook.
`chan-open-mode` (option, also settable with the `chan-open-set` method) is `reject` (answer
`{"result":"reject","error_message":"no thanks"}`) or `continue`; `chan-open-set` may also
give `extra`, fields added to the answer (CLN's `close_to`, `mindepth`, `reserve`). Every
call's raw params are kept and listed by `chan-open-seen`."""
import copy

from pyln.client import Plugin

plugin = Plugin()
plugin.seen = []
_orig_parse = plugin._parse_request


def _recording_parse(jsrequest):
    if jsrequest.get("method") == "openchannel" and jsrequest.get("id") is not None:
        plugin.seen.append(copy.deepcopy(jsrequest.get("params")))
    return _orig_parse(jsrequest)


plugin._parse_request = _recording_parse
plugin.add_option("chan-open-mode", "reject", "reject or continue")
plugin.mode = None
plugin.extra = {}


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    plugin.mode = options["chan-open-mode"]


@plugin.hook("openchannel")
def on_openchannel(openchannel, plugin, **kwargs):
    if plugin.mode == "reject":
        return {"result": "reject", "error_message": "no thanks", **plugin.extra}
    return {"result": "continue", **plugin.extra}


@plugin.method("chan-open-set")
def chan_open_set(plugin, mode, extra=None):
    plugin.mode = mode
    plugin.extra = extra or {}
    return {"mode": mode}


@plugin.method("chan-open-seen")
def chan_open_seen(plugin):
    return {"seen": plugin.seen}


plugin.run()
