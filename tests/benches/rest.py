#!/usr/bin/env python3
"""clnrest benchmark: real `fulgurd` release processes with the built-in `clnrest` plugin.

    .venv/bin/python tests/benches/rest.py              # both parts
    .venv/bin/python tests/benches/rest.py throughput   # part 1 only
    .venv/bin/python tests/benches/rest.py events       # part 2 only

1. Throughput: `POST /v1/getinfo` with a `Rune` header (so every request runs `checkrune`,
   then `getinfo`, over the node's RPC socket) on keep-alive connections, driven by `wrk`
   (`apt-get install wrk`) with a Lua script, over HTTPS (clnrest's default, certificates
   made in the network directory) and over plain HTTP. One node without a chain, default
   log level. Each wrk setting (threads x connections) runs for FULGUR_BENCH_SECONDS
   (default 10) after a 2 s warm-up at that setting; requests/s, latency p50/p90/p99/max as
   wrk reports them (per request, from write to the full reply), every non-2xx reply and
   socket error counted (a run with any fails), and the CPU time fulgurd and clnrest used.
   Then `getinfo` on a new connection per request, one `curl` process per request
   (NEW_CONNECTIONS after 5 untimed; over HTTPS with HTTP/2, which curl takes when offered,
   and with --http1.1): curl's `time_total`, connect and TLS handshake included.
2. Event latency: two nodes on a devchain with a 1,000,000 sat channel, the payee running
   clnrest over HTTPS; a python-socketio client (WebSocket transport, after the polling
   handshake, as RTL's) connected with a rune restricted to `listclnrest-notifications`.
   FULGUR_BENCH_EVENTS (default 100) invoices of 10,000 msat are paid one after another
   with the payer's `pay`, after 5 untimed ones. For each: from the payee's log line
   `Resolved invoice '<label>' ...` (logged right after the database marks the invoice
   paid and right before the `invoice_payment` notification is sent; millisecond
   timestamps of the realtime clock, the clock `time.time()` reads) to the moment the
   client's `message` handler gets `{"invoice_payment": {...}}` for that label; and from
   the start of the `pay` call to that moment. The log's timestamps are cut to the
   millisecond, so the first figure is 0-1 ms above the true one. The nodes are started by
   tests/py's harness (lnnet), so at --log-level=debug.

Builds first (`cargo build -j2 --release -p fulgur-host -p fulgur-plugin-clnrest
-p fulgur-plugin-pay -p devchain --bins`); FULGUR_BENCH_SKIP_BUILD=1 uses what is in
`$CARGO_TARGET_DIR/release` (default target/release). Other built-ins missing from there are
only warned about by fulgurd. Figures go to docs/PERFORMANCE.md ("REST (clnrest)").
"""

import datetime
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# FULGUR_BENCH_PROFILE=debug runs the script against a debug build (a smoke test, not figures).
PROFILE = os.environ.get("FULGUR_BENCH_PROFILE", "release")
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / PROFILE
# Before conftest is imported: it reads FULGURD once.
os.environ["FULGURD"] = str(RELEASE / "fulgurd")
sys.path.insert(0, str(REPO / "tests" / "py"))

SECONDS = int(os.environ.get("FULGUR_BENCH_SECONDS", "10"))
EVENTS = int(os.environ.get("FULGUR_BENCH_EVENTS", "100"))
WARMUP_EVENTS = 5
# Requests of the new-connection-per-request rows (after 5 untimed).
NEW_CONNECTIONS = 200
# wrk settings: (threads, connections).
SETTINGS = [(1, 1), (1, 8), (2, 8), (2, 32)]

BUILD = ["cargo", "build", "-j2", "--release", "-p", "fulgur-host", "-p", "fulgur-plugin-clnrest",
         "-p", "fulgur-plugin-pay", "-p", "devchain", "--bins"]

# POST with the rune from $RUNE; `done` prints one JSON line the script reads.
WRK_LUA = r"""
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Rune"] = os.getenv("RUNE")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKRESULT {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""

LOG_TS = "%Y-%m-%dT%H:%M:%S.%f%z"


def build():
    if os.environ.get("FULGUR_BENCH_SKIP_BUILD"):
        return
    print("+ " + " ".join(BUILD), flush=True)
    subprocess.run(BUILD, cwd=REPO, check=True)


def log_time(line):
    """The realtime clock's seconds of a log line's `2026-12-07T11:15:03.123Z`."""
    ts = line.split(" ", 1)[0].replace("Z", "+0000")
    return datetime.datetime.strptime(ts, LOG_TS).timestamp()


def percentile(values, p):
    """Nearest rank."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_named(ppid, name):
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        comm = head.split("(", 1)[1]
        if comm == name and int(tail.split()[1]) == ppid:
            return int(d)
    return None


# ------------------------------------------------------------------------------ part 1


