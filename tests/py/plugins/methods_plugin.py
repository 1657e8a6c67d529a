#!/usr/bin/env python3
"""Test plugin: RPC methods with named/positional params, msat values, errors, caller
notifications, slow replies, raw stderr, and calls back into the node's RPC."""
import copy
import os
import time

from pyln.client import Millisatoshi, Plugin, RpcException

plugin = Plugin()
plugin.seen = []
_orig_parse = plugin._parse_request


def _recording_parse(jsrequest):
    plugin.seen.append({"id": jsrequest.get("id"), "method": jsrequest.get("method"),
                        # a copy: pyln injects `plugin`/`request` into dict params later
                        "params": copy.deepcopy(jsrequest.get("params"))})
    return _orig_parse(jsrequest)


plugin._parse_request = _recording_parse


@plugin.method("hello")
def hello(plugin, name="world"):
    # Greets `name`.
    return {"greeting": f"hello {name}"}


@plugin.method("echo")
def echo(plugin, a, b, c=None):
    # Returns its parameters and how they arrived (plugin first: pyln's positional binding
    # injects it by index).
    last = plugin.seen[-1]
    return {"a": a, "b": b, "c": c, "params_were": type(last["params"]).__name__,
            "id": last["id"]}


@plugin.method("msat_echo")
def msat_echo(plugin, amount: Millisatoshi, label="x"):
    # Takes an msat amount; pyln converts it to Millisatoshi by annotation.
    return {"msat": int(amount), "is_millisatoshi": isinstance(amount, Millisatoshi),
            "label": label}


@plugin.method("fail_rpc")
def fail_rpc(plugin, code=777):
    # Fails with a custom code, which must reach the caller unchanged.
    raise RpcException("custom failure from methods_plugin", code=code)


@plugin.method("fail_exception")
def fail_exception(plugin):
    raise ValueError("boom in methods_plugin")


@plugin.method("notify_me")
def notify_me(plugin, request):
    # Sends two `message` notifications to the caller, then replies.
    request.notify("first message")
    request.notify("second message", level="debug")
    return {"done": True}


@plugin.method("progress_me")
def progress_me(plugin, request):
    # Sends a `progress` notification to the caller, then replies.  (pyln's own client
    # cannot consume progress notifications, so this is for raw-socket tests.)
    request.progress(1, 2)
    return {"done": True}


@plugin.method("slow")
def slow(plugin, seconds=1.0):
    plugin.log(f"slow: holding the call for {seconds}s")  # tests wait for this line
    time.sleep(float(seconds))
    return {"slept": seconds}


@plugin.method("call_getinfo")
def call_getinfo(plugin):
    # Calls getinfo on the node through the plugin's RPC connection.
    info = plugin.rpc.getinfo()
    return {"id": info["id"], "network": info["network"]}


@plugin.method("ds_put")
def ds_put(plugin, key, value):
    # Stores value under key through the node's datastore, reads it back.
    stored = plugin.rpc.datastore(key=["methods_plugin", key], string=value,
                                  mode="create-or-replace")
    listed = plugin.rpc.listdatastore(key=["methods_plugin", key])
    return {"stored": stored, "listed": listed}


@plugin.method("write_stderr")
def write_stderr(plugin, text):
    # Writes raw bytes to the real stderr (not pyln's monkey-patched one).
    os.write(2, (text + "\n").encode())
    return {"written": True}


@plugin.method("log_lines")
def log_lines(plugin, text, level="info"):
    # Sends a raw log notification (message may contain newlines).
    plugin.notify("log", {"level": level, "message": text})
    return {"logged": True}


plugin.parked = {}


@plugin.async_method("park")
def park(plugin, key, request):
    # Answers later, when `release` is called with the same key (out of order replies).
    plugin.parked[key] = request


@plugin.method("release")
def release(plugin, key, value):
    plugin.parked.pop(key).set_result({"key": key, "value": value})
    return {"released": key}


@plugin.method("big")
def big(plugin, size):
    # A reply of `size` characters, to test framing of large messages.
    return {"data": "x" * int(size), "size": int(size)}


@plugin.method("seen_requests")
def seen_requests(plugin):
    return {"seen": plugin.seen}


plugin.run()
