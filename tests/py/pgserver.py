"""A real PostgreSQL server for the tests: Debian's `postgresql` package, `initdb` and
`pg_ctl` in a temporary directory, listening on a free loopback port. When the tests run
as root (CI), the server runs as the package's `postgres` user, as PostgreSQL refuses root.

`FULGUR_TEST_DB=postgres` makes every node of the pyln suite keep its state there (one fresh
database per node, `--wallet=postgres://...`): run-all runs the channel, payment, hold and
restart tests that way too."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _bin(name):
    for d in BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package "
                           "(tests/run-all does)")
    return found


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One server; `database()` gives a fresh database's DSN."""

    def __init__(self, base=None, port=None, extra_conf=(), replica_of=None, name="fulgur"):
        self.dir = Path(tempfile.mkdtemp(prefix="fulgur-pg-", dir=base))
        self.data = self.dir / "data"
        self.port = port or _free_port()
        self.user = "fulgur"
        self.count = 0
        as_root = os.geteuid() == 0
        self.run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
        self.data.mkdir()
        if as_root:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.data, "postgres")
        os.chmod(self.data, 0o700)
        if replica_of is None:
            self._run([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
                       "--no-sync"])
        else:
            # A streaming replica: a base backup of the primary, following it (`-R` writes
            # standby.signal and primary_conninfo), named for synchronous_standby_names.
            self._run([_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(replica_of.port),
                       "-U", self.user, "-D", str(self.data), "-R", "-X", "stream",
                       "--no-sync"])
            with open(self.data / "postgresql.auto.conf", "a") as f:
                f.write(f"primary_conninfo = 'host=127.0.0.1 port={replica_of.port} "
                        f"user={self.user} application_name={name}'\n")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.data}'\nmax_connections = 200\n")
            for line in extra_conf:
                f.write(line + "\n")
        self.start()

    def _run(self, args, check=True):
        return subprocess.run(self.run_as + args, check=check, capture_output=True, text=True)

    def start(self):
        r = self._run([_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                       "-w", "start"], check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{self.log()}")

    def promote(self):
        """Makes a replica the primary (`pg_ctl promote`)."""
        r = self._run([_bin("pg_ctl"), "-D", str(self.data), "-w", "promote"], check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl promote failed: {r.stdout}{r.stderr}\n{self.log()}")

    def stop(self, mode="fast"):
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def log(self):
        try:
            return (self.dir / "log").read_text()
        except OSError:
            return ""

    def psql(self, sql, db="postgres"):
        r = subprocess.run([_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                            self.user, "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {r.stderr}")
        return r.stdout.strip()

    def dsn(self, db):
        return f"postgres://{self.user}:unused@127.0.0.1:{self.port}/{db}"

    def database(self, name=None):
        """Creates a fresh database; its DSN."""
        self.count += 1
        name = name or f"node{os.getpid()}_{self.count}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


_shared = None


def shared():
    """The session's server (started on first use, stopped at exit)."""
    global _shared
    if _shared is None:
        import atexit
        _shared = PgServer()
        atexit.register(_shared.destroy)
    return _shared


def test_db():
    """Which engine `FULGUR_TEST_DB` asks the suite's nodes to use."""
    v = os.environ.get("FULGUR_TEST_DB", "sqlite")
    if v not in ("sqlite", "postgres"):
        raise RuntimeError(f"FULGUR_TEST_DB={v}: expected sqlite or postgres")
    return v


if __name__ == "__main__":
    # `python tests/py/pgserver.py`: a server for benchmarks and scripts; prints the base DSN
    # (add /DBNAME) and runs until interrupted.
    import signal as _signal
    import sys as _sys
    srv = PgServer()
    print(f"postgres://{srv.user}:unused@127.0.0.1:{srv.port}", flush=True)
    try:
        _signal.sigwait({_signal.SIGINT, _signal.SIGTERM})
    finally:
        srv.destroy()
        _sys.exit(0)
