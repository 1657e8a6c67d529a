#!/usr/bin/env python3
"""Test plugin writing JSON with raw control characters inside strings, as CLN's own
`cowsay.sh` does (CLN's parser reads them; issue 18): a log notification with a raw
newline, and a reply with a raw newline and tab, written by hand on fd 1."""
import json
import os
import sys

from pyln.client import Plugin

plugin = Plugin()


@plugin.async_method("rawsay")
def rawsay(plugin, request, **kwargs):
    # Answered by hand: pyln would escape the control characters.
    os.write(1, b'{"jsonrpc":"2.0","method":"log","params":{"level":"info",'
                b'"message":"raw\nline"}}\n\n')
    os.write(1, b'{"jsonrpc":"2.0","id":' + json.dumps(request.id).encode()
             + b',"result":{"cow":" ___\n< moo >\n ---\t!"}}\n\n')
    sys.stdout.flush()


plugin.run()
