#!/usr/bin/env python3
"""Test plugin that holds hook calls forever without blocking itself (pyln async hooks
that never answer): `rpc_command` for `listpeers`, `stop` and `plugin` (other commands
continue), and every `peer_connected`, `custommsg` and `openchannel` call. It logs
"holding <hook> <detail>" for each. The daemon must still serve other clients and must
complete `plugin stop` and `stop`."""
from pyln.client import Plugin

plugin = Plugin()
held = []
HELD_COMMANDS = {"listpeers", "stop", "plugin"}


def hold(request, what):
    held.append(request)
    plugin.log(f"holding {what}")


@plugin.async_hook("rpc_command")
def on_rpc_command(plugin, rpc_command, request, **kwargs):
    method = rpc_command["method"]
    if method in HELD_COMMANDS:
        hold(request, f"rpc_command {method}")
    else:
        request.set_result({"result": "continue"})


@plugin.async_hook("peer_connected")
def on_peer_connected(plugin, peer, request, **kwargs):
    hold(request, f"peer_connected {peer['id']}")


@plugin.async_hook("custommsg")
def on_custommsg(plugin, peer_id, payload, request, **kwargs):
    hold(request, f"custommsg {payload}")


@plugin.async_hook("openchannel")
def on_openchannel(plugin, openchannel, request, **kwargs):
    hold(request, f"openchannel {openchannel['funding_msat']}")


plugin.run()
