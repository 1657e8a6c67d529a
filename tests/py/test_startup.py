"""Daemon start-up: readiness, log format, socket, config files, plugin discovery and the
start-up errors that must make fulgurd exit with code 1 and a clear message."""

import os
import re
import shutil
import stat

import pytest

from conftest import (FULGURD, LOG_LINE_RE, copy_plugin, cycle_plugins, fulgurd_available,
                      log_level, plugin_path, wait_for)

PUBKEY_RE = r"0[23][0-9a-f]{64}"


def test_version_flag():
    if not fulgurd_available():
        pytest.fail(f"fulgurd binary not found at {FULGURD}: run cargo build first")
    import subprocess
    out = subprocess.run([str(FULGURD), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.search(r"\d+\.\d+", out.stdout), f"--version printed {out.stdout!r}"


def test_start_ready_line_log_format_and_socket(node_factory):
    node = node_factory.get_node()
    ready = node.is_in_log(r"Server started with public key")
    m = LOG_LINE_RE.match(ready)
    assert m, f"ready line not in CLN log format: {ready!r}"
    assert m.group("level") == "INFO" and m.group("source") == "lightningd", ready
    # CLN: "Server started with public key %s, alias %s (color #%s) and lightningd %s"
    m2 = re.search(rf"Server started with public key ({PUBKEY_RE}), alias (.*?)"
                   rf"(?: \(color #([0-9a-f]{{6}})\))?,? and fulgurd v?\S+$", m.group("msg"))
    assert m2, f"unexpected ready message: {m.group('msg')!r}"
    info = node.rpc.getinfo()
    assert m2.group(1) == info["id"]
    assert m2.group(2) == info["alias"]
    if m2.group(3):
        assert m2.group(3) == info["color"]

    # Every log line follows "<ISO ts> <LEVEL padded> <source>: <message>".
    bad = [line for line in node.log_lines() if not LOG_LINE_RE.match(line)]
    assert not bad, f"{len(bad)} log lines not in CLN format, e.g. {bad[:3]}"
    # The level column is padded to the width of the longest level (UNUSUAL).
    assert re.match(r"^\S+ INFO    lightningd: ", ready), ready

    st = os.stat(node.rpc_path)
    assert stat.S_ISSOCK(st.st_mode), "lightning-rpc is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(stat.S_IMODE(st.st_mode))


def test_plugin_log_and_stderr_are_in_the_log(node_factory):
    # The plugin logs at every level, broken included: its probes are expected.
    node = node_factory.get_node(plugins=[plugin_path("options_plugin.py"),
                                          plugin_path("methods_plugin.py")],
                                 broken_log=r"plugin-methods_plugin\.py: level-probe-")
    # pyln's plugin.log() notification -> source plugin-<basename>
    line = node.wait_for_log(r"plugin-options_plugin\.py: options_plugin initialised")
    assert LOG_LINE_RE.match(line).group("level") == "INFO", line
    # raw stderr of the plugin process is captured under the same source
    node.rpc.call("write_stderr", {"text": "raw-stderr-marker-123"})
    node.wait_for_log(r"plugin-methods_plugin\.py: .*raw-stderr-marker-123")
    # a multi-line log message is split into several lines, level mapped (warn = UNUSUAL)
    node.rpc.call("log_lines", {"text": "first-of-two\nsecond-of-two", "level": "warn"})
    l1 = node.wait_for_log(r"plugin-methods_plugin\.py: first-of-two$")
    l2 = node.wait_for_log(r"plugin-methods_plugin\.py: second-of-two$")
    assert LOG_LINE_RE.match(l1).group("level") == "UNUSUAL", l1
    assert LOG_LINE_RE.match(l2).group("level") == "UNUSUAL", l2
    # other level names and aliases, as CLN maps them
    for level, shown in (("debug", "DEBUG"), ("info", "INFO"), ("unusual", "UNUSUAL"),
                         ("broken", "BROKEN"), ("error", "BROKEN"), ("WARN", "UNUSUAL")):
        node.rpc.call("log_lines", {"text": f"level-probe-{level}", "level": level})
        line = node.wait_for_log(rf"plugin-methods_plugin\.py: level-probe-{level}$")
        assert log_level(line) == shown, (level, line)
    assert node.rpc.call("hello") == {"greeting": "hello world"}


def test_builtin_plugins_loaded_from_beside_binary(node_factory):
    node = node_factory.get_node()
    plugins = node.rpc.plugin_list()["plugins"]
    names = {os.path.basename(p["name"]): p for p in plugins}
    for builtin in ("pay", "htlc-hold", "autopilot", "autoclean", "bookkeeper", "commando", "sql"):
        assert builtin in names, f"built-in {builtin} not in plugin list {sorted(names)}"
        assert os.path.dirname(names[builtin]["name"]) == str(FULGURD.parent.resolve()) or \
            os.path.dirname(names[builtin]["name"]) == str(FULGURD.parent), names[builtin]


def test_disable_plugin_and_clear_plugins(node_factory):
    n1 = node_factory.get_node(options={"disable-plugin": "pay"})
    names = [os.path.basename(p["name"]) for p in n1.rpc.plugin_list()["plugins"]]
    assert "pay" not in names
    assert "htlc-hold" in names

    n2 = node_factory.get_node(extra_args=["--clear-plugins",
                                           f"--plugin={plugin_path('methods_plugin.py')}"])
    names = [os.path.basename(p["name"]) for p in n2.rpc.plugin_list()["plugins"]]
    assert names == ["methods_plugin.py"], names
    assert n2.rpc.call("hello", {"name": "x"}) == {"greeting": "hello x"}


def test_config_files(node_factory):
    node = node_factory.get_node(
        plugins=[plugin_path("options_plugin.py")],
        config="# base config\nstr_opt=from-config\n\n  # indented comment\nmulti_opt=c1\nmulti_opt=c2\n",
        network_config="# network config\nint_opt=5\nbool_opt=true\n")
    vals = node.rpc.call("getopts")["values"]
    assert vals["str_opt"] == "from-config"
    assert vals["int_opt"] == 5
    assert vals["bool_opt"] is True
    assert vals["multi_opt"] == ["c1", "c2"]
    cfg = node.rpc.listconfigs()["configs"]
    assert cfg["str_opt"]["source"].startswith(str(node.lightning_dir / "config")), cfg["str_opt"]
    assert cfg["int_opt"]["source"].startswith(str(node.net_dir / "config")), cfg["int_opt"]


def test_cmdline_overrides_config_file(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("options_plugin.py")],
                                 config="str_opt=from-config\n",
                                 options={"str_opt": "from-cmdline"})
    assert node.rpc.call("getopts")["values"]["str_opt"] == "from-cmdline"
    assert node.rpc.listconfigs("str_opt")["configs"]["str_opt"]["source"] == "cmdline"


def test_plugin_dir(node_factory, test_dir):
    pdir = test_dir / "pdir"
    pdir.mkdir()
    shutil.copy(plugin_path("methods_plugin.py"), pdir / "methods_plugin.py")
    # Not executable: must be skipped (would crash as a plugin anyway).
    (pdir / "README.md").write_text("not a plugin\n")
    noexec = pdir / "noexec.py"
    shutil.copy(plugin_path("emitter_plugin.py"), noexec)
    noexec.chmod(0o644)
    node = node_factory.get_node(options={"plugin-dir": str(pdir)})
    assert node.rpc.call("hello", []) == {"greeting": "hello world"}
    names = [os.path.basename(p["name"]) for p in node.rpc.plugin_list()["plugins"]]
    assert "methods_plugin.py" in names
    assert "noexec.py" not in names and "README.md" not in names


def test_default_plugin_dir_is_scanned(node_factory):
    node = node_factory.get_node(start=False)
    pdir = node.lightning_dir / "plugins"
    (pdir / "sub").mkdir(parents=True)
    shutil.copy(plugin_path("methods_plugin.py"), pdir / "methods_plugin.py")
    shutil.copy(plugin_path("emitter_plugin.py"), pdir / "sub" / "emitter_plugin.py")
    node.start()
    assert node.rpc.call("hello", {}) == {"greeting": "hello world"}
    # CLN also scans one level of subdirectories of <lightning-dir>/plugins
    assert node.rpc.call("emit", {"value": 1}) == {"emitted": 1}


def test_broken_plugin_does_not_stop_node(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("exit_plugin.py"),
                                          plugin_path("methods_plugin.py")])
    assert node.rpc.call("hello", {"name": "still"}) == {"greeting": "hello still"}
    for p in node.rpc.plugin_list()["plugins"]:
        if p["name"].endswith("exit_plugin.py"):
            assert p["active"] is False, p


