"""The node's state on PostgreSQL (`--wallet=postgres://...`), against a real server
(Debian's postgresql, started by tests/py/pgserver.py), and the hot standby: several
fulgurd on one database with one `hsm_secret`, exactly one active (it holds the lease), the
others answering `getinfo` as standbys and taking over when the active one dies, with every
write of a node that lost the lease refused by the database (docs/adr/0014)."""

import os
import shutil
import signal
import time

import pytest
from pyln.client import LightningRpc

import pgserver
from conftest import RpcError, wait_for
from lnnet import free_port

# What the old active node logs when it finds another node took over (expected there).
LEASE_LOST = r"FATAL: the database's lease"


@pytest.fixture
def pg():
    return pgserver.shared()


def twin(ln, of, dsn, start=True, **kw):
    """A second node with `of`'s hsm_secret on the same database (another directory and
    peer port): a standby while `of` is active."""
    opts = dict(ln.chain.options())
    port = free_port()
    opts["bind-addr"] = f"127.0.0.1:{port}"
    opts["wallet"] = dsn
    n = ln.factory.get_node(options=opts, start=False, **kw)
    n.port = port
    n.net_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(of.net_dir / "hsm_secret", n.net_dir / "hsm_secret")
    if start:
        n.start(wait_ready=False)
    return n


def plain(n):
    """An RPC client without CLN's schema checks (a standby's getinfo is Fulgur's own)."""
    return LightningRpc(str(n.rpc_path))


def on_postgres_with_a_channel(ln, pg, **kw):
    """A node on a fresh database (`kw` to its Node), funded, with a channel to a second
    node: (its DSN, the node, the peer)."""
    dsn = pg.database()
    a = ln.node(options={"wallet": dsn}, **kw)
    b = ln.node()
    ln.fund(a)
    ln.open(a, b)
    return dsn, a, b


def wait_standby(n):
    n.wait_for_log(r"Standby: .* holds the database's lease")
    wait_for(lambda: n.rpc_path.exists(), what="standby's RPC socket")
    return plain(n).getinfo()


def test_state_lives_in_postgres_and_survives_a_restart(ln, pg):
    dsn, a, b = on_postgres_with_a_channel(ln, pg)
    inv = b.rpc.invoice(50_000_000, "pg-1", "on postgres")
    a.rpc.pay(inv["bolt11"])
    mine = a.rpc.invoice(1000, "kept", "kept across restarts")
    db = dsn.rsplit("/", 1)[1]
    # Fulgur's tables are in the database, with this node's rows.
    assert int(pg.psql("SELECT COUNT(*) FROM invoices", db)) == 1
    assert int(pg.psql("SELECT COUNT(*) FROM sendpays WHERE status = 'complete'", db)) == 1
    assert int(pg.psql("SELECT COUNT(*) FROM ldk_kv WHERE primary_namespace = 'monitors'",
                       db)) == 1
    ln.restart(a)
    assert a.rpc.listinvoices("kept")["invoices"][0]["bolt11"] == mine["bolt11"]
    assert a.rpc.listsendpays()["payments"][0]["status"] == "complete"
    ln.connect(a, b)
    wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="reconnected")
    inv = b.rpc.invoice(20_000_000, "pg-2", "after restart")
    assert a.rpc.pay(inv["bolt11"])["status"] == "complete"
    assert a.rpc.listclosedchannels()["closedchannels"] == []


def test_a_standby_answers_getinfo_refuses_the_rest_and_takes_over(ln, pg):
    dsn, a, b = on_postgres_with_a_channel(ln, pg)
    s = twin(ln, a, dsn)
    info = wait_standby(s)
    assert info["role"] == "standby" and info["id"] == a.id
    assert info["active"].endswith(str(a.net_dir))
    with pytest.raises(RpcError, match="standby"):
        plain(s).listfunds()
    paid = []
    for i in range(3):
        paid.append(a.rpc.pay(b.rpc.invoice(1_000_000, f"before-{i}", "x")["bolt11"]))

    # The active node dies; the standby takes over within 15 s of its death.
    a.proc.send_signal(signal.SIGKILL)
    died = time.monotonic()
    a.wait_exit()
    s.wait_for_log(r"Server started with public key", timeout=30)
    took = time.monotonic() - died
    s.wait_for_log("Lightning engine started")
    assert took <= 15, f"takeover took {took:.1f} s"
    s.id = s.rpc.getinfo()["id"]
    assert s.id == a.id
    # Everything A had is there: channel, payments, funds.
    assert len(s.rpc.listsendpays()["payments"]) == 3
    ch = s.rpc.listpeerchannels(b.id)["channels"]
    assert len(ch) == 1 and ch[0]["state"] == "CHANNELD_NORMAL"
    # It reconnects to A's peers by itself and pays on.
    wait_for(lambda: s.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="the new active node reconnected to B")
    r = s.rpc.pay(b.rpc.invoice(2_000_000, "after", "after the takeover")["bolt11"])
    assert r["status"] == "complete"
    assert s.rpc.listclosedchannels()["closedchannels"] == []
    assert b.rpc.listclosedchannels()["closedchannels"] == []
    print(f"takeover: {took:.1f} s after kill -9")


