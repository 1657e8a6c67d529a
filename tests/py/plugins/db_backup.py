#!/usr/bin/env python3
"""A live copy of the node's SQLite database over the `db_write` hook, done the way CLN's
`backup` plugin does it (that plugin is not on PyPI, so the suite cannot install it): the
copy starts as a copy of the database taken while the node was stopped (`backup-cli init`);
each hook call must carry the copy's `data_version` + 1, and its writes are applied to the
copy in one transaction before the plugin answers `continue`. Anything else is refused, so
the node's transaction fails rather than the copy falling behind.

Configured by environment (`db_write` comes before `init`, as in CLN, so options are not
known yet; CLN's backup plugin reads a file for the same reason): `DB_BACKUP_FILE` (the
copy), `DB_BACKUP_REFUSE_MATCHING` (refuse a transaction with a write containing this
text: a backup that cannot take it; unset = never)."""
import os
import sqlite3

from pyln.client import Plugin

plugin = Plugin()
state = {"calls": 0, "db": None}


def copy():
    if state["db"] is None:
        state["db"] = sqlite3.connect(os.environ["DB_BACKUP_FILE"], isolation_level=None)
    return state["db"]


@plugin.hook("db_write")
def on_db_write(writes, data_version, plugin, **kwargs):
    state["calls"] += 1
    refuse = os.environ.get("DB_BACKUP_REFUSE_MATCHING")
    # Text or, in a blob (the datastore's), hex.
    if refuse and any(refuse in w or refuse.encode().hex() in w.lower() for w in writes):
        return {"result": "fail"}
    db = copy()
    (have,) = db.execute("SELECT intval FROM vars WHERE name = 'data_version'").fetchone()
    if data_version != have + 1:
        plugin.log(f"data_version {data_version} after {have}: the copy is not this "
                   f"database's", level="broken")
        return {"result": "fail"}
    db.execute("BEGIN")
    try:
        for w in writes:
            db.execute(w)
        db.execute("COMMIT")
    except sqlite3.Error as e:
        db.execute("ROLLBACK")
        plugin.log(f"cannot apply a write to the copy: {e}", level="broken")
        return {"result": "fail"}
    return {"result": "continue"}


plugin.run()