class RestNode:
    """One fulgurd without a chain, at its default log level, with clnrest on `protocol`."""

    def __init__(self, root, protocol):
        from conftest import wait_for
        from lnnet import free_port
        self.dir = Path(root) / f"node-{protocol}"
        self.dir.mkdir()
        self.port = free_port()
        self.base = f"{protocol}://127.0.0.1:{self.port}"
        self.log_path = self.dir / "log"
        args = [str(RELEASE / "fulgurd"), f"--lightning-dir={self.dir}", "--network=regtest",
                f"--log-file={self.log_path}", f"--clnrest-port={self.port}",
                f"--clnrest-protocol={protocol}"]
        print("+ " + " ".join(args), flush=True)
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "stdout", "wb"),
                                     stderr=open(self.dir / "stderr", "wb"),
                                     start_new_session=True)

        def running_at():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fulgurd exited: {(self.dir / 'stderr').read_text()}")
            return self.log_path.exists() and \
                f"REST server running at {self.base}" in self.log_path.read_text()
        wait_for(running_at, what="REST server running")
        self.clnrest = wait_for(lambda: child_named(self.proc.pid, "clnrest"), what="clnrest pid")
        from pyln.client import LightningRpc
        self.rpc = LightningRpc(str(self.dir / "regtest" / "lightning-rpc"))
        self.ca = self.dir / "regtest" / "ca.pem"

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def check_once(node, rune):
    """One request as wrk will make it: 201 and getinfo's result."""
    import requests
    s = requests.Session()
    s.trust_env = False
    s.verify = str(node.ca) if node.base.startswith("https") else True
    r = s.post(f"{node.base}/v1/getinfo", headers={"Rune": rune}, json={})
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.json()["id"] == node.rpc.getinfo()["id"], r.text
    bad = s.post(f"{node.base}/v1/getinfo", headers={"Rune": rune + "x"}, json={})
    assert bad.status_code == 401, (bad.status_code, bad.text)


def wrk(node, rune, lua, threads, conns, seconds):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(lua),
           f"{node.base}/v1/getinfo"]
    env = dict(os.environ, RUNE=rune)
    cpu0 = (cpu_seconds(node.proc.pid), cpu_seconds(node.clnrest))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    cpu1 = (cpu_seconds(node.proc.pid), cpu_seconds(node.clnrest))
    line = next(x for x in out.splitlines() if x.startswith("WRKRESULT "))
    r = json.loads(line.split(" ", 1)[1])
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["cpu_fulgurd"] = (cpu1[0] - cpu0[0]) / secs
    r["cpu_clnrest"] = (cpu1[1] - cpu0[1]) / secs
    r["cmd"] = " ".join(cmd)
    errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    if errors:
        raise RuntimeError(f"{r['cmd']}: {errors} errors: {out}")
    return r


def curl_new_connections(node, rune, http11, n=NEW_CONNECTIONS):
    """`getinfo` on a new connection each time, as a script running `curl` once per call
    does: one curl process per request (after 5 untimed), curl's own `time_total`, connect
    and handshake included. Over HTTPS curl takes HTTP/2 when offered (ALPN) unless
    `http11`."""
    if shutil.which("curl") is None:
        return None
    cmd = ["curl", "-s", "-o", "/dev/null", "--cacert", str(node.ca), "-X", "POST",
           "-H", f"Rune: {rune}", "-H", "Content-Type: application/json", "-d", "{}",
           "-w", "%{http_code} %{http_version} %{time_total}", f"{node.base}/v1/getinfo"]
    if http11:
        cmd.insert(1, "--http1.1")
    got = [subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
           for _ in range(n + 5)]
    assert all(c == "201" for c, _, _ in got), got[:5]
    ms = [float(t) * 1000 for _, _, t in got[5:]]
    return {"n": n, "p50": percentile(ms, 50), "p90": percentile(ms, 90),
            "p99": percentile(ms, 99), "max": max(ms), "stalls": sum(t >= 40 for t in ms),
            "http_version": got[-1][1], "cmd": " ".join(cmd)}


