"""CLN's on-chain wallet commands beyond withdraw (issue 18): `multiwithdraw` (one
transaction, several payees, as CLN's `test_multiwithdraw_simple`), `listaddresses` (the
addresses `newaddr` issued) and `upgradewallet` (nothing to upgrade in a wallet without
P2SH outputs). Replies are validated against CLN's schemas by pyln's ValidatingRpc."""

import pytest

from conftest import RpcError, wait_for


def confirmed_sat(n):
    return sum(o["amount_msat"] for o in n.rpc.listfunds()["outputs"]
               if o["status"] == "confirmed") // 1000


def test_multiwithdraw_pays_several_addresses_in_one_transaction(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a, 0.01)
    to1 = b.rpc.newaddr("bech32")["bech32"]
    to2 = b.rpc.newaddr()["p2tr"]
    r = a.rpc.multiwithdraw([{to1: "200000sat"}, {to2: 300_000}])
    assert set(r) == {"tx", "txid"}
    # Broadcast when it returns, as CLN.
    assert r["txid"] in ln.chain.call("getrawmempool")
    outs = ln.chain.call("decoderawtransaction", r["tx"])["vout"]
    paid = {o["scriptPubKey"].get("address"): round(o["value"] * 10**8) for o in outs}
    assert paid[to1] == 200_000 and paid[to2] == 300_000
    ln.mine(1)
    wait_for(lambda: confirmed_sat(b) == 500_000, what="B's coins")
    # The change came back to A, minus the fee.
    wait_for(lambda: 0 < 1_000_000 - 500_000 - confirmed_sat(a) < 10_000, what="A's change")
    # Short of funds: CLN's 301, and nothing stays reserved.
    before = a.rpc.listfunds()["outputs"]
    with pytest.raises(RpcError) as e:
        a.rpc.multiwithdraw([{to1: 300_000}, {to2: 300_000}])
    assert e.value.error["code"] == 301
    assert a.rpc.listfunds()["outputs"] == before
    for bad in ([], [{to1: 1000, to2: 1000}], [{"nonsense": 1000}], "x"):
        with pytest.raises(RpcError) as e:
            a.rpc.multiwithdraw(bad)
        assert e.value.error["code"] == -32602, bad
    # 'all' sends everything left.
    r = a.rpc.multiwithdraw([{to1: "all"}])
    ln.mine(1)
    wait_for(lambda: confirmed_sat(a) == 0, what="A emptied")


def test_listaddresses_lists_what_newaddr_issued(ln):
    n = ln.node()
    # The engine may have taken one already (its channel-close destination).
    base = n.rpc.listaddresses()["addresses"]
    assert [x["keyidx"] for x in base] == list(range(1, len(base) + 1))
    first = n.rpc.newaddr("all")
    second = n.rpc.newaddr("bech32")["bech32"]
    third = n.rpc.newaddr("bech32")["bech32"]
    got = n.rpc.listaddresses()["addresses"]
    # One address an entry; bech32 and p2tr are counted separately (separate keys here).
    assert all(len(x) == 2 for x in got), got
    bech = [x for x in got if "bech32" in x]
    assert [x["bech32"] for x in bech][-3:] == [first["bech32"], second, third]
    k = bech[-3]["keyidx"]  # the first newaddr's bech32 index
    assert [x["keyidx"] for x in bech][-3:] == [k, k + 1, k + 2]
    assert [x for x in got if "p2tr" in x] == [{"keyidx": 1, "p2tr": first["p2tr"]}]
    assert [x["keyidx"] for x in got] == sorted(x["keyidx"] for x in got)
    assert n.rpc.listaddresses(start=k + 1, limit=1)["addresses"] == [
        {"keyidx": k + 1, "bech32": second}]
    assert n.rpc.listaddresses(address=third)["addresses"] == [{"keyidx": k + 2, "bech32": third}]
    assert n.rpc.listaddresses(address=first["p2tr"])["addresses"] == [
        {"keyidx": 1, "p2tr": first["p2tr"]}]
    # A valid address the node never issued: nothing; not an address: CLN's param error.
    other = ln.node().rpc.newaddr("bech32")["bech32"]
    assert n.rpc.listaddresses(address=other) == {"addresses": []}
    with pytest.raises(RpcError) as e:
        n.rpc.listaddresses(address="nonsense")
    assert e.value.error["code"] == -32602
    # Issued addresses survive a restart (which may issue one more, for the engine).
    ln.restart(n)
    assert n.rpc.listaddresses()["addresses"][:len(got)] == got


def test_upgradewallet_has_nothing_to_upgrade(ln):
    n = ln.node()
    ln.fund(n, 0.001)
    assert n.rpc.upgradewallet() == {"upgraded_outs": 0}
    assert n.rpc.upgradewallet(feerate="urgent", reservedok=True) == {"upgraded_outs": 0}
    with pytest.raises(RpcError) as e:
        n.rpc.upgradewallet(feerate="fast-ish")
    assert e.value.error["code"] == -32602
