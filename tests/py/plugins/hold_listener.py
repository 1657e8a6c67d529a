#!/usr/bin/env python3
"""Test plugin for test_hold.py: subscribes to the custom notification `holdinvoice_state`
(emitted by the built-in htlc-hold plugin) and to `htlc_deadline`, and lists what it got
with `holdlistener-got`."""
import threading

from pyln.client import Plugin

plugin = Plugin()
plugin.got = []
plugin.lock = threading.Lock()


@plugin.subscribe("holdinvoice_state")
def on_state(plugin, **kwargs):
    payload = kwargs.get("holdinvoice_state") or kwargs.get("payload") or kwargs
    with plugin.lock:
        plugin.got.append({"topic": "holdinvoice_state", "origin": kwargs.get("origin"),
                           "payload": payload})


@plugin.subscribe("htlc_deadline")
def on_deadline(plugin, **kwargs):
    with plugin.lock:
        plugin.got.append({"topic": "htlc_deadline",
                           "payload": kwargs.get("htlc_deadline") or kwargs})


@plugin.method("holdlistener-got")
def got(plugin, payment_hash=None):
    """Notifications received, optionally only those for {payment_hash}."""
    with plugin.lock:
        items = list(plugin.got)
    if payment_hash is not None:
        items = [i for i in items if i["payload"].get("payment_hash") == payment_hash]
    return {"got": items}


plugin.run()
