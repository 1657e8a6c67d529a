"""A full disk stops the node safely (issue 16): the node's network directory (database,
hsm_secret) is a small tmpfs; once it is full, the next write of LDK's state fails and
fulgurd logs a BROKEN `FATAL:` line and exits non-zero, instead of carrying on with its
state unsaved. Needs root (mount); a machine where mounting fails fails this test."""

import subprocess

import pytest

from conftest import wait_for


@pytest.mark.sqlite_only("it fills the file system under the node's SQLite file")
def test_full_disk_stops_the_node_with_a_broken_line(node_factory, devchain):
    node = node_factory.get_node(options=devchain.options(), start=False)
    # What a full disk makes the node say before it stops: failed writes, then FATAL.
    node.allow_broken(r"database or disk is full")
    node.net_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(node.net_dir)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs (run as root): {r.stderr}"
    try:
        node.start()
        node.wait_for_log("Lightning engine started")
        # Fill the disk.
        filler = node.net_dir / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        # New blocks make LDK write its state, which no longer fits.
        def caught_up(height):
            if not node.running():
                return True
            try:
                return node.new_rpc().getinfo()["blockheight"] >= height
            except Exception:
                return not node.running()
        for _ in range(20):
            if not node.running():
                break
            devchain.mine(1)
            h = devchain.height()
            wait_for(lambda: caught_up(h), what=f"node at {h} or stopped")
        rc = node.wait_exit(60)
        assert rc != 0
        assert node.is_in_log(r"\*\*BROKEN\*\* .*FATAL: ") or "FATAL: " in node.stderr()
        assert "panicked" not in node.stderr()
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)
        subprocess.run(["umount", "-l", str(node.net_dir)], check=False)
