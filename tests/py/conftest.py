"""Harness for driving real `fulgurd` processes with real pyln-client plugins.

* FULGURD env var, or <repo>/target/debug/fulgurd.
* `node_factory` fixture: `node_factory.get_node(...)` starts a node in a fresh temporary
  lightning-dir and waits for `Server started with public key` in its log; every process
  (daemon and plugins) is killed when the test ends, pass or fail.
* Plugins in tests/py/plugins are pyln-client scripts with a `#!/usr/bin/env python3`
  shebang; the daemon is started with this interpreter's bin directory first in PATH so
  `python3` is the interpreter running the tests (the venv with pyln-client).
* `node.rpc` is a pyln `LightningRpc` whose results are validated against CLN's schemas
  (clnschema.schema_for) for every method CLN has one for.
* BROKEN gate (as pyln-testing's `broken_log`): a test fails at teardown if a node logged a
  BROKEN line that does not match a regex declared for that node, with
  `get_node(broken_log=r"...")` or `node.allow_broken(r"...")`. A BROKEN line means a real
  fault an operator must look at; a test that provokes one on purpose declares it.
"""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pyln.client import LightningRpc, RpcError  # noqa: F401  (re-exported for tests)

import clnschema
import pgserver

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"
FULGURD = Path(os.environ.get("FULGURD", REPO_ROOT / "target" / "debug" / "fulgurd"))

READY_LOG = r"Server started with public key"
DEFAULT_TIMEOUT = float(os.environ.get("FULGUR_TEST_TIMEOUT", "60"))
# Per-test watchdog: a test that hangs (e.g. a daemon that never answers) fails instead of
# blocking the whole suite.
TEST_WATCHDOG = int(os.environ.get("FULGUR_TEST_WATCHDOG", "150"))

# A pyln LightningRpc call blocks in recv() forever if the daemon never answers; give every
# socket this process opens a (generous) timeout instead.
socket.setdefaulttimeout(DEFAULT_TIMEOUT)

# Log line: ISO timestamp with milliseconds and Z, padded level, "<source>: <message>".
# CLN writes the broken level as "**BROKEN**" (log.c level_prefix); plain BROKEN accepted too.
LOG_LINE_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "
    r"(?P<level>IO|TRACE|DEBUG|INFO|UNUSUAL|\*\*BROKEN\*\*|BROKEN)\s+(?P<source>[^ :]+): (?P<msg>.*)$")


# The BROKEN lines of a force-close a test asks for with `dev-fail` or `close`'s timeout,
# on the closer and on its peer (LDK logs every force-close at error).
ASKED_FORCE_CLOSE = (r"lightning: [0-9a-f]{66}: (Force-closing channel$"
                     r"|.*Forcibly closed by `close` command timeout$)")


def log_level(line):
    """Level of a log line, '**BROKEN**' normalised to 'BROKEN'; None if not a log line."""
    m = LOG_LINE_RE.match(line)
    return m and m.group("level").strip("*")


def plugin_path(name):
    """Absolute path of one of our test plugins (tests/py/plugins/<name>)."""
    p = PLUGIN_DIR / name
    assert p.is_file(), f"no such test plugin {p}"
    return str(p)


def copy_plugin(name, dest, mode=0o755):
    """Copies the test plugin `name` to `dest` (a path) with file mode `mode`; returns the
    copy's path as a string."""
    shutil.copy(plugin_path(name), dest)
    dest.chmod(mode)
    return str(dest)


def cycle_plugins(test_dir):
    """cycle_plugin.py copied to `test_dir` as cyc_a.py and cyc_b.py: each declares its
    rpc_command hook before the other's, a dependency cycle."""
    return [copy_plugin("cycle_plugin.py", test_dir / name) for name in ("cyc_a.py", "cyc_b.py")]


def _ensure_plugins_executable():
    for p in PLUGIN_DIR.glob("*.py"):
        mode = p.stat().st_mode
        if not mode & stat.S_IXUSR:
            p.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fulgurd_available():
    return FULGURD.is_file() and os.access(FULGURD, os.X_OK)