# ------------------------------------------------------------------ start-up errors

def _expect_startup_failure(node, *needles):
    rc, err = node.start_expect_exit()
    assert rc == 1, f"exit code {rc}, expected 1; stderr:\n{err}"
    assert err.strip(), "no message on stderr"
    for n in needles:
        assert re.search(n, err, re.I), f"stderr does not mention /{n}/:\n{err}"
    assert not node.is_in_log(r"Server started with public key"), "node claimed to be ready"


def test_unknown_option_exits_1(node_factory):
    node = node_factory.get_node(start=False, options={"no-such-option-xyz": "1"})
    _expect_startup_failure(node, r"no-such-option-xyz")


@pytest.mark.parametrize("opt", ["int_opt=notanint", "bool_opt=maybe", "flag_opt=yes",
                                 "int_opt=12abc"])
def test_ill_typed_plugin_option_exits_1(node_factory, opt):
    name, val = opt.split("=")
    node = node_factory.get_node(start=False, plugins=[plugin_path("options_plugin.py")],
                                 options={name: val})
    _expect_startup_failure(node, re.escape(name))


def test_ill_typed_option_in_config_file_exits_1(node_factory):
    node = node_factory.get_node(start=False, plugins=[plugin_path("options_plugin.py")],
                                 config="int_opt=seven\n")
    _expect_startup_failure(node, r"int_opt")


