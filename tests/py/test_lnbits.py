"""LNbits on Fulgur: LNbits (pinned in tests/requirements-lnbits.txt, installed in its own
venv .venv-lnbits by tests/run-all) runs as a subprocess with its `CoreLightningWallet`
funding source, which speaks to node A's RPC socket with pyln-client (invoice, listinvoices,
waitanyinvoice, pay, listpays, listfunds, help). Through LNbits' REST API the test receives a
payment from node B (and one for an invoice committing to a description hash, as LNURL-pay
makes), pays B, sees a payout that B fails end as failed, restarts LNbits and receives again:
LNbits' invoice listener (`waitanyinvoice` from the last pay_index it found in
`listinvoices`) must resume. The same story runs a second time with LNbits' `CLNRestWallet`,
which reaches node A through the clnrest plugin over HTTPS with the runes CLN's
documentation gives it (read-only, invoice, pay).

    A (LNbits' node) ──1M, 400k pushed to B── B

Everything stays on loopback: every HTTP(S) request LNbits may make (price sites, extension
manifests) goes through a proxy address on which nothing listens, and its price features are
off. Its log is checked for warnings and errors about the node's replies: a Fulgur reply
LNbits cannot use shows there."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import lnnet
from conftest import REPO_ROOT, wait_for

VENV = REPO_ROOT / ".venv-lnbits"
REQUIREMENTS = REPO_ROOT / "tests" / "requirements-lnbits.txt"
PIN = re.search(r"^lnbits==(\S+)$", REQUIREMENTS.read_text(), re.M).group(1)

# LNbits' REST API is reached directly, whatever proxy this process's environment names.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def installed():
    """(version, directory holding the `lnbits` package) in the venv, or None."""
    python = VENV / "bin" / "python"
    if not python.is_file():
        return None
    r = subprocess.run([str(python), "-c",
                        "import importlib.metadata as m, importlib.util as u, pathlib\n"
                        "print(m.version('lnbits'))\n"
                        "print(pathlib.Path(u.find_spec('lnbits').origin).parent.parent)"],
                       capture_output=True, text=True)
    return r.stdout.split("\n")[:2] if r.returncode == 0 else None


@pytest.fixture(scope="module")
def lnbits_install():
    """The pinned LNbits: (its executable, the directory holding its package). tests/run-all
    installs it; a run without it installs it here (about a minute) and the test fails,
    never skips, when that fails."""
    found = installed()
    if not found or found[0] != PIN:
        if not (VENV / "bin" / "pip").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        r = subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet",
                            "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                           capture_output=True, text=True)
        found = installed()
        if r.returncode != 0 or not found or found[0] != PIN:
            pytest.fail(f"could not install lnbits=={PIN} into {VENV}:\n{r.stderr[-3000:]}")
    return VENV / "bin" / "lnbits", found[1]


class LNbits:
    """One LNbits server on a free loopback port, its data in `workdir`, its output in
    `workdir/lnbits.log` (kept across restarts). It runs in the directory holding its
    package: it finds its static files and templates at `lnbits/...` relative to there."""

    def __init__(self, install, workdir, rpc_path, funding=None):
        self.exe, self.home = install
        self.workdir = workdir
        self.port = lnnet.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "lnbits.log"
        # A bound socket that never listens: connections to it are refused, and no other
        # process can take the port while the test runs.
        self.dead = socket.socket()
        self.dead.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{self.dead.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("no_proxy", "virtual_env", "pythonpath")}
        env.update({
            "LNBITS_BACKEND_WALLET_CLASS": "CoreLightningWallet",
            "CORELIGHTNING_RPC": str(rpc_path),
            **(funding or {}),
            "LNBITS_DATA_FOLDER": str(workdir / "data"),
            "LNBITS_EXTENSIONS_PATH": str(workdir),  # its extensions/ here, not in the venv
            # Settings come from this environment only (no admin UI keeping them in its
            # database), and nothing is fetched: no prices, no extension manifests.
            "LNBITS_ADMIN_UI": "false",
            "LNBITS_PRICE_AGGREGATOR_ENABLED": "false",
            "LNBITS_EXCHANGE_RATE_PROVIDERS": "[]",
            "LNBITS_EXTENSIONS_MANIFESTS": "[]",
            "LNBITS_WASM_EXTENSIONS_MANIFESTS": "[]",
            "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy,
            "http_proxy": proxy, "https_proxy": proxy, "all_proxy": proxy,
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        self.proc = None

    def start(self):
        self.mark = self.log_size()
        self.proc = subprocess.Popen(
            [str(self.exe), "--host=127.0.0.1", f"--port={self.port}"],
            cwd=self.home, env=self.env, stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)

        def up():
            # Its server runs in a child process: when that one fails, the parent waits on.
            if self.proc.poll() is not None or "Traceback" in self.log(self.mark):
                raise AssertionError("lnbits failed to start:\n"
                                     + self.log(self.mark)[-3000:])
            try:
                return self.get("/api/v1/health")
            except (urllib.error.URLError, ConnectionError):
                return None
        wait_for(up, what="LNbits answering /api/v1/health")

    def stop(self):
        """Ctrl-C, as an operator stops it; its server runs in a child process, so the whole
        process group (which it leads) gets the signal."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("lnbits did not stop within 30 s of SIGINT:\n"
                                 + self.log()[-3000:])
        # The server child has gone with it (nothing answers any more).
        wait_for(lambda: not self.answers(), what="LNbits' server gone")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def answers(self):
        try:
            self.get("/api/v1/health")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def log_size(self):
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log(self, start=0, end=None):
        """Its output from byte offset `start` (a `log_size()`) to `end`."""
        return self.log_path.read_bytes()[start:end].decode(errors="replace")

    def request(self, method, path, key=None, body=None, status=None):
        """The reply's JSON; with `status`, the HTTP error status expected instead."""
        req = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **({"X-Api-Key": key} if key else {})})
        try:
            with HTTP.open(req, timeout=60) as r:
                reply = json.loads(r.read())
            assert status is None, f"{method} {path}: {r.status}, not {status}: {reply}"
            return reply
        except urllib.error.HTTPError as e:
            if e.code == status:
                return json.loads(e.read())
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {e.read()[:2000]!r}")

    def get(self, path, key=None):
        return self.request("GET", path, key)

    def post(self, path, body, key=None, status=None):
        return self.request("POST", path, key, body, status)


