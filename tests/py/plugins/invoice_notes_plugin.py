#!/usr/bin/env python3
"""Test plugin (pyln-client): records the `invoice_creation` and `invoice_payment`
notifications as pyln hands them to its handlers; `invoicenotes` returns them."""
from pyln.client import Plugin

plugin = Plugin()
plugin.notes = []


@plugin.subscribe("invoice_creation")
def on_creation(plugin, invoice_creation, **kwargs):
    plugin.notes.append({"topic": "invoice_creation", "payload": invoice_creation})


@plugin.subscribe("invoice_payment")
def on_payment(plugin, invoice_payment, **kwargs):
    plugin.notes.append({"topic": "invoice_payment", "payload": invoice_payment})


@plugin.method("invoicenotes")
def invoicenotes(plugin):
    """The invoice notifications received so far."""
    return {"notes": plugin.notes}


plugin.run()