def wait_for(pred, timeout=DEFAULT_TIMEOUT, interval=0.05, what=None):
    """Poll `pred` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


class ValidatingRpc(LightningRpc):
    """pyln LightningRpc that checks every result of a method CLN has a schema for."""

    def __init__(self, path, node=None):
        super().__init__(str(path))
        self.node = node  # the Node this socket belongs to, to say why it is gone
        self.caller_name = "pytest"
        self.validate = True  # pytest_configure refuses to run without the schemas
        self.validated = []  # (method, result) pairs that went through validation

    def call(self, method, payload=None, cmdprefix=None, filter=None):
        try:
            res = super().call(method, payload=payload, cmdprefix=cmdprefix, filter=filter)
        except (FileNotFoundError, ConnectionRefusedError):
            node = self.node
            if node is not None and node.proc is not None and node.proc.poll() is not None:
                # The daemon is gone: say how it ended instead of only "no such file".
                raise AssertionError(
                    f"{node.name}'s fulgurd exited with code {node.proc.returncode} before "
                    f"`{method}`; stderr:\n{node.stderr()[-3000:]}\n"
                    f"log tail:\n{node.log()[-5000:]}") from None
            raise
        rel = clnschema.schema_for(method)
        if self.validate and rel and filter is None:
            clnschema.validate(rel, res)
            self.validated.append((method, res))
        return res


class Node:
    def __init__(self, factory, name, plugins=(), options=None, extra_args=(), config=None,
                 network_config=None, may_fail=False, important_plugins=(), broken_log=None):
        self.factory = factory
        self.name = name
        self.lightning_dir = factory.base_dir / name
        self.lightning_dir.mkdir(parents=True)
        self.net_dir = self.lightning_dir / "regtest"
        self.rpc_path = self.net_dir / "lightning-rpc"
        self.log_path = self.lightning_dir / "log"
        self.stdout_path = self.lightning_dir / "stdout"
        self.stderr_path = self.lightning_dir / "stderr"
        self.plugins = list(plugins)
        self.important_plugins = list(important_plugins)
        self.options = dict(options or {})
        if pgserver.test_db() == "postgres" and "wallet" not in self.options:
            # FULGUR_TEST_DB=postgres: this node's state in a fresh PostgreSQL database.
            self.options["wallet"] = pgserver.shared().database()
        self.extra_args = list(extra_args)
        self.may_fail = may_fail
        self.expect_panic = False  # a test that panics the daemon on purpose (dev crash)
        self.proc = None
        self._rpc = None
        self.start_mark = 0
        # Regexes of the BROKEN lines this node may log (see `unexpected_broken`).
        self.broken_ok = []
        if broken_log is not None:
            self.allow_broken(broken_log)
        if config is not None:
            (self.lightning_dir / "config").write_text(config)
        if network_config is not None:
            self.net_dir.mkdir(exist_ok=True)
            (self.net_dir / "config").write_text(network_config)

    # ---------------------------------------------------------------- process control
    def cmdline(self):
        args = [str(FULGURD), f"--lightning-dir={self.lightning_dir}", "--network=regtest",
                "--log-level=debug", f"--log-file={self.log_path}"]
        for p in self.plugins:
            args.append(f"--plugin={p}")
        for p in self.important_plugins:
            args.append(f"--important-plugin={p}")
        for k, v in self.options.items():
            vals = v if isinstance(v, list) else [v]
            for one in vals:
                args.append(f"--{k}" if one is None else f"--{k}={one}")
        return args + self.extra_args

    def env(self):
        env = dict(os.environ)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env.pop("LIGHTNINGD_PLUGIN", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, wait_ready=True, timeout=DEFAULT_TIMEOUT):
        if not fulgurd_available():
            pytest.fail(f"fulgurd binary not found at {FULGURD} (build it or set FULGURD)")
        self.start_mark = self.log_mark()
        self.proc = subprocess.Popen(
            self.cmdline(), env=self.env(), cwd=str(self.lightning_dir),
            stdin=subprocess.DEVNULL,
            stdout=open(self.stdout_path, "ab"), stderr=open(self.stderr_path, "ab"),
            start_new_session=True)
        self.factory.procs.append(self.proc)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"fulgurd exited with code {self.proc.returncode} before being ready; "
                    f"stderr:\n{self.stderr()[-3000:]}\nlog tail:\n{self.log()[-3000:]}")
            return self.is_in_log(READY_LOG, start=self.start_mark) and self.rpc_path.exists()
        wait_for(ready, timeout, what=f"'{READY_LOG}' in {self.log_path}")

    def start_expect_exit(self, timeout=DEFAULT_TIMEOUT):
        """Start and wait for the daemon to exit by itself; returns (code, stderr)."""
        self.may_fail = True
        self.start(wait_ready=False)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"fulgurd did not exit within {timeout}s; log tail:\n{self.log()[-3000:]}")
        return rc, self.stderr()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        self.may_fail = True  # the test expects this exit
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"fulgurd still running after {timeout}s; log tail:\n{self.log()[-3000:]}")

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """`stop` RPC; returns (result, exit code)."""
        res = self.rpc.stop()
        return res, self.wait_exit(timeout)

    def kill(self):
        kill_process_tree(self.proc, self.lightning_dir)

    # ---------------------------------------------------------------- RPC
    @property
    def rpc(self):
        if self._rpc is None:
            self._rpc = ValidatingRpc(self.rpc_path, self)
        return self._rpc

    def new_rpc(self):
        return ValidatingRpc(self.rpc_path, self)

    def raw(self):
        return RawRpc(self.rpc_path)

    # ---------------------------------------------------------------- logs
    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return self.log().splitlines()

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_in_log(self, regex, start=0):
        r = re.compile(regex)
        for line in self.log_lines()[start:]:
            if r.search(line):
                return line
        return None

    def wait_for_log(self, regex, timeout=DEFAULT_TIMEOUT, start=0):
        def found():
            line = self.is_in_log(regex, start)
            if line is None and not self.running():
                # A dead daemon will not log any more: one last look, then give up.
                line = self.is_in_log(regex, start)
                if line is None:
                    raise AssertionError(
                        f"daemon exited (code {self.proc.returncode}) without logging "
                        f"/{regex}/; log tail:\n{self.log()[-3000:]}\nstderr:\n{self.stderr()[-2000:]}")
            return line
        try:
            return wait_for(found, timeout, what=f"/{regex}/ in log")
        except TimeoutError:
            raise AssertionError(f"/{regex}/ not in log after {timeout}s; log tail:\n"
                                 f"{self.log()[-4000:]}")

    def log_mark(self):
        """Line count now: pass as `start=` to only look at later lines."""
        return len(self.log_lines())

    def allow_broken(self, regex):
        """Declares BROKEN lines matching `regex` (searched in the whole line) expected."""
        self.broken_ok.append(re.compile(regex))
        return self

    def broken_lines(self):
        """Every BROKEN line of the log."""
        return [line for line in self.log_lines() if log_level(line) == "BROKEN"]

    def unexpected_broken(self):
        """BROKEN lines that no declared regex matches."""
        return [line for line in self.broken_lines()
                if not any(r.search(line) for r in self.broken_ok)]


class RawRpc:
    """Raw UNIX-socket client for protocol-level tests."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data):
        """dict/list -> JSON; str -> sent as is (UTF-8); bytes -> sent as is."""
        if isinstance(data, (dict, list)):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def read_raw(self):
        """Read up to and including the next "\\n\\n"; b'' if the server closed first."""
        while b"\n\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                if rest.strip():
                    raise AssertionError(f"connection closed after partial reply {rest[:300]!r}")
                return b""
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\n\n", 1)
        return msg + b"\n\n"

    def read(self):
        raw = self.read_raw()
        if raw == b"":
            return None
        return json.loads(raw)

    def call(self, obj):
        self.send(obj)
        return self.read()

    def closed_by_peer(self, timeout=10):
        """True if the server closed the connection (EOF) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _pids_with_cwd_under(root):
    """Processes whose cwd lies inside `root` (plugins run with cwd <lightning-dir>/regtest)."""
    out = []
    root = os.path.realpath(root)
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            out.append(int(d))
    return out


def kill_process_tree(proc, lightning_dir):
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    elif proc is not None:
        # The daemon is gone but its process group may still hold plugins.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    # Plugins that left the daemon's process group but still run in its directory.
    for pid in _pids_with_cwd_under(lightning_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class NodeFactory:
    def __init__(self, base_dir):
        self.base_dir = Path(base_dir)
        self.nodes = []
        self.procs = []

    def get_node(self, plugins=(), options=None, start=True, **kw):
        name = f"node{len(self.nodes) + 1}"
        node = Node(self, name, plugins=plugins, options=options, **kw)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def unexpected_deaths(self):
        bad = []
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is not None and not n.may_fail:
                bad.append(f"{n.name} exited unexpectedly with code {n.proc.returncode}; "
                           f"stderr tail:\n{n.stderr()[-2000:]}")
        return bad

    def panics(self):
        out = []
        for n in self.nodes:
            if n.expect_panic:
                continue
            text = n.stderr() + n.log()
            if "panicked at" in text:
                i = text.index("panicked at")
                out.append(f"{n.name}: daemon panicked: {text[max(0, i - 200):i + 800]}")
        return out

    def unexpected_broken(self):
        """One problem per node that logged BROKEN lines it did not declare expected."""
        out = []
        for n in self.nodes:
            lines = n.unexpected_broken()
            if lines:
                out.append(f"{n.name} logged {len(lines)} unexpected BROKEN line(s) (declare "
                           f"expected ones with broken_log= / allow_broken()):\n  "
                           + "\n  ".join(lines[:20]))
        return out

    def problems(self):
        """Unexpected deaths, panics and BROKEN lines: what fails a test at teardown."""
        return self.unexpected_deaths() + self.panics() + self.unexpected_broken()

    def teardown(self):
        for n in self.nodes:
            kill_process_tree(n.proc, n.lightning_dir)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_configure(config):
    # Every reply is validated against CLN's schemas: without them the suite would pass
    # without checking what it claims to, so it does not run at all.
    if not clnschema.schemas_available():
        raise pytest.UsageError(
            f"{clnschema.skip_reason()}: the tests validate replies against CLN's schemas "
            "and do not run without them")
    config.addinivalue_line(
        "markers", "watchdog(seconds): a longer watchdog for a test that builds a bigger network")
    config.addinivalue_line(
        "markers", "sqlite_only(why): a test of the SQLite file itself (it copies, fills or "
        "deletes it), skipped with its reason when FULGUR_TEST_DB=postgres")


def pytest_collection_modifyitems(config, items):
    # FULGUR_TEST_DB=postgres runs the whole suite with every node on PostgreSQL; the tests
    # of the SQLite file itself have nothing to test there.
    if pgserver.test_db() != "postgres":
        return
    for item in items:
        mark = item.get_closest_marker("sqlite_only")
        if mark is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {mark.args[0]}"))


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Fail a test that runs longer than TEST_WATCHDOG seconds (or its `watchdog` mark)
    instead of hanging."""
    mark = request.node.get_closest_marker("watchdog")
    limit = max(TEST_WATCHDOG, int(mark.args[0])) if mark else TEST_WATCHDOG
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded the {limit}s watchdog")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def test_dir(request):
    # Short path under /tmp: UNIX socket paths are limited to 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="fulgur-py-"))
    yield d
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and not os.environ.get("FULGUR_KEEP_DIRS"):
        shutil.rmtree(d, ignore_errors=True)
    else:
        sys.stderr.write(f"\n[fulgur] test directory kept: {d}\n")


@pytest.fixture
def node_factory(test_dir, request):
    _ensure_plugins_executable()
    nf = NodeFactory(test_dir)
    try:
        yield nf
        problems = nf.problems()
    finally:
        nf.teardown()
    rep = getattr(request.node, "rep_call", None)
    if problems and (rep is None or rep.passed):
        pytest.fail("after the test:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def node(node_factory):
    """A node with no test plugins (built-ins only)."""
    return node_factory.get_node()


@pytest.fixture
def devchain(test_dir):
    """A fresh devchain (see lnnet.py), stopped after the test."""
    import lnnet
    if not lnnet.DEVCHAIN.is_file():
        pytest.fail(f"devchain binary not found at {lnnet.DEVCHAIN}: run cargo build first")
    chain = lnnet.Devchain(test_dir / "devchain")
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def ln(node_factory, devchain):
    """A Lightning network on a fresh devchain (see lnnet.py)."""
    import lnnet
    return lnnet.Network(node_factory, devchain)

