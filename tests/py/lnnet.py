"""Lightning networks for the pyln suite: a devchain (the project's regtest chain, spoken to
with bitcoind's JSON-RPC), fulgurd nodes on it with peer ports, funded wallets, channels
opened with `fundchannel` and confirmed, and waits for gossip. Used through the `ln`
fixture in conftest.py."""

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import FULGURD, NodeFactory, RpcError, _ensure_plugins_executable, wait_for

DEVCHAIN = FULGURD.parent / "devchain"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Devchain:
    def __init__(self, datadir):
        self.datadir = datadir
        datadir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen([str(DEVCHAIN), f"--datadir={datadir}", "--rpcport=0"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.port = int(wait_for(lambda: (datadir / "rpcport").is_file()
                                 and (datadir / "rpcport").read_text().strip(),
                                 what="devchain's rpcport"))
        wait_for(lambda: (datadir / ".cookie").is_file(), what="devchain's cookie")

    def call(self, method, *params):
        auth = base64.b64encode((self.datadir / ".cookie").read_bytes().strip()).decode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/",
            data=json.dumps({"jsonrpc": "1.0", "id": 1, "method": method,
                             "params": list(params)}).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            # bitcoind's RPC (and devchain's) answers an error with HTTP 500 and the JSON
            # error in the body: say what it was.
            body = json.loads(e.read() or b"{}")
            if not body.get("error"):
                raise
        if body.get("error"):
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    def height(self):
        return self.call("getblockcount")

    def mine(self, n):
        addr = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
        return self.call("generatetoaddress", n, addr)

    def options(self):
        return {"bitcoin-rpcport": self.port, "bitcoin-datadir": str(self.datadir)}

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


class Network:
    """Nodes on one devchain. `node()` starts one; `open()` makes a confirmed channel."""

    def __init__(self, node_factory, chain):
        self.factory = node_factory
        self.chain = chain
        self.nodes = []

    def node(self, plugins=(), options=None, **kw):
        """Starts a node on this chain; `kw` goes to Node (e.g. `broken_log=`)."""
        port = free_port()
        opts = dict(self.chain.options())
        opts["bind-addr"] = f"127.0.0.1:{port}"
        opts.update(options or {})
        n = self.factory.get_node(plugins=plugins, options=opts, **kw)
        n.port = port
        n.wait_for_log("Lightning engine started")
        n.id = n.rpc.getinfo()["id"]
        self.nodes.append(n)
        return n

    def restart(self, n, kill=False):
        if kill:
            n.kill()
        else:
            n.stop()
        mark = n.log_mark()
        n.start()
        n.wait_for_log("Lightning engine started", start=mark)

    def sync(self, nodes=None):
        h = self.chain.height()
        for n in nodes or self.nodes:
            if n.running():
                wait_for(lambda: n.rpc.getinfo()["blockheight"] >= h, what=f"{n.name} at {h}")

    def mine(self, blocks, nodes=None):
        self.chain.mine(blocks)
        self.sync(nodes)

    def fund(self, n, btc=1.0):
        addr = n.rpc.newaddr("bech32")["bech32"]
        self.chain.call("sendtoaddress", addr, btc)
        self.mine(1)
        want = int(btc * 10**11)
        wait_for(lambda: sum(o["amount_msat"] for o in n.rpc.listfunds()["outputs"]
                             if o["status"] == "confirmed") >= want, what="deposit")

    def connect(self, a, b):
        a.rpc.connect(b.id, "127.0.0.1", b.port)

    def open(self, a, b, sat=1_000_000, push_msat=0):
        """Opens a channel a→b, confirms it (6 blocks, so it gets announced) and waits
        until both sides are CHANNELD_NORMAL. Returns its short channel id."""
        self.connect(a, b)
        r = a.rpc.fundchannel(b.id, sat, push_msat=push_msat)
        # As CLN: fundchannel answers once its funding is broadcast, so the blocks mined
        # right after it confirm the channel (issue 18).
        assert r["txid"] in self.chain.call("getrawmempool")
        self.mine(6)

        def normal():
            ca = [c for c in a.rpc.listpeerchannels(b.id)["channels"]
                  if c["state"] == "CHANNELD_NORMAL"]
            cb = [c for c in b.rpc.listpeerchannels(a.id)["channels"]
                  if c["state"] == "CHANNELD_NORMAL"]
            return ca and cb and ca[0].get("short_channel_id")
        return wait_for(normal, what="channel normal")

    def line(self, a, b, c):
        """Funds A and B, opens A→B and B→C, and waits until A knows B→C (so it can route
        through B). Returns the two short channel ids."""
        self.fund(a)
        self.fund(b)
        ab = self.open(a, b)
        bc = self.open(b, c)
        self.wait_gossip(a, bc)
        return ab, bc

    def pay_above_and_below(self, a, c, above_msat, below_msat):
        """A pays C `above_msat`, which must complete, then `below_msat`, which the node in
        between must fail (203 or 204), leaving C's invoice unpaid. The large one first: a
        failed forward makes payers drop the channel from their graph (LDK fails
        intercepted forwards with unknown_next_peer; see ADR 8)."""
        big = c.rpc.invoice(above_msat, "big", "above the minimum")
        assert self.pay(a, big["bolt11"], c.id, above_msat)["status"] == "complete"
        small = c.rpc.invoice(below_msat, "small", "below the minimum")
        with pytest.raises(RpcError) as e:
            self.pay(a, small["bolt11"], c.id, below_msat)
        assert e.value.error["code"] in (203, 204)
        assert c.rpc.listinvoices("small")["invoices"][0]["status"] == "unpaid"

    def wait_gossip(self, n, scid):
        """Waits until `n` knows both directions of `scid`. Gossip is best effort: a
        channel_update that reaches a node before the channel's announcement is dropped
        (BOLT 7 allows it), and LDK drops broadcasts to a peer whose send buffer is full. As
        a real node would, `n` catches up at its next gossip sync, which a reconnection
        starts (LDK asks for full syncs from its first five connections only), or when the
        channel's ends rebroadcast their announcement and update, which LDK does every six
        blocks: after two reconnections, six blocks are mined."""
        def known():
            return len(n.rpc.listchannels(scid)["channels"]) == 2
        for attempt in range(6):
            try:
                return wait_for(known, timeout=10, what=f"{scid} in {n.name}'s gossip")
            except TimeoutError:
                if attempt in (2, 4):
                    self.mine(6)
                    continue
                for peer in [p["id"] for p in n.rpc.listpeers()["peers"] if p["connected"]]:
                    other = next(x for x in self.nodes if x.id == peer)
                    n.rpc.disconnect(peer, force=True)
                    self.connect(n, other)
        # What each node logged about this channel's gossip, to tell a lookup failure from a
        # message never sent.
        lines = [f"{x.name}: {line}" for x in self.nodes for line in x.log_lines()
                 if scid in line or "gossip:" in line][-40:]
        raise TimeoutError(f"{scid} never reached {n.name}'s gossip; gossip log lines:\n"
                           + "\n".join(lines))

    def pay(self, payer, bolt11_or_inv, payee_id, amount_msat, wait=True, timeout=60):
        """getroute + sendpay (+ waitsendpay): CLN's low-level payment flow."""
        inv = payer.rpc.decode(bolt11_or_inv)
        route = payer.rpc.getroute(payee_id, amount_msat, riskfactor=1,
                                   cltv=inv.get("min_final_cltv_expiry", 18))["route"]
        payer.rpc.sendpay(route, inv["payment_hash"], payment_secret=inv["payment_secret"],
                          amount_msat=amount_msat, bolt11=bolt11_or_inv)
        if wait:
            return payer.rpc.waitsendpay(inv["payment_hash"], timeout=timeout)
        return inv["payment_hash"]


@contextlib.contextmanager
def module_network(prefix):
    """A Network on its own devchain in a new directory, for a module-scoped fixture. At the
    end it fails on any node's unexpected death, panic or undeclared BROKEN line, stops
    every process, and removes the directory unless something failed or FULGUR_KEEP_DIRS
    is set."""
    if not DEVCHAIN.is_file() or not FULGURD.is_file():
        pytest.fail(f"fulgurd or devchain not built (looked in {FULGURD.parent}): "
                    "run cargo build first")
    _ensure_plugins_executable()
    d = Path(tempfile.mkdtemp(prefix=prefix))
    nf = NodeFactory(d)
    chain = Devchain(d / "devchain")
    ok = False
    problems = []
    try:
        yield Network(nf, chain)
        ok = True
    finally:
        problems = nf.problems()
        nf.teardown()
        chain.stop()
        if ok and not problems and not os.environ.get("FULGUR_KEEP_DIRS"):
            shutil.rmtree(d, ignore_errors=True)
        else:
            print(f"\n[fulgur] test directory kept: {d}")
    assert not problems, "\n".join(problems)