def test_a_paused_active_node_is_fenced_when_it_wakes(ln, pg):
    dsn, a, b = on_postgres_with_a_channel(ln, pg, broken_log=LEASE_LOST)
    s = twin(ln, a, dsn)
    wait_standby(s)
    os.killpg(a.proc.pid, signal.SIGSTOP)
    paused = a.log_mark()
    try:
        s.wait_for_log(r"Took the database's lease .* this node is active", timeout=30)
        s.wait_for_log("Lightning engine started")
    finally:
        os.killpg(a.proc.pid, signal.SIGCONT)
    # The old active node stops by itself, having written nothing.
    assert a.wait_exit(30) == 1
    assert a.is_in_log(LEASE_LOST)
    assert not a.is_in_log(r"[Bb]roadcast", start=paused), "the woken node broadcast"
    wait_for(lambda: s.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="reconnected")
    r = s.rpc.pay(b.rpc.invoice(3_000_000, "fenced", "after the pause")["bolt11"])
    assert r["status"] == "complete"
    assert b.rpc.listclosedchannels()["closedchannels"] == []


def test_the_fence_refuses_a_write_with_an_old_epoch(ln, pg):
    dsn = pg.database()
    a = ln.node(options={"wallet": dsn})
    db = dsn.rsplit("/", 1)[1]
    epoch = int(pg.psql("SELECT epoch FROM node_lease", db))
    assert epoch >= 1
    ins = "INSERT INTO runes_blacklist VALUES (1, 1)"
    with pytest.raises(RuntimeError, match="does not hold the lease"):
        pg.psql(ins, db)  # no epoch at all
    with pytest.raises(RuntimeError, match="does not hold the lease"):
        pg.psql(f"SET fulgur.epoch = '{epoch - 1}'; {ins}", db)
    # With the lease's epoch a write passes (what the active node does).
    pg.psql(f"SET fulgur.epoch = '{epoch}'; {ins}; DELETE FROM runes_blacklist", db)
    assert a.rpc.getinfo()["id"] == a.id


def test_two_nodes_starting_together_on_a_fresh_database(ln, pg):
    dsn = pg.database()
    first = twin_of_nothing = ln.factory.get_node(
        options=dict(ln.chain.options(), **{"wallet": dsn,
                                           "bind-addr": f"127.0.0.1:{free_port()}"}),
        start=False)
    first.net_dir.mkdir(parents=True, exist_ok=True)
    (first.net_dir / "hsm_secret").write_bytes(os.urandom(32))
    second = twin(ln, twin_of_nothing, dsn, start=False)
    first.start(wait_ready=False)
    second.start(wait_ready=False)

    def roles():
        out = []
        for n in (first, second):
            if n.is_in_log(r"Server started with public key", start=n.start_mark):
                out.append("active")
            elif n.is_in_log(r"Standby: ", start=n.start_mark):
                out.append("standby")
        return len(out) == 2 and sorted(out)
    assert wait_for(roles, what="one active, one standby") == ["active", "standby"]


def test_a_sqlite_node_moves_to_postgres_with_its_channels(ln, pg):
    a = ln.node(options={"wallet": "sqlite3://fulgur.sqlite3"})
    b = ln.node()
    ln.fund(a)
    ln.open(a, b)
    for i in range(3):
        a.rpc.pay(b.rpc.invoice(1_000_000, f"lite-{i}", "x")["bolt11"])
    kept = a.rpc.invoice(5000, "kept", "made on SQLite")
    before = a.rpc.listfunds()
    a.stop()

    dsn = pg.database()
    a.options["wallet"] = dsn
    a.options["fulgur-import-sqlite"] = "fulgur.sqlite3"
    a.start()
    a.wait_for_log("Lightning engine started", start=a.start_mark)
    assert a.is_in_log(r"Imported .*fulgur.sqlite3 \(\d+ rows in \d+ tables\)")
    assert a.rpc.listinvoices("kept")["invoices"][0]["bolt11"] == kept["bolt11"]
    assert len(a.rpc.listsendpays()["payments"]) == 3
    def chans(funds):
        return [{k: v for k, v in c.items() if k != "connected"} for c in funds["channels"]]
    assert chans(a.rpc.listfunds()) == chans(before)
    assert a.rpc.listfunds()["outputs"] == before["outputs"]
    # created_index goes on after the imported rows, as CLN's never goes back.
    new = a.rpc.invoice(6000, "new", "made on PostgreSQL")
    assert new["created_index"] == kept["created_index"] + 1
    ln.connect(a, b)
    wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="reconnected")
    assert a.rpc.pay(b.rpc.invoice(2_000_000, "pg", "y")["bolt11"])["status"] == "complete"
    # Started again with the option still set: the database holds the node, so no import.
    ln.restart(a)
    assert a.is_in_log(r"already holds a node; not importing", start=a.start_mark)
    assert len(a.rpc.listsendpays()["payments"]) == 4
    assert b.rpc.listclosedchannels()["closedchannels"] == []
