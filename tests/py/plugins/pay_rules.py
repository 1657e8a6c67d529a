#!/usr/bin/env python3
"""pyln-client plugin for test_pay.py: answers `htlc_accepted` by payment hash.

`payrules-set payment_hash mode [seconds] [failure_message]` sets what happens to HTLCs of that
hash: `hold` keeps them until `payrules-release`; `fail` fails them after `seconds` with
`failure_message` (hex, default 2002 temporary_node_failure). HTLCs of other hashes continue.
`payrules-seen` lists the hashes seen and those held.
"""
import threading

from pyln.client import Plugin

from answer_later import answer_later

plugin = Plugin()
plugin.rules = {}
plugin.held = {}
plugin.seen = []
plugin.lock = threading.Lock()


@plugin.async_hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, request, plugin, **kwargs):
    h = htlc["payment_hash"]
    with plugin.lock:
        plugin.seen.append(h)
        rule = plugin.rules.get(h)
        if rule and rule["mode"] == "hold":
            plugin.held.setdefault(h, []).append(request)
            return
    if rule and rule["mode"] == "fail":
        answer_later(request, rule["seconds"], {"result": "fail",
                                         "failure_message": rule["failure_message"]})
        return
    request.set_result({"result": "continue"})


@plugin.method("payrules-set")
def payrules_set(plugin, payment_hash, mode, seconds=0, failure_message="2002", **kwargs):
    with plugin.lock:
        plugin.rules[payment_hash] = {"mode": mode, "seconds": float(seconds),
                                      "failure_message": failure_message}
    return {"set": payment_hash}


@plugin.method("payrules-release")
def payrules_release(plugin, payment_hash, **kwargs):
    with plugin.lock:
        plugin.rules.pop(payment_hash, None)
        waiting = plugin.held.pop(payment_hash, [])
    for r in waiting:
        r.set_result({"result": "continue"})
    return {"released": len(waiting)}


@plugin.method("payrules-seen")
def payrules_seen(plugin, **kwargs):
    with plugin.lock:
        return {"seen": list(plugin.seen), "held": sorted(plugin.held)}


plugin.run()
