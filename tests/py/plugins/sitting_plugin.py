#!/usr/bin/env python3
"""Test plugin (pyln-client): registers `invoice_payment` and never answers it, so the
payment waits between LDK's `PaymentClaimable` (already handled) and the claim: the window
a `kill -9` must not turn into a stranded HTLC."""
from pyln.client import Plugin

plugin = Plugin()


@plugin.async_hook("invoice_payment")
def on_invoice_payment(payment, request, plugin, **kwargs):
    plugin.log(f"sitting on invoice_payment for {payment['label']}")


plugin.run()
