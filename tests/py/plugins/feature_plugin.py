#!/usr/bin/env python3
"""pyln-client plugin setting a feature bit in each place, as CLN's tests/plugins/
feature-test.py: 1 << 201 in `init`, 1 << 203 in `node_announcement`, 1 << 205 in invoices;
and declaring even peer message type 33000 (`custommessages`). `feature-init` returns the
`feature_set` its `init` got."""
from pyln.client import Plugin

plugin = Plugin(dynamic=False, init_features=1 << 201, node_features=1 << 203,
                invoice_features=1 << 205, custom_msgs=[33000])
plugin.feature_set = None


@plugin.init()
def init(configuration, options, plugin, **kwargs):
    plugin.feature_set = configuration["feature_set"]


@plugin.method("feature-init")
def feature_init(plugin):
    return {"feature_set": plugin.feature_set}


plugin.run()