def test_two_plugins_same_option_exits_1(node_factory, test_dir):
    second = copy_plugin("dupopt_plugin.py", test_dir / "dupopt_copy.py")
    node = node_factory.get_node(start=False, plugins=[plugin_path("dupopt_plugin.py"), second])
    _expect_startup_failure(node, r"dup-opt")


def test_hook_dependency_cycle_exits_1(node_factory, test_dir):
    paths = cycle_plugins(test_dir)
    node = node_factory.get_node(start=False, plugins=paths)
    _expect_startup_failure(node, r"cyc_[ab]\.py|depend|cycl")


def test_important_plugin_missing_exits_1(node_factory, test_dir):
    missing = test_dir / "does-not-exist.py"
    node = node_factory.get_node(start=False, important_plugins=[str(missing)])
    _expect_startup_failure(node, r"does-not-exist\.py")


def test_important_plugin_failing_at_start_exits_1(node_factory):
    node = node_factory.get_node(start=False, important_plugins=[plugin_path("exit_plugin.py")],
                                 broken_log=r"Plugin marked as important, shutting down")
    _expect_startup_failure(node, r"exit_plugin\.py")


def test_disable_plugin_overrides_important(node_factory):
    node = node_factory.get_node(important_plugins=[plugin_path("exit_plugin.py")],
                                 options={"disable-plugin": "exit_plugin.py"})
    names = [os.path.basename(p["name"]) for p in node.rpc.plugin_list()["plugins"]]
    assert "exit_plugin.py" not in names


def test_hook_dependency_on_unknown_plugin_is_ignored(node_factory, test_dir):
    # cycle_plugin.py copied under another name declares before=["cyc_a.py"], not loaded
    p = copy_plugin("cycle_plugin.py", test_dir / "cyc_x.py")
    node = node_factory.get_node(plugins=[p])
    assert node.rpc.listdatastore(["any"]) == {"datastore": []}
    names = {os.path.basename(x["name"]): x["active"] for x in node.rpc.plugin_list()["plugins"]}
    assert names.get("cyc_x.py") is True