# LNbits' log lines that name a problem (loguru's levels), and those that are expected here:
# offline, every payment's fiat value (each wallet has a currency, USD by default) fails.
PROBLEM = re.compile(r"\| (WARNING|ERROR|CRITICAL) \|")
EXPECTED = re.compile(r"Could not fetch any Bitcoin price|Error calculating fiat amount"
                      r"|LNbits shutting down"
                      # CLNRestWallet pays with `pay` (its pay rune) when given no renepay rune.
                      r"|without setting 'CLNREST_RENEPAY_RUNE'")


def problems(text):
    return [line for line in text.splitlines()
            if PROBLEM.search(line) and not EXPECTED.search(line)]


# The runes CLN's documentation gives LNbits' CLNRestWallet.
READONLY = [["method^list", "method^get", "method=summary", "method=waitanyinvoice",
             "method=waitinvoice"], ["method/listdatastore"]]


def clnrest_funding(a, port):
    """LNbits' CLNRestWallet settings for node A's clnrest, with CLN's recommended runes."""
    rune = lambda r: a.rpc.createrune(restrictions=r)["rune"]  # noqa: E731
    return {
        "LNBITS_BACKEND_WALLET_CLASS": "CLNRestWallet",
        "CLNREST_URL": f"https://127.0.0.1:{port}",
        "CLNREST_CA": str(a.net_dir / "ca.pem"),
        "CLNREST_READONLY_RUNE": rune(READONLY),
        "CLNREST_INVOICE_RUNE": rune([["method=invoice"]]),
        "CLNREST_PAY_RUNE": rune([["method=pay"]]),
        # clnrest is on loopback: past the dead proxy the rest of LNbits' traffic goes to.
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
    }


