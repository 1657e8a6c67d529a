#!/usr/bin/env python3
"""Test plugin that answers getmanifest and init, then never reads its stdin again (it
stays alive, blocked on an event that never fires). It subscribes to the custom topic
`flood` of flood_plugin.py and has a method `deaf_ping` it will never see: the daemon must
bound what it queues for it (notifications dropped and counted, a request past the limit
kills it as hung). Raw protocol: pyln-client would keep reading."""
import json
import sys
import threading


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n\n")
    sys.stdout.flush()


MANIFEST = {
    "options": [],
    "rpcmethods": [{"name": "deaf_ping", "usage": "[pad]",
                    "description": "Never answered: the plugin does not read"}],
    "subscriptions": ["flood"],
    "hooks": [],
    "dynamic": True,
    "nonnumericids": True,
}

decoder, data = json.JSONDecoder(), ""
done = False
while not done:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    data += line
    while data.strip():
        data = data.lstrip()
        try:
            obj, end = decoder.raw_decode(data)
        except ValueError:
            break
        data = data[end:]
        if obj.get("method") == "getmanifest":
            send({"jsonrpc": "2.0", "id": obj["id"], "result": MANIFEST})
        elif obj.get("method") == "init":
            send({"jsonrpc": "2.0", "id": obj["id"], "result": {}})
            send({"jsonrpc": "2.0", "method": "log",
                  "params": {"level": "info", "message": "deaf from now on"}})
            done = True
            break

threading.Event().wait()
