#!/usr/bin/env python3
"""Test plugin on rpc_command whose ordering depends on its own file name: a test copies
it to cyc_a.py and cyc_b.py; each declares before=[the other], a dependency cycle."""
import os
import sys

from pyln.client import Plugin

me = os.path.basename(sys.argv[0])
other = {"cyc_a.py": "cyc_b.py", "cyc_b.py": "cyc_a.py"}.get(me, "cyc_a.py")
plugin = Plugin()


@plugin.hook("rpc_command", before=[other])
def on_rpc_command(plugin, rpc_command, **kwargs):
    return {"result": "continue"}


plugin.run()
