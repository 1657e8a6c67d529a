"""CLN's record of balance changes (issue 18): `listchainmoves` and `listchannelmoves`,
kept whether or not a plugin listens to `coin_movement`, paged by `created_index`, and
`wait` on their created index, as CLN's tests/test_coinmoves.py reads them."""

import pytest

from conftest import RpcError, wait_for


def test_chain_and_channel_moves_are_recorded(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a, 0.01)
    deposit = wait_for(lambda: a.rpc.listchainmoves()["chainmoves"], what="A's deposit")
    [d] = deposit
    assert d["account_id"] == "wallet" and d["primary_tag"] == "deposit"
    assert d["credit_msat"] == 1_000_000_000 and d["debit_msat"] == 0
    assert d["output_msat"] == 1_000_000_000 and d["created_index"] == 1
    assert d["blockheight"] == ln.chain.height() and d["extra_tags"] == []

    ln.connect(a, b)
    r = a.rpc.fundchannel(b.id, 500_000)
    ln.mine(6)
    wait_for(lambda: [c["state"] for c in a.rpc.listpeerchannels(b.id)["channels"]]
             == ["CHANNELD_NORMAL"], what="channel normal")
    moves = wait_for(lambda: (lambda m: len(m) >= 4 and m)(a.rpc.listchainmoves()["chainmoves"]),
                     what="A's open recorded")
    tags = [m["primary_tag"] for m in moves]
    # The funding spent the deposit (withdrawal), made change (deposit) and the channel.
    assert tags.count("withdrawal") == 1 and tags.count("channel_open") == 1, tags
    assert [m["created_index"] for m in moves] == list(range(1, len(moves) + 1))
    w = next(m for m in moves if m["primary_tag"] == "withdrawal")
    assert w["utxo"] == d["utxo"] and w["spending_txid"] == r["txid"]
    assert w["debit_msat"] == 1_000_000_000
    op = next(m for m in moves if m["primary_tag"] == "channel_open")
    assert op["account_id"] == r["channel_id"] and op["extra_tags"] == ["opener"]
    assert op["credit_msat"] == 500_000_000 and op["peer_id"] == b.id
    assert op["utxo"] == f"{r['txid']}:{r['outnum']}"
    [bop] = wait_for(lambda: b.rpc.listchainmoves()["chainmoves"], what="B's open")
    assert bop["primary_tag"] == "channel_open" and bop["credit_msat"] == 0
    assert bop["extra_tags"] == []

    # A payment: a debit for A, a credit for B, in the channel's account.
    inv = b.rpc.invoice(12_345_000, "moves", "moves")
    a.rpc.pay(inv["bolt11"])
    [out] = wait_for(lambda: a.rpc.listchannelmoves()["channelmoves"], what="A's payment")
    assert out["account_id"] == r["channel_id"] and out["primary_tag"] == "invoice"
    assert out["debit_msat"] == 12_345_000 and out["credit_msat"] == 0
    assert out["payment_hash"] == inv["payment_hash"] and out["fees_msat"] == 0
    [got] = wait_for(lambda: b.rpc.listchannelmoves()["channelmoves"], what="B's receipt")
    assert got["credit_msat"] == 12_345_000 and got["primary_tag"] == "invoice"

    # Paging by created_index, as CLN.
    page = a.rpc.listchainmoves(index="created", start=2, limit=2)["chainmoves"]
    assert [m["created_index"] for m in page] == [2, 3]
    assert a.rpc.listchainmoves(index="created", start=100)["chainmoves"] == []
    for bad, msg in (({"start": 1}, r"Can only specify \{start\} with \{index\}"),
                     ({"limit": 1}, r"Can only specify \{limit\} with \{index\}"),
                     ({"index": "updated"}, "since chainmoves are never updated")):
        with pytest.raises(RpcError, match=msg) as e:
            a.rpc.call("listchainmoves", bad)
        assert e.value.error["code"] == -32602
    # wait: the next chain move's created index.
    n = len(a.rpc.listchainmoves()["chainmoves"])
    assert a.rpc.wait("chainmoves", "created", n) == {"subsystem": "chainmoves", "created": n}
    assert a.rpc.wait("channelmoves", "created", 1) == {"subsystem": "channelmoves", "created": 1}
    fut = a.new_rpc()
    import threading
    out = {}
    t = threading.Thread(target=lambda: out.update(fut.wait("chainmoves", "created", n + 1)))
    t.start()
    ln.fund(a, 0.001)
    t.join(60)
    assert out == {"subsystem": "chainmoves", "created": n + 1}
