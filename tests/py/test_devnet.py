"""`fulgur-devnet`, the README's main command: `demo` tells the merchant story (hold invoice,
`pay`, held, settled; then cancelled) and exits 0 only when every step checked out; `up`
starts a network that pyln-client's LightningRpc can drive, loads `--plugin`s, and leaves
nothing running after Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from pyln.client import LightningRpc

from conftest import FULGURD, plugin_path, wait_for

DEVNET = FULGURD.parent / "fulgur-devnet"


def running_under(path):
    """Processes whose command line mentions `path`."""
    r = subprocess.run(["pgrep", "-f", str(path)], capture_output=True, text=True)
    return [p for p in r.stdout.split()]


def pyln_env():
    """The environment with this interpreter first in PATH, so that pyln plugins' shebang
    (`/usr/bin/env python3`) finds pyln-client."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.watchdog(420)
def test_demo_tells_the_held_payment_story_and_checks_every_step():
    r = subprocess.run([str(DEVNET), "demo"], capture_output=True, text=True, timeout=400)
    out = r.stdout
    assert r.returncode == 0, f"demo failed:\n{out}\n{r.stderr}"
    for needle in ["hold invoice", "ACCEPTED", "still waiting", "Goods delivered",
                   "returned carol's preimage", "SETTLED", "carol cancels", "CANCELLED",
                   "gets her money back", "nothing was force-closed", "The demo checked out"]:
        assert needle in out, f"{needle!r} missing from the demo's narration:\n{out}"
    assert "✓" in out and "check failed" not in out


@pytest.mark.watchdog(300)
def test_up_serves_nodes_with_plugins_and_ctrl_c_stops_everything(tmp_path):
    d = tmp_path / "net"
    proc = subprocess.Popen([str(DEVNET), "up", "--nodes", "2", "--dir", str(d),
                             "--plugin", plugin_path("methods_plugin.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=pyln_env())
    lines = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "Press Ctrl-C" in out, f"devnet did not come up:\n{out}"
        dirs = re.findall(r"--lightning-dir=(\S+) --regtest getinfo", out)
        assert len(dirs) == 2, out
        rpcs = [LightningRpc(f"{x}/regtest/lightning-rpc") for x in dirs]
        ids = [r.getinfo()["id"] for r in rpcs]
        chans = rpcs[0].listpeerchannels()["channels"]
        assert [c["peer_id"] for c in chans] == [ids[1]]
        assert chans[0]["state"] == "CHANNELD_NORMAL"
        # The pushed third of the channel gives node2 something to spend as well.
        assert 0 < chans[0]["to_us_msat"] < chans[0]["total_msat"]
        # The built-in plugins and the one given with --plugin run on every node.
        for r in rpcs:
            names = {p["name"].rsplit("/", 1)[-1] for p in r.plugin_list()["plugins"]}
            assert {"pay", "htlc-hold", "methods_plugin.py"} <= names, names
            assert r.call("hello", {"name": "devnet"})["greeting"] == "hello devnet"
        assert running_under(d), "nodes should be running"
        # The last node serves clnrest, and the checkout example runs against it.
        assert re.search(r"node2 serves clnrest at https://127\.0\.0\.1:\d+", out), out
        shop = re.search(r"customer: (http://\S+)", out)
        assert shop, f"no shop URL:\n{out}"
        shop = shop.group(1)
        with urllib.request.urlopen(shop, timeout=30) as page:
            assert "Fulgur shop" in page.read().decode()
        with urllib.request.urlopen(shop + "api/catalog", timeout=30) as cat:
            assert len(json.load(cat)) >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=90)[0]
    assert proc.returncode == 0, rest
    assert "Stopped." in rest
    wait_for(lambda: not running_under(d), timeout=10, what="no process left")

    def shop_down():
        try:
            urllib.request.urlopen(shop, timeout=5)
        except OSError:
            return True
        return False
    wait_for(shop_down, timeout=10, what="the shop stopped")
