"""PostgreSQL replication under a node (docs/OPTIONS.md, "PostgreSQL and the hot
standby"): a primary and a **synchronous** streaming replica on loopback, a node making
payments on the primary, the primary killed (immediate shutdown, as a crash), the replica
promoted, the node pointed at it: every payment and invoice the node had reported is
there, the channel goes on, nothing is force-closed.

Run alone, it is the replica failover script the issue asks for:
    .venv/bin/python -m pytest tests/py/test_pg_replica.py -s
(it prints what it checked; docs/RELIABILITY.md has a recorded run)."""

import pgserver
from conftest import wait_for

# The node loses its database when the primary dies: it stops itself, as it must.
DB_LOST = r"FATAL: .*(lease|database)"


def test_replica_failover_loses_nothing_committed(ln):
    primary = pgserver.PgServer(extra_conf=[
        "wal_level = replica",
        "max_wal_senders = 5",
        "synchronous_commit = on",
        "synchronous_standby_names = 'replica1'",
    ])
    replica = None
    try:
        replica = pgserver.PgServer(replica_of=primary, name="replica1")
        # The replica streams synchronously before the node starts.
        wait_for(lambda: primary.psql(
            "SELECT sync_state FROM pg_stat_replication "
            "WHERE application_name = 'replica1'") == "sync", what="a synchronous replica")
        primary.psql('CREATE DATABASE "node"')
        a = ln.node(options={"wallet": primary.dsn("node")}, broken_log=DB_LOST)
        b = ln.node()
        ln.fund(a)
        ln.open(a, b)
        done = []
        for i in range(20):
            inv = b.rpc.invoice(500_000 + i, f"r{i}", "replicated")
            done.append(a.rpc.pay(inv["bolt11"])["payment_hash"])
            a.rpc.invoice(1000 + i, f"mine{i}", "kept on the replica")
        # The last write the node reported: what the replica must have.
        last = a.rpc.invoice(7777, "last", "the last one before the crash")

        primary.stop("immediate")
        # The node notices (a write or its lease renewal fails) and stops itself.
        assert a.wait_exit(30) == 1
        replica.promote()
        wait_for(lambda: replica.psql("SELECT pg_is_in_recovery()") == "f",
                 what="the replica promoted")
        # The promoted replica has no replica of its own yet: its commits must not wait for
        # one (it inherited the primary's synchronous_standby_names).
        replica.psql("ALTER SYSTEM SET synchronous_standby_names = ''")
        replica.psql("SELECT pg_reload_conf()")

        a.options["wallet"] = replica.dsn("node")
        a.start()
        a.wait_for_log("Lightning engine started", start=a.start_mark)
        pays = {p["payment_hash"]: p["status"] for p in a.rpc.listsendpays()["payments"]}
        assert all(pays.get(h) == "complete" for h in done), pays
        assert a.rpc.listinvoices("last")["invoices"][0]["bolt11"] == last["bolt11"]
        assert len(a.rpc.listinvoices()["invoices"]) == 21
        ln.connect(a, b)
        wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
                 what="reconnected")
        assert a.rpc.listpeerchannels(b.id)["channels"][0]["state"] == "CHANNELD_NORMAL"
        inv = b.rpc.invoice(1_000_000, "after", "on the promoted replica")
        assert a.rpc.pay(inv["bolt11"])["status"] == "complete"
        assert a.rpc.listclosedchannels()["closedchannels"] == []
        assert b.rpc.listclosedchannels()["closedchannels"] == []
        print(f"replica failover: {len(done)} payments and 21 invoices made on the primary, "
              "all found on the promoted replica; paid on after it; 0 force-closes")
    finally:
        if replica is not None:
            replica.destroy()
        primary.destroy()
