#!/usr/bin/env python3
"""Adds REST paths through clnrest's `clnrest-register-path` when it starts, as a plugin
that wants its own URLs would (the cases of CLN's test_dynamic_path_matching)."""
from pyln.client import Plugin

plugin = Plugin()


@plugin.method("rest-one")
def rest_one(plugin):
    return {"answer": "one"}


@plugin.method("rest-two")
def rest_two(plugin):
    return {"answer": "two"}


@plugin.method("rest-capture")
def rest_capture(plugin, version, capture):
    return {"version": version, "capture": capture}


@plugin.init()
def init(options, configuration, plugin):
    register = lambda *args: plugin.rpc.call("clnrest-register-path", list(args))  # noqa: E731
    # Open to anyone, GET only.
    register("public/one", "rest-one", "GET", False)
    # The same path with three methods, checked against a `pay` rune.
    for method, target in (("POST", "rest-one"), ("PATCH", "rest-two"), ("DELETE", "rest-one")):
        register("shop/item", target, method, True, {"method": "pay"})
    plugin.rpc.call("clnrest-register-path", {
        "path": "v{version}/{capture}/go",
        "rpc_method": "rest-capture",
        "http_method": "GET",
        "rune_restrictions": {"params": {"amount_msat": 9999}},
    })


plugin.run()