def throughput(root):
    lua = Path(root) / "post.lua"
    lua.write_text(WRK_LUA)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    rows = []
    for protocol in ("https", "http"):
        node = RestNode(root, protocol)
        try:
            rune = node.rpc.createrune()["rune"]
            check_once(node, rune)
            for threads, conns in SETTINGS:
                wrk(node, rune, lua, threads, conns, 2)
                r = wrk(node, rune, lua, threads, conns, SECONDS)
                r.update(protocol=protocol, threads=threads, conns=conns)
                rows.append(r)
                print(f"{protocol:5} -t{threads} -c{conns:<3} {r['rps']:9,.0f} req/s  "
                      f"p50 {r['p50'] / 1000:6.2f} ms  p90 {r['p90'] / 1000:6.2f} ms  "
                      f"p99 {r['p99'] / 1000:6.2f} ms  max {r['max'] / 1000:7.2f} ms  "
                      f"({r['requests']:,} requests, 0 errors; CPU fulgurd "
                      f"{r['cpu_fulgurd']:.2f}, clnrest {r['cpu_clnrest']:.2f})", flush=True)
            for http11 in ((False, True) if protocol == "https" else (True,)):
                r = curl_new_connections(node, rune, http11)
                if r is None:
                    print("new connection per request: skipped (no curl)")
                    continue
                r.update(protocol=protocol)
                rows.append(r)
                print(f"{protocol:5} curl, new connection per request, HTTP/{r['http_version']}: "
                      f"p50 {r['p50']:6.2f} ms  p90 {r['p90']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                      f"max {r['max']:6.2f} ms  ({r['n']} requests, {r['stalls']} over 40 ms)",
                      flush=True)
            # Still one node answering after the load.
            check_once(node, rune)
        finally:
            node.stop()
    print(f"  (as: RUNE=<rune> {rows[0]['cmd']}, {lua.name} being WRK_LUA of this script)")
    return rows


# ------------------------------------------------------------------------------ part 2


class Listener:
    """A Socket.IO client of clnrest that notes when each `invoice_payment` arrives."""

    def __init__(self, base, ca, rune):
        import requests
        import socketio
        session = requests.Session()
        session.trust_env = False
        session.verify = str(ca)
        session.headers["rune"] = rune
        self.sio = socketio.Client(http_session=session)
        self.paid = {}
        self.cond = threading.Condition()

        @self.sio.event
        def message(data):
            at = time.time()
            p = data.get("invoice_payment")
            if p is not None:
                with self.cond:
                    self.paid[p["label"]] = at
                    self.cond.notify_all()

        self.sio.connect(base, wait_timeout=30)

    def wait(self, label, timeout=60):
        with self.cond:
            if not self.cond.wait_for(lambda: label in self.paid, timeout):
                raise TimeoutError(f"no invoice_payment for {label}")
            return self.paid[label]


def events():
    import lnnet
    from conftest import wait_for
    from pyln.client import LightningRpc
    with lnnet.module_network("fulgur-bench-rest-") as net:
        port = lnnet.free_port()
        payer = net.node()
        payee = net.node(options={"clnrest-port": port})
        base = f"https://127.0.0.1:{port}"
        payee.wait_for_log("REST server running at " + re.escape(base))
        net.fund(payer)
        net.open(payer, payee)
        rune = payee.rpc.createrune(restrictions=[["method=listclnrest-notifications"]])["rune"]
        lst = Listener(base, payee.net_dir / "ca.pem", rune)
        wait_for(lambda: lst.sio.transport() == "websocket", what="WebSocket upgrade")
        # Plain pyln clients: no schema validation in the timed path.
        pay_rpc = LightningRpc(str(payer.rpc_path))
        inv_rpc = LightningRpc(str(payee.rpc_path))
        started = {}
        for i in range(WARMUP_EVENTS + EVENTS):
            label = f"bench-{i}"
            bolt11 = inv_rpc.invoice(10_000, label, "bench")["bolt11"]
            t0 = time.time()
            pay_rpc.pay(bolt11)
            started[label] = t0
            lst.wait(label)
        assert lst.sio.transport() == "websocket"
        lst.sio.disconnect()
        resolved = {}
        rx = re.compile(r"Resolved invoice '(bench-\d+)' with amount")
        for line in payee.log_lines():
            m = rx.search(line)
            if m:
                resolved[m.group(1)] = log_time(line)
        timed = [f"bench-{i}" for i in range(WARMUP_EVENTS, WARMUP_EVENTS + EVENTS)]
        missing = [x for x in timed if x not in resolved]
        assert not missing, f"no 'Resolved invoice' line for {missing[:5]}"
        marked = [(lst.paid[x] - resolved[x]) * 1000 for x in timed]
        from_pay = [(lst.paid[x] - started[x]) * 1000 for x in timed]
        res = {}
        for name, vals in (("marked paid -> event", marked), ("pay call -> event", from_pay)):
            res[name] = {p: percentile(vals, p) for p in (50, 90)}
            res[name]["max"] = max(vals)
            res[name]["min"] = min(vals)
            print(f"{name:22} p50 {res[name][50]:7.1f} ms  p90 {res[name][90]:7.1f} ms  "
                  f"max {res[name]['max']:7.1f} ms  min {res[name]['min']:6.1f} ms  "
                  f"({len(vals)} invoices, WebSocket over https)", flush=True)
        return res


def main():
    what = sys.argv[1:] or ["throughput", "events"]
    unknown = set(what) - {"throughput", "events"}
    if unknown:
        sys.exit(f"usage: {sys.argv[0]} [throughput] [events]")
    build()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}, nproc {os.cpu_count()}", flush=True)
    if "throughput" in what:
        root = tempfile.mkdtemp(prefix="fulgur-bench-rest-")
        try:
            throughput(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if "events" in what:
        events()
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