def test_plugins_and_their_options_in_config_file(node_factory):
    # The plugin option comes before the plugin= line that defines it: plugin options are
    # only checked after every manifest is in (CLN's "early options" ordering).
    node = node_factory.get_node(config=(
        "str_opt=set-before-plugin-line\n"
        f"plugin={plugin_path('options_plugin.py')}\n"
        f"important-plugin={plugin_path('methods_plugin.py')}\n"
        "disable-plugin=pay\n"))
    assert node.rpc.call("getopts")["values"]["str_opt"] == "set-before-plugin-line"
    assert node.rpc.call("hello") == {"greeting": "hello world"}
    names = [os.path.basename(p["name"]) for p in node.rpc.plugin_list()["plugins"]]
    assert "pay" not in names and {"options_plugin.py", "methods_plugin.py"} <= set(names)


def test_unknown_key_in_config_file_exits_1(node_factory):
    node = node_factory.get_node(start=False, config="# ok\nno-such-config-key=1\n")
    _expect_startup_failure(node, r"no-such-config-key")


# ------------------------------------------------------------------ one node per directory

def test_second_node_on_same_dir_refused_whatever_its_rpc_file(node_factory):
    """CLN's pid-file lock: exit 11 and a clear message, even with another --rpc-file or
    --pid-file; the first node keeps running."""
    first = node_factory.get_node()
    pid_file = first.lightning_dir / "lightningd-regtest.pid"
    assert pid_file.read_text() == f"{first.proc.pid}\n"
    for extra in (["--rpc-file=other-rpc"], ["--rpc-file=other-rpc", "--pid-file=other.pid"]):
        second = node_factory.get_node(start=False)
        second.lightning_dir = first.lightning_dir  # same data
        second.log_path = first.lightning_dir / "log2"
        second.extra_args = extra
        rc, err = second.start_expect_exit()
        assert rc == 11, (rc, err)
        assert err.startswith("fulgurd already running? Error locking"), err
        if "--pid-file=other.pid" not in extra:
            assert f"held by pid {first.proc.pid}" in err, err
    assert first.rpc.getinfo()["id"]
    assert not (first.net_dir / "other.pid").exists()
    _, rc = first.stop()
    assert rc == 0
    assert not pid_file.exists(), "a clean stop removes the pid file"


def test_stale_pid_file_does_not_block_a_restart(node_factory):
    node = node_factory.get_node()
    node.kill()  # SIGKILL: the pid file stays, its lock goes with the process
    assert (node.lightning_dir / "lightningd-regtest.pid").exists()
    node.start()
    assert node.rpc.getinfo()["id"]


# ------------------------------------------------------------------ panics, SIGHUP

def test_panic_stops_the_node_with_a_broken_line(node_factory):
    node = node_factory.get_node(options={"developer": None})
    node.expect_panic = True
    # The panic's FATAL line and its backtrace are BROKEN, as this test asks.
    node.allow_broken(r"BROKEN\*?\*? +lightningd: ")
    with pytest.raises(Exception):
        node.rpc.call("dev", ["crash"])
    rc = node.wait_exit()
    assert rc == 1, rc
    line = node.wait_for_log(r"FATAL: .*panicked at .*Crash at user request")
    assert log_level(line) == "BROKEN", line
    assert "Crash at user request" in node.stderr()
    assert not node.running()


def test_dev_commands_need_developer(node):
    from pyln.client import RpcError
    with pytest.raises(RpcError) as e:
        node.rpc.call("dev", ["crash"])
    assert e.value.error["code"] == -32601
    assert "developer-only" in e.value.error["message"]
    assert "dev" not in [c["command"].split()[0] for c in node.rpc.help()["help"]]
    assert node.rpc.getinfo()["id"]


def test_sighup_reopens_the_log_file(node_factory):
    import signal
    node = node_factory.get_node()
    rotated = node.lightning_dir / "log.1"
    os.rename(node.log_path, rotated)
    os.kill(node.proc.pid, signal.SIGHUP)
    node.wait_for_log(r"Started log due to SIGHUP")
    assert "Ending log due to SIGHUP" in rotated.read_text()
    assert node.rpc.getinfo()["id"]
    node.rpc.call("datastore", {"key": ["after-hup"], "string": "x"})
    assert node.running()
    assert "Server started" not in node.log(), "the new file starts at the rotation"



