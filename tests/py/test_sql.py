"""`sql` and `listsqlschemas`, modelled on CLN's `test_sql`: CLN's tables and column names
over a small network with a payment through it (peers, peerchannels and their related
tables, forwards, invoices, sendpays, nodes, channels), hex fields as BLOBs compared with
`x'...'` and returned as hex, booleans as 0/1; writes, other statements and functions off
CLN's list refused; listsqlschemas in CLN's shape."""

import pytest

from conftest import RpcError, wait_for


def rows(node, query):
    return node.rpc.sql(query)["rows"]


def test_sql_over_a_small_network(ln):
    a, b, c = ln.node(), ln.node(), ln.node()
    ab, bc = ln.line(a, b, c)
    inv = c.rpc.invoice(100_000, "lbl", "through b")
    ln.pay(a, inv["bolt11"], c.id, 100_000)

    assert sorted(rows(b, "SELECT id, connected FROM peers")) == sorted([[a.id, 1], [c.id, 1]])
    got = rows(b, "SELECT peer_id, to_us_msat, total_msat, peerchannels_status.status "
                  "FROM peerchannels INNER JOIN peerchannels_status "
                  "ON peerchannels_status.row = peerchannels.rowid")
    assert {r[0] for r in got} == {a.id, c.id}
    assert all(r[2] == 1_000_000_000 for r in got)
    # CLN's billboard line.
    assert all(r[3] == "CHANNELD_NORMAL:Channel ready for use." for r in got), got
    feats = rows(b, "SELECT features FROM peerchannels_features")
    assert ["option_static_remotekey"] in feats or ["option_anchors"] in feats, feats
    [fwd] = rows(b, "SELECT in_channel, out_channel, in_msat, out_msat, fee_msat, status "
                    "FROM forwards")
    assert fwd[:2] == [ab, bc] and fwd[3] == 100_000 and fwd[2] == fwd[3] + fwd[4]
    assert fwd[5] == "settled"
    assert rows(c, "SELECT label, status, amount_msat, amount_received_msat FROM invoices "
                   "WHERE label='lbl'") == [["lbl", "paid", 100_000, 100_000]]
    # Hex fields are BLOBs: compared with x'...', given back as hex.
    h = inv["payment_hash"]
    assert rows(c, f"SELECT payment_hash FROM invoices WHERE payment_hash = x'{h}'") == [[h]]
    assert rows(a, f"SELECT status, amount_msat FROM sendpays WHERE payment_hash = x'{h}'") \
        == [["complete", 100_000]]
    others = rows(a, f"SELECT nodeid FROM nodes WHERE nodeid != x'{a.id}'")
    assert sorted(r[0] for r in others) == sorted([b.id, c.id])
    assert rows(a, "SELECT count(*) FROM channels") == [[4]]
    assert rows(a, f"SELECT short_channel_id, direction FROM channels WHERE source = x'{a.id}'") \
        == [[ab, [0, 1][a.id > b.id]]]

    # What changes between queries is seen: each query reads its tables afresh.
    c.rpc.invoice(5_000, "second", "another")
    assert rows(c, "SELECT count(*) FROM invoices") == [[2]]


def test_sql_is_read_only_and_bounded(node_factory):
    n = node_factory.get_node()
    for bad in ["DELETE FROM invoices", "INSERT INTO peers (id) VALUES (x'00')",
                "UPDATE invoices SET label = 'x'", "DROP TABLE invoices",
                "CREATE TABLE x (a)", "PRAGMA table_info(invoices)",
                "ATTACH DATABASE '/tmp/x' AS y", "SELECT load_extension('x')",
                "SELECT * FROM sqlite_master", "SELECT * FROM nosuchtable"]:
        with pytest.raises(RpcError, match="query failed with") as e:
            n.rpc.sql(bad)
        assert e.value.error["code"] == -1
    with pytest.raises(RpcError, match="not authorized"):
        n.rpc.sql("DELETE FROM invoices")
    # Functions on CLN's list are allowed (SQLite's hex(NULL) is the empty string).
    assert n.rpc.sql("SELECT count(*), max(amount_msat), hex(payment_hash) FROM invoices")["rows"] \
        == [[0, None, ""]]


def test_listsqlschemas(node_factory):
    n = node_factory.get_node()
    schemas = n.rpc.listsqlschemas()["schemas"]
    names = [s["tablename"] for s in schemas]
    for t in ["channels", "closedchannels", "forwards", "htlcs", "invoices", "nodes",
              "peerchannels", "peerchannels_features", "peers", "sendpays", "transactions",
              "transactions_inputs", "chainmoves", "channelmoves", "networkevents"]:
        assert t in names, t
    [feats] = n.rpc.listsqlschemas("peerchannels_features")["schemas"]
    assert feats == {"tablename": "peerchannels_features",
                     "columns": [{"name": "rowid", "type": "INTEGER"},
                                 {"name": "row", "type": "INTEGER"},
                                 {"name": "arrindex", "type": "INTEGER"},
                                 {"name": "features", "type": "TEXT"}]}
    [inv] = n.rpc.listsqlschemas("invoices")["schemas"]
    cols = {c["name"]: c["type"] for c in inv["columns"]}
    assert cols["created_index"] == "INTEGER" and cols["payment_hash"] == "BLOB"
    assert cols["amount_msat"] == "INTEGER" and cols["label"] == "TEXT"
    assert inv["indices"] == [["payment_hash"]]
    with pytest.raises(RpcError, match="Unknown table"):
        n.rpc.listsqlschemas("nosuchtable")
    wait_for(lambda: True)
