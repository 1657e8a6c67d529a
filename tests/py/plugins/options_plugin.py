#!/usr/bin/env python3
"""Test plugin: one option of every type, a dynamic option that can refuse a value, and
methods reporting what the daemon sent (typed init options, configuration, env, raw ids)."""
import os

from pyln.client import Plugin, RpcException  # noqa: F401

plugin = Plugin()
plugin.seen = []          # (id, method) of every request/notification received
plugin.init_params = None
plugin.changes = []       # (name, value) passed to on_change

_orig_parse = plugin._parse_request


def _recording_parse(jsrequest):
    plugin.seen.append({"id": jsrequest.get("id"), "method": jsrequest.get("method")})
    return _orig_parse(jsrequest)


plugin._parse_request = _recording_parse


def on_dyn_change(plugin, name, value):
    plugin.changes.append([name, value])
    if int(value) > 100:
        raise ValueError("dyn_opt must be <= 100")


plugin.add_option("str_opt", "default-str", "a string option")
plugin.add_option("int_opt", 42, "an int option", opt_type="int")
plugin.add_option("bool_opt", False, "a bool option", opt_type="bool")
plugin.add_flag_option("flag_opt", "a flag option")
plugin.add_option("multi_opt", None, "a multi string option", multi=True)
plugin.add_option("dyn_opt", 7, "a dynamic int option, values > 100 refused",
                  opt_type="int", dynamic=True, on_change=on_dyn_change)


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    plugin.init_params = {"options": options, "configuration": configuration}
    plugin.log("options_plugin initialised")


@plugin.method("getinit")
def getinit(plugin):
    # What init delivered, plus the environment the plugin runs in.
    return {
        "init": plugin.init_params,
        "env": {k: os.environ.get(k) for k in ("LIGHTNINGD_PLUGIN", "LIGHTNINGD_VERSION")},
        "cwd": os.getcwd(),
        # set by pyln from getmanifest's "allow-deprecated-apis" (True if it was absent)
        "deprecated_apis": getattr(plugin, "deprecated_apis", None),
        "seen": plugin.seen,
    }


@plugin.method("getopts")
def getopts(plugin):
    # Current option values as the plugin sees them.
    return {
        "values": {name: plugin.get_option(name) for name in plugin.options},
        "changes": plugin.changes,
    }


plugin.run()