def test_peer_port_is_bound_before_the_rpc_answers(node_factory):
    # CLN binds its peer ports before its RPC answers: the first getinfo shows them.
    from pyln.client import LightningRpc
    from lnnet import free_port
    port = free_port()
    node = node_factory.get_node(options={"bind-addr": f"127.0.0.1:{port}"}, start=False)
    node.start(wait_ready=False)

    def first_answer():
        assert node.running(), node.stderr()
        try:
            return LightningRpc(str(node.rpc_path)).getinfo()
        except OSError:  # no socket yet, or not listening yet
            return None
    first = wait_for(first_answer, interval=0.001, what="the RPC's first answer")
    assert first["binding"] == [{"type": "ipv4", "address": "127.0.0.1", "port": port}], first
    node.wait_ready()


def test_a_peer_port_in_use_stops_fulgurd(node_factory):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node = node_factory.get_node(options={"bind-addr": f"127.0.0.1:{port}"}, start=False)
        rc, err = node.start_expect_exit()
    assert rc == 1 and f"cannot bind 127.0.0.1:{port}" in err, err
    assert not node.rpc_path.exists()


def test_daemon(node_factory):
    """`--daemon` as CLN's (lightningd.c, complete_daemonize): the command returns 0 once
    the node answers on its socket, the node runs on in the background (another process,
    named in the pid file), and a node that cannot start makes the command fail with its
    exit code. Like CLN, it needs `--log-file`."""
    import subprocess
    node = node_factory.get_node(start=False)
    args = node.cmdline() + ["--daemon"]
    done = subprocess.run(args, env=node.env(), cwd=str(node.lightning_dir),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int((node.lightning_dir / "lightningd-regtest.pid").read_text())
    assert os.path.exists(f"/proc/{pid}")
    try:
        assert node.rpc.getinfo()["id"]
        assert node.rpc.listconfigs("daemon")["configs"]["daemon"]["set"] is True
        # A second one in the same directory: refused, and the command says so.
        again = subprocess.run(args, env=node.env(), cwd=str(node.lightning_dir),
                               capture_output=True, timeout=60)
        # (the code a node finding its directory locked exits with)
        assert again.returncode == 11, again.stderr
        assert b"exited before it was ready" in again.stderr
    finally:
        node.rpc.stop()
        wait_for(lambda: not os.path.exists(f"/proc/{pid}")
                 or "zombie" in open(f"/proc/{pid}/status").read().lower(),
                 what="daemon gone")
    no_log = [a for a in node.cmdline() if not a.startswith("--log-file")] + ["--daemon"]
    done = subprocess.run(no_log, env=node.env(), capture_output=True, timeout=60)
    assert done.returncode == 1 and b"--daemon needs --log-file" in done.stderr


def test_bitcoin_rpcclienttimeout_bounds_a_silent_bitcoind(node_factory):
    """`--bitcoin-rpcclienttimeout`, as CLN's bcli: a request bitcoind does not answer fails
    after that many seconds (the node keeps retrying and tells why), instead of hanging in
    the HTTP client for five minutes."""
    import socket
    import threading
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []

    def accept():
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            held.append(conn)  # read nothing, answer nothing
    threading.Thread(target=accept, daemon=True).start()
    try:
        node = node_factory.get_node(options={
            "bitcoin-rpcconnect": "127.0.0.1",
            "bitcoin-rpcport": silent.getsockname()[1],
            "bitcoin-rpcuser": "u", "bitcoin-rpcpassword": "p",
            "bitcoin-rpcclienttimeout": 1})
        node.wait_for_log(r"did not answer \w+ within 1 s \(--bitcoin-rpcclienttimeout\)",
                          timeout=30)
        cfg = node.rpc.listconfigs("bitcoin-rpcclienttimeout")["configs"]
        assert cfg["bitcoin-rpcclienttimeout"]["value_int"] == 1
    finally:
        silent.close()
        for c in held:
            c.close()
