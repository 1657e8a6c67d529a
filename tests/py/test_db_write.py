"""CLN's `db_write` hook: every write transaction's statements, with `data_version`, go to
the plugins that registered it before the transaction commits, so that a backup plugin
keeps a live copy of the database that the node restores from with its channels; a write a
plugin does not take fails, and the node stops (CLN's rule)."""

import sqlite3

import pytest

from conftest import PLUGIN_DIR, RpcError, wait_for

BACKUP = str(PLUGIN_DIR / "db_backup.py")


def snapshot(src, dst):
    """A consistent copy of an SQLite database (WAL included): `backup-cli init`."""
    s, d = sqlite3.connect(src), sqlite3.connect(dst)
    with d:
        s.backup(d)
    s.close()
    d.close()


def with_backup(a, tmp_path, monkeypatch):
    """Stops `a`, copies its database (`backup-cli init`) and gives it the backup plugin
    on that copy for its next start; (its database, the copy)."""
    db = a.net_dir / "fulgur.sqlite3"
    copy = tmp_path / "backup.sqlite3"
    a.stop()
    snapshot(db, copy)
    a.plugins.append(BACKUP)
    monkeypatch.setenv("DB_BACKUP_FILE", str(copy))
    return db, copy


@pytest.mark.sqlite_only("the backup plugin replays the writes into a SQLite copy, as CLN's backup plugin (SQLite only)")
def test_a_backup_over_db_write_restores_the_node_with_its_channels(ln, tmp_path,
                                                                    monkeypatch):
    a = ln.node()
    b = ln.node()
    db, copy = with_backup(a, tmp_path, monkeypatch)
    a.start()
    a.wait_for_log("Lightning engine started", start=a.start_mark)

    ln.fund(a)
    ln.open(a, b)
    for i in range(5):
        a.rpc.pay(b.rpc.invoice(1_000_000, f"bk{i}", "backed up")["bolt11"])
    kept = a.rpc.invoice(4242, "kept", "in the backup")
    a.rpc.datastore(key=["backup", "note"], string="also backed up")
    funds = a.rpc.listfunds()
    a.stop()

    # The node's database is lost; the backup takes its place.
    for f in a.net_dir.glob("fulgur.sqlite3*"):
        f.unlink()
    snapshot(copy, db)
    a.plugins.remove(BACKUP)
    a.start()
    a.wait_for_log("Lightning engine started", start=a.start_mark)
    assert a.rpc.listinvoices("kept")["invoices"][0]["bolt11"] == kept["bolt11"]
    assert len([p for p in a.rpc.listsendpays()["payments"]
                if p["status"] == "complete"]) == 5
    assert a.rpc.listdatastore(["backup", "note"])["datastore"][0]["string"] == \
        "also backed up"
    assert [c["our_amount_msat"] for c in a.rpc.listfunds()["channels"]] == \
        [c["our_amount_msat"] for c in funds["channels"]]
    ln.connect(a, b)
    wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="reconnected")
    assert a.rpc.pay(b.rpc.invoice(2_000_000, "after", "x")["bolt11"])["status"] == \
        "complete"
    assert a.rpc.listclosedchannels()["closedchannels"] == []
    assert b.rpc.listclosedchannels()["closedchannels"] == []


@pytest.mark.sqlite_only("the backup plugin replays the writes into a SQLite copy, as CLN's backup plugin (SQLite only)")
def test_a_write_the_hook_refuses_fails_and_nothing_falls_behind(node_factory, tmp_path,
                                                                  monkeypatch):
    """A transaction the plugin does not take is rolled back: the command that made it
    fails with the reason, and neither the database nor the copy has it. Writes LDK's state
    depends on stop the node instead (FATAL), as every storage failure does."""
    a = node_factory.get_node()
    db, copy = with_backup(a, tmp_path, monkeypatch)
    monkeypatch.setenv("DB_BACKUP_REFUSE_MATCHING", "refuse-me")
    a.start()
    a.rpc.datastore(key=["k", "ok"], string="taken")
    with pytest.raises(RpcError, match="db_write"):
        a.rpc.datastore(key=["k", "no"], string="refuse-me")
    a.rpc.datastore(key=["k", "after"], string="taken too")
    want = {b"taken", b"taken too"}
    for f in (db, copy):
        rows = {r[0] for r in sqlite3.connect(f).execute("SELECT data FROM datastore")}
        assert rows == want, (f, rows)
    # The copy is at the database's data_version: nothing was skipped.
    version = "SELECT intval FROM vars WHERE name = 'data_version'"
    assert sqlite3.connect(db).execute(version).fetchone() == \
        sqlite3.connect(copy).execute(version).fetchone()


def test_wallet_main_and_backup_files_hold_the_same_node(ln):
    """CLN's `--wallet=sqlite3://MAIN:BACKUP`: every transaction is written to both files;
    the backup alone brings the node back with its channels, and two files at different
    `data_version`s stop the node at start instead of running on the one behind."""
    a = ln.node(options={"wallet": "sqlite3://fulgur.sqlite3:copy/backup.sqlite3"})
    b = ln.node()
    backup = a.net_dir / "copy" / "backup.sqlite3"
    assert backup.is_file()
    ln.fund(a)
    ln.open(a, b)
    for i in range(3):
        a.rpc.pay(b.rpc.invoice(1_000_000, f"two{i}", "in both files")["bolt11"])
    a.stop()
    version = "SELECT intval FROM vars WHERE name = 'data_version'"
    main_v = sqlite3.connect(a.net_dir / "fulgur.sqlite3").execute(version).fetchone()
    assert sqlite3.connect(backup).execute(version).fetchone() == main_v
    assert main_v[0] > 0

    # The main file is lost: the backup takes its place.
    for f in a.net_dir.glob("fulgur.sqlite3*"):
        f.unlink()
    a.options["wallet"] = "sqlite3://copy/backup.sqlite3"
    a.start()
    a.wait_for_log("Lightning engine started", start=a.start_mark)
    assert len([p for p in a.rpc.listsendpays()["payments"] if p["status"] == "complete"]) == 3
    ln.connect(a, b)
    wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="reconnected")
    assert a.rpc.pay(b.rpc.invoice(1_000_000, "after", "x")["bolt11"])["status"] == "complete"
    assert b.rpc.listclosedchannels()["closedchannels"] == []
    a.stop()

    # A backup behind the main file: the node does not start on them.
    snapshot(backup, a.net_dir / "new-main.sqlite3")
    c = sqlite3.connect(backup)
    c.execute("UPDATE vars SET intval = intval - 1 WHERE name = 'data_version'")
    c.commit()
    c.close()
    a.options["wallet"] = "sqlite3://new-main.sqlite3:copy/backup.sqlite3"
    rc, err = a.start_expect_exit()
    assert rc != 0 and "one of them is behind" in err, err
