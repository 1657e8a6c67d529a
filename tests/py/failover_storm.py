#!/usr/bin/env python3
"""Failover storm (issue 20): two `fulgurd` with one `hsm_secret` on one PostgreSQL
database (docs/adr/0014), one active and one standby, paying B under load while the active
one is killed with SIGKILL at a random moment, cycle after cycle. After each kill the
standby must take over (timed, from the kill to "Server started"), reconnect to B and pay
on; the killed node comes back as the new standby.

After every cycle (every payment resolved) and at the end it checks:

* every payment the payer reports complete is paid at B, and no invoice is paid at B whose
  payment the payer reports failed or does not know (nothing lost, nothing paid twice);
* balances add up: B's side of the channel is exactly what its paid invoices received, and
  both sides make the channel's total;
* no force-close (the channel CHANNELD_NORMAL on both sides, nothing in
  `listclosedchannels`);
* no BROKEN line.

Not a test: a bench-like script. Exit code 0 only if no invariant was violated. Usage:

    .venv/bin/python tests/py/failover_storm.py --cycles 3 --seed 1     # CI short run
    .venv/bin/python tests/py/failover_storm.py --cycles 50 --seed 20   # recorded run
"""

import argparse
import itertools
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lnnet  # noqa: E402
import pgserver  # noqa: E402
from conftest import NodeFactory, RpcError, wait_for  # noqa: E402


class Violation(Exception):
    pass