@pytest.mark.watchdog(300)
@pytest.mark.parametrize("wallet", ["CoreLightningWallet", "CLNRestWallet"])
def test_lnbits_receives_pays_and_resumes(ln, lnbits_install, test_dir, wallet):
    """With LNbits' `CoreLightningWallet` (the RPC socket) and its `CLNRestWallet` (node A's
    clnrest over HTTPS, with runes)."""
    port = lnnet.free_port()
    a = ln.node(options={"clnrest-port": port} if wallet == "CLNRestWallet" else None)
    b = ln.node()
    ln.fund(a)
    ln.open(a, b, sat=1_000_000, push_msat=400_000_000)

    funding = None
    if wallet == "CLNRestWallet":
        a.wait_for_log("REST server running at")
        funding = clnrest_funding(a, port)
    lnbits = LNbits(lnbits_install, test_dir, a.rpc_path, funding)
    try:
        lnbits.start()
        run(lnbits, a, b, wallet)
    finally:
        lnbits.kill()
        print(f"[lnbits] log: {lnbits.log_path}")


def run(lnbits, a, b, source):
    wallet = lnbits.post("/api/v1/account", {"name": "fulgur"})
    inkey, adminkey = wallet["inkey"], wallet["adminkey"]

    def balance():
        return lnbits.get("/api/v1/wallet", inkey)["balance"]

    def receive(sat, memo, pay_args=None, **extra):
        """An LNbits invoice (made on A) that B pays; returns its payment hash once LNbits'
        invoice listener (not a status poll) has credited it."""
        before = balance()
        inv = lnbits.post("/api/v1/payments",
                          {"out": False, "amount": sat, "memo": memo, **extra}, inkey)
        h = inv["payment_hash"]
        mine = a.rpc.listinvoices(payment_hash=h)["invoices"]
        assert [(i["amount_msat"], i["status"]) for i in mine] == [(sat * 1000, "unpaid")]
        if "unhashed_description" not in extra:
            assert mine[0]["description"] == memo
        assert lnbits.get(f"/api/v1/payments/{h}", inkey)["paid"] is False
        assert b.rpc.pay(inv["bolt11"], **(pay_args or {}))["status"] == "complete"
        # /api/v1/wallet reads LNbits' database only: the balance rises when the listener
        # (waitanyinvoice) has marked the payment paid.
        wait_for(lambda: balance() == before + sat * 1000, what=f"LNbits credits {memo}")
        assert f"fundingsource invoice {h} settled" in lnbits.log(lnbits.mark)
        paid = lnbits.get(f"/api/v1/payments/{h}", inkey)
        assert paid["paid"] is True and paid["details"]["status"] == "success"
        assert a.rpc.listinvoices(payment_hash=h)["invoices"][0]["status"] == "paid"
        return h

    # Its funding source's balance at start: listfunds' channels, our side.
    ours = sum(c["our_amount_msat"] for c in a.rpc.listfunds()["channels"])
    assert f"connected and with a balance of {ours} msat" in lnbits.log()

    first = receive(50_000, "from B")

    # As for LNURL-pay: the invoice commits to a description by its hash only (`invoice`
    # with `deschashonly`, which LNbits uses when `help invoice` names it).
    metadata = '[["text/plain", "lnurl-pay to Fulgur"]]'
    lnurl = receive(1_000, "lnurl", unhashed_description=metadata.encode().hex(),
                    pay_args={"description": metadata})  # as CLN, `pay` wants it then
    decoded = a.rpc.decode(a.rpc.listinvoices(payment_hash=lnurl)["invoices"][0]["bolt11"])
    if source == "CLNRestWallet":
        # That wallet puts the metadata itself in the invoice (LNbits' choice).
        assert decoded["description"] == metadata
    else:
        assert decoded["description_hash"] == hashlib.sha256(metadata.encode()).hexdigest()
        assert "description" not in decoded

    # Pay out: LNbits pays B's invoice through A's `pay`.
    out = b.rpc.invoice(20_000_000, "lnbits-payout", "paid by LNbits")
    before = balance()
    sent = lnbits.post("/api/v1/payments", {"out": True, "bolt11": out["bolt11"]}, adminkey)
    assert sent["payment_hash"] == out["payment_hash"]
    assert sent["status"] == "success", sent
    wait_for(lambda: b.rpc.listinvoices("lnbits-payout")["invoices"][0]["status"] == "paid",
             what="B's invoice paid")
    pay = a.rpc.listpays(payment_hash=out["payment_hash"])["pays"]
    assert [p["status"] for p in pay] == ["complete"]
    fee = pay[0]["amount_sent_msat"] - pay[0]["amount_msat"]
    assert balance() == before - 20_000_000 - fee
    status = lnbits.get(f"/api/v1/payments/{out['payment_hash']}", inkey)
    assert status["paid"] is True and status["preimage"] == pay[0]["preimage"]

    if source == "CLNRestWallet":
        # LNbits' CLNRestWallet reads a failed `pay` as `{"error": {"code": ...}}`, which
        # neither CLN's clnrest nor ours sends (both give `{"code": ..., "message": ...}`,
        # CLN's test_clnrest checks it): with either node the payout stays pending in LNbits
        # (docs/COMPATIBILITY.md). The socket wallet covers that case.
        mark = end = lnbits.log_size()
        restart_and_receive(lnbits, receive, first, lnurl, mark, end, balance,
                            resumes=False)
        return

    # A payout that fails at the destination (B deleted its invoice): `pay` fails with 203,
    # which LNbits takes as a definite failure, so it fails the payment and the wallet keeps
    # its funds; a code LNbits does not know would leave them pending.
    gone = b.rpc.invoice(5_000_000, "deleted", "deleted by B")
    b.rpc.delinvoice("deleted", "unpaid")
    before = balance()
    mark = lnbits.log_size()
    failed = lnbits.post("/api/v1/payments", {"out": True, "bolt11": gone["bolt11"]},
                         adminkey, status=520)
    assert failed["status"] == "failed", failed
    status = lnbits.get(f"/api/v1/payments/{gone['payment_hash']}", inkey)
    assert status["paid"] is False and status["status"] == "failed", status
    assert balance() == before
    assert a.rpc.listpays(payment_hash=gone["payment_hash"])["pays"][0]["status"] == "failed"
    end = lnbits.log_size()
    failure = lnbits.log(mark, end)
    assert "'code': 203" in failure, failure

    restart_and_receive(lnbits, receive, first, lnurl, mark, end, balance)


def restart_and_receive(lnbits, receive, first, lnurl, mark, end, balance, resumes=True):
    # Restart: LNbits finds the last pay_index in listinvoices and listens from there.
    total = balance()
    lnbits.stop()
    lnbits.start()
    second = receive(30_000, "after restart")
    after_restart = lnbits.log(lnbits.mark)
    if resumes:
        # The listener resumed after the last payment it had seen: none came again.
        assert first not in after_restart and lnurl not in after_restart
    # CLNRestWallet starts again from the first paid invoice (`waitanyinvoice` without
    # `lastpay_index`, as it does with CLN): old payments come again, and none is credited
    # twice.
    assert balance() == total + 30_000_000
    assert f"got a payment notification {second}" in after_restart

    # The failed payout's warning and error are expected; no other may be.
    bad = problems(lnbits.log(0, mark) + lnbits.log(end))
    assert not bad, "LNbits logged problems:\n" + "\n".join(bad)
