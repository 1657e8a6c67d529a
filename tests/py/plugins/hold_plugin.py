#!/usr/bin/env python3
"""pyln-client plugin that holds HTLCs in `htlc_accepted` (used by test_htlc_hooks.py).

`hold-mode` decides what happens to each HTLC:
* `continue-after`: answer `continue` after `hold-seconds` seconds;
* `fail`: answer `fail` with `hold-failure-message`;
* `manual`: keep it until `hold-release` answers it (or never);
* `min-forward`: for forwards, `fail` those whose `forward_msat` is below `hold-min-msat`.
Every call is recorded and listed by `hold-seen`.
"""
import threading
import time

from pyln.client import Plugin

from answer_later import answer_later

plugin = Plugin()
plugin.seen = []
plugin.pending = {}
plugin.lock = threading.Lock()

plugin.add_option("hold-mode", "manual", "continue-after, fail, manual or min-forward")
plugin.add_option("hold-seconds", "3", "Seconds to hold in continue-after mode")
plugin.add_option("hold-failure-message", "2002", "failure_message in fail mode")
plugin.add_option("hold-min-msat", "0", "Smallest forward let through in min-forward mode")


@plugin.async_hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, request, plugin, **kwargs):
    kind = "forward" if "short_channel_id" in onion else "receive"
    with plugin.lock:
        plugin.seen.append({
            "kind": kind,
            "payment_hash": htlc["payment_hash"],
            "amount_msat": int(htlc["amount_msat"]),
            "forward_msat": int(onion.get("forward_msat", 0)),
            "deadline_blockheight": kwargs.get("deadline_blockheight"),
            "payload": onion.get("payload"),
            "outgoing_cltv_value": onion.get("outgoing_cltv_value"),
            "time": time.time(),
        })
    mode = plugin.get_option("hold-mode")
    if mode == "continue-after":
        answer_later(request, float(plugin.get_option("hold-seconds")), {"result": "continue"})
    elif mode == "fail":
        request.set_result({"result": "fail",
                            "failure_message": plugin.get_option("hold-failure-message")})
    elif mode == "min-forward" and kind == "forward":
        if int(onion["forward_msat"]) < int(plugin.get_option("hold-min-msat")):
            request.set_result({"result": "fail", "failure_message": "1007"})
        else:
            request.set_result({"result": "continue"})
    elif mode == "min-forward":
        request.set_result({"result": "continue"})
    else:
        with plugin.lock:
            plugin.pending[htlc["payment_hash"]] = request


@plugin.method("hold-seen")
def hold_seen(plugin, **kwargs):
    with plugin.lock:
        return {"seen": list(plugin.seen), "pending": sorted(plugin.pending)}


@plugin.method("hold-release")
def hold_release(plugin, payment_hash, result, payment_key=None, failure_message=None,
                 extra=None, **kwargs):
    with plugin.lock:
        request = plugin.pending.pop(payment_hash, None)
    if request is None:
        return {"released": False}
    answer = {"result": result}
    if payment_key is not None:
        answer["payment_key"] = payment_key
    if failure_message is not None:
        answer["failure_message"] = failure_message
    answer.update(extra or {})  # CLN's replacements: forward_to, payload, invoice_msat...
    request.set_result(answer)
    return {"released": True}


plugin.run()