class FailoverStorm:
    def __init__(self, args, base):
        self.args = args
        self.rng = random.Random(args.seed)
        self.base = base
        self.pg = pgserver.PgServer()
        self.nf = NodeFactory(base)
        self.chain = lnnet.Devchain(base / "devchain")
        self.ln = lnnet.Network(self.nf, self.chain)
        self.takeovers = []
        self.attempts = 0
        self.labels = itertools.count(1)

    def setup(self):
        ln = self.ln
        dsn = self.pg.database("storm")
        self.a1 = ln.node(options={"wallet": dsn})
        self.b = ln.node()
        ln.fund(self.a1, 2.0)
        ln.open(self.a1, self.b, sat=10_000_000)
        opts = dict(self.chain.options())
        port = lnnet.free_port()
        opts["bind-addr"] = f"127.0.0.1:{port}"
        opts["wallet"] = dsn
        self.a2 = self.nf.get_node(options=opts, start=False)
        self.a2.port = port
        self.a2.net_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.a1.net_dir / "hsm_secret", self.a2.net_dir / "hsm_secret")
        self.a2.start(wait_ready=False)
        self.a2.wait_for_log(r"Standby: ")
        self.active, self.standby = self.a1, self.a2
        self.id = self.a1.id
        self.a_start = self.a1.rpc.listpeerchannels(self.b.id)["channels"][0]["to_us_msat"]

    def pay_burst(self, node, stop):
        """Pays B from `node` on 4 threads until `stop` or the node dies."""
        def worker():
            rpc = node.new_rpc()
            while not stop.is_set():
                label = f"s{next(self.labels)}"
                amount = self.rng.randrange(10_000, 2_000_000)
                try:
                    inv = self.b.rpc.invoice(amount, label, "storm")
                    self.attempts += 1
                    rpc.pay(inv["bolt11"])
                except (RpcError, OSError, ValueError, AssertionError):
                    if not node.running():
                        return
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        return threads

    def cycle(self, i):
        stop = threading.Event()
        victim, heir = self.active, self.standby
        threads = self.pay_burst(victim, stop)
        time.sleep(self.rng.uniform(0.3, 2.5))  # a random moment to kill: not a sync
        victim.may_fail = True
        os.killpg(victim.proc.pid, signal.SIGKILL)
        died = time.monotonic()
        victim.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(60)
        mark = heir.start_mark
        heir.wait_for_log(r"Server started with public key", timeout=60, start=mark)
        took = time.monotonic() - died
        self.takeovers.append(took)
        heir.wait_for_log("Lightning engine started", start=mark)
        heir.id = self.id
        # The killed node comes back as the standby.
        victim.start(wait_ready=False)
        victim.wait_for_log(r"Standby: ", start=victim.start_mark)
        self.active, self.standby = heir, victim
        wait_for(lambda: self.active.rpc.listpeerchannels(self.b.id)["channels"][0]
                 ["peer_connected"], timeout=60, what="the new active node reconnected")
        # The new active node pays on.
        inv = self.b.rpc.invoice(1000, f"after{i}", "after the takeover")
        if self.active.rpc.pay(inv["bolt11"])["status"] != "complete":
            raise Violation(f"cycle {i}: no payment after the takeover")
        self.check(f"cycle {i}")
        print(f"cycle {i}: takeover {took:.1f} s after kill -9; "
              f"{self.attempts} payments attempted so far", flush=True)

    def check(self, when):
        a, b = self.active, self.b
        wait_for(lambda: all(p["status"] != "pending"
                             for p in a.rpc.listsendpays()["payments"]),
                 timeout=120, what=f"{when}: every payment resolved")
        status = {}
        for p in a.rpc.listsendpays()["payments"]:
            s = status.get(p["payment_hash"])
            status[p["payment_hash"]] = "complete" if "complete" in (s, p["status"]) else \
                p["status"]
        received = 0
        for inv in b.rpc.listinvoices()["invoices"]:
            h, st = inv["payment_hash"], status.get(inv["payment_hash"])
            if inv["status"] == "paid":
                received += inv["amount_received_msat"]
                if st != "complete":
                    raise Violation(f"{when}: B paid {inv['label']}, A says {st}")
            elif st == "complete":
                raise Violation(f"{when}: A complete {inv['label']}, B {inv['status']}")
        ca = a.rpc.listpeerchannels(b.id)["channels"]
        cb = b.rpc.listpeerchannels(self.id)["channels"]
        if len(ca) != 1 or len(cb) != 1 or ca[0]["state"] != "CHANNELD_NORMAL" \
                or cb[0]["state"] != "CHANNELD_NORMAL":
            raise Violation(f"{when}: channel not normal: {ca} {cb}")
        if a.rpc.listclosedchannels()["closedchannels"] or \
                b.rpc.listclosedchannels()["closedchannels"]:
            raise Violation(f"{when}: a channel was closed")
        wait_for(lambda: not b.rpc.listpeerchannels(self.id)["channels"][0]["htlcs"],
                 what=f"{when}: no HTLC left")
        cb = b.rpc.listpeerchannels(self.id)["channels"][0]
        ca = a.rpc.listpeerchannels(b.id)["channels"][0]
        # Under its reserve, B's balance comes from its monitor, in whole satoshis.
        if cb["to_us_msat"] not in (received, received // 1000 * 1000):
            raise Violation(f"{when}: B holds {cb['to_us_msat']} msat, its invoices "
                            f"received {received}")
        sent = sum(p["amount_sent_msat"] for p in a.rpc.listsendpays()["payments"]
                   if p["status"] == "complete")
        if ca["to_us_msat"] != self.a_start - sent:
            raise Violation(f"{when}: A holds {ca['to_us_msat']} msat; it started with "
                            f"{self.a_start} and sent {sent}")
        problems = self.nf.unexpected_broken() + self.nf.panics()
        if problems:
            raise Violation(f"{when}: " + "\n".join(problems))

    def run(self):
        self.setup()
        for i in range(1, self.args.cycles + 1):
            self.cycle(i)
        paid = sum(1 for i in self.b.rpc.listinvoices()["invoices"] if i["status"] == "paid")
        t = sorted(self.takeovers)
        print(f"failover storm: {self.args.cycles} kills of the active node, "
              f"{self.attempts} payments attempted, {paid} paid; takeover p50 "
              f"{statistics.median(t):.1f} s, max {t[-1]:.1f} s; 0 losses, 0 force-closes")
        if t[-1] > 15:
            raise Violation(f"a takeover took {t[-1]:.1f} s (> 15 s)")

    def teardown(self):
        self.nf.teardown()
        self.chain.stop()
        self.pg.destroy()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fulgur-failover-"))
    storm = FailoverStorm(args, base)
    ok = False
    try:
        storm.run()
        ok = True
    except Violation as e:
        print(f"VIOLATION: {e}", file=sys.stderr)
    finally:
        storm.teardown()
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept: {base}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
