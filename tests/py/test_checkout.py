"""The merchant checkout example (plugins/clnrest/examples/shop) end to end in headless
Chromium: a shop that reaches its node only through clnrest, with a rune restricted to the
hold-invoice methods, sells to a customer who pays from another node with `fulgur-cli pay`.
The browser script (test/checkout.mjs, playwright-core driving Debian's chromium) checks
each state on the page: invoice as QR and text, payment held (the merchant's Deliver and
Cancel), paid with the preimage `pay` returned, and cancelled with the refund.

Screenshots go to $FULGUR_SCREENSHOTS when set (docs/checkout/ holds the last ones)."""

import json
import os
import queue
import re
import shutil
import subprocess
import threading

import pytest

from conftest import FULGURD, REPO_ROOT, RpcError

from lnnet import free_port

SHOP = REPO_ROOT / "plugins" / "clnrest" / "examples" / "shop"
HOLD_RUNE = [["method=holdinvoice", "method=settleholdinvoice", "method=cancelholdinvoice",
              "method=listholdinvoices", "method=listclnrest-notifications"]]


def start_shop(env):
    """Starts the shop; returns the process and the customer's and merchant's URLs."""
    proc = subprocess.Popen(["node", str(SHOP / "server.mjs")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = queue.Queue()
    out = []

    def pump():
        for line in proc.stdout:
            out.append(line)
            lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    urls = {}
    while len(urls) < 2:
        line = lines.get(timeout=60)
        assert line is not None, "the shop exited:\n" + "".join(out)
        m = re.search(r"shop: (listening on|merchant page) (http\S+)", line)
        if m:
            urls[m.group(1)] = m.group(2)
    return proc, urls["listening on"], urls["merchant page"], out


def test_checkout_in_a_browser(ln, tmp_path):
    assert shutil.which("node"), "node is missing (the shop and playwright-core need it)"
    assert (SHOP / "node_modules" / "playwright-core").is_dir(), \
        f"run {SHOP / 'install'} (tests/run-all does)"
    assert shutil.which("chromium"), "chromium is missing (apt-get install chromium)"

    port = free_port()
    customer = ln.node()
    merchant = ln.node(options={"clnrest-port": port})
    merchant.wait_for_log("REST server running at")
    ln.fund(customer)
    ln.open(customer, merchant)

    rune = merchant.rpc.createrune(restrictions=HOLD_RUNE)["rune"]
    # The shop's rune can do nothing else.
    assert merchant.rpc.checkrune(rune=rune, method="holdinvoice")["valid"]
    for method in ("getinfo", "invoice", "pay", "withdraw", "createrune"):
        with pytest.raises(RpcError, match="Not permitted"):
            merchant.rpc.checkrune(rune=rune, method=method)

    env = dict(os.environ, CLNREST_URL=f"https://127.0.0.1:{port}",
               CLNREST_CA=str(merchant.net_dir / "ca.pem"), SHOP_RUNE=rune)
    shop, shop_url, merchant_url, shop_out = start_shop(env)
    try:
        shots = os.environ.get("FULGUR_SCREENSHOTS") or str(tmp_path / "screenshots")
        cli = FULGURD.parent / "fulgur-cli"
        pay_cmd = [str(cli), f"--lightning-dir={customer.lightning_dir}", "--network=regtest"]
        browser = subprocess.run(
            ["node", str(SHOP / "test" / "checkout.mjs")], cwd=str(SHOP), text=True,
            capture_output=True, timeout=300,
            env=dict(os.environ, SHOP_URL=shop_url, MERCHANT_URL=merchant_url,
                     PAY_CMD=json.dumps(pay_cmd), SCREENSHOTS=shots))
        print(browser.stdout)
        assert browser.returncode == 0, (browser.stdout + browser.stderr
                                         + "\nshop:\n" + "".join(shop_out))
        assert "checkout: all checks passed" in browser.stdout
    finally:
        shop.terminate()
        shop.wait(10)

    # What the node says, besides the page.
    states = sorted(h["state"] for h in merchant.rpc.call("listholdinvoices")["holdinvoices"])
    assert states == ["CANCELLED", "SETTLED"], states
    pays = customer.rpc.listpays()["pays"]
    assert sorted(p["status"] for p in pays) == ["complete", "failed"], pays
    for name in ("1-shop", "2-invoice", "3-held", "4-merchant-held", "5-paid",
                 "6-merchant-paid", "7-cancelled"):
        assert os.path.getsize(os.path.join(shots, f"{name}.png")) > 5000, name
