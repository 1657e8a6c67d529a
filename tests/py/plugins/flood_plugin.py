#!/usr/bin/env python3
"""Test plugin that floods: `flood count size` emits `count` custom notifications `flood`
with a `size`-byte payload each; `stderr_flood mb` writes `mb` megabytes and invalid UTF-8
to stderr without a newline (then ends the line); `stderr_line text` writes one stderr line
that starts with invalid UTF-8. The daemon must stay responsive and keep logging stderr."""
import os

from pyln.client import Plugin

plugin = Plugin()
plugin.add_notification_topic("flood")


def write_stderr(data):
    # pyln replaces sys.stderr with a text stream: write the bytes to fd 2 itself.
    while data:
        data = data[os.write(2, data):]


@plugin.method("flood")
def flood(plugin, count, size):
    payload = "x" * int(size)
    for i in range(int(count)):
        plugin.notify("flood", {"seq": i, "payload": payload})
    return {"emitted": int(count)}


@plugin.method("stderr_flood")
def stderr_flood(plugin, mb):
    chunk = b"\xff\xfe\xc3" + b"z" * (1 << 20)
    written = 0
    for _ in range(int(mb)):
        write_stderr(chunk)
        written += len(chunk)
    write_stderr(b"\n")
    return {"written": written}


@plugin.method("stderr_line")
def stderr_line(plugin, text):
    write_stderr(b"\xc3\x28 " + text.encode() + b"\n")
    return {"written": True}


plugin.run()
