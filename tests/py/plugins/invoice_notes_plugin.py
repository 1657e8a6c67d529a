#!/usr/bin/env python3
"""Test plugin (pyln-client): records the `invoice_creation` and `invoice_payment`
notifications as pyln hands them to its handlers; `invoicenotes` returns them."""
from pyln.client import Plugin

plugin = Plugin()
plugin.notes = []


def recorder(topic):
    """A handler appending the payload pyln hands it for `topic` to plugin.notes."""
    def on_note(plugin, **kwargs):
        plugin.notes.append({"topic": topic, "payload": kwargs[topic]})
    return on_note


for topic in ("invoice_creation", "invoice_payment"):
    plugin.add_subscription(topic, recorder(topic))


@plugin.method("invoicenotes")
def invoicenotes(plugin):
    """The invoice notifications received so far."""
    return {"notes": plugin.notes}


plugin.run()
