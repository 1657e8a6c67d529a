"""`commando` between two Fulgur nodes, modelled on CLN's `test_commando`: requests and
replies over Lightning custom messages, authorised by runes checked on the serving node
(a wrong rune, a method the rune does not allow, a rate-limited rune, a blacklisted one),
`params` and `filter` passed through, errors passed back with their code, and requests
and replies larger than one 65000-byte message."""

import json

import pytest

from conftest import RpcError

LOCAL, REMOTE, REMOTE_AUTH = 0x4C4F, 0x4C50, 0x4C51


def commando(node, peer, method, **kw):
    payload = {"peer_id": peer.id, "method": method}
    payload.update(kw)
    return node.rpc.call("commando", payload)


@pytest.fixture
def pair(ln):
    l1, l2 = ln.node(), ln.node()
    ln.connect(l2, l1)
    return l1, l2


def test_commando_runs_what_the_rune_allows(pair):
    l1, l2 = pair
    rune = l1.rpc.createrune()["rune"]

    # A rune l1 did not make.
    with pytest.raises(RpcError, match="Not authorized: Not derived from master") as e:
        commando(l2, l1, "listpeers",
                 rune="VXY4AAkrPyH2vzSvOHnI7PDVfS6O04bRQLUCIUFJD5Y9NjQmbWV0aG9kPWludm9pY2UmcmF0ZT0yMZ==")
    assert e.value.error["code"] == REMOTE_AUTH
    with pytest.raises(RpcError, match="Missing rune") as e:
        commando(l2, l1, "listpeers")
    assert e.value.error["code"] == REMOTE

    res = commando(l2, l1, "listpeers", rune=rune)
    assert [p["id"] for p in res["peers"]] == [l2.id]
    res = commando(l2, l1, "listpeers", rune=rune, params={"id": l2.id})
    assert [p["id"] for p in res["peers"]] == [l2.id]
    res = commando(l2, l1, "listpeers", rune=rune, params=[l2.id])
    assert [p["id"] for p in res["peers"]] == [l2.id]
    # `params` and `filter` as strings of JSON, as lightning-cli passes them.
    res = commando(l2, l1, "listpeers", rune=rune, params=json.dumps({"id": l2.id}),
                   filter=json.dumps({"peers": [{"id": True}]}))
    assert res == {"peers": [{"id": l2.id}]}
    res = commando(l2, l1, "listpeers", rune=rune, filter={"peers": [{"id": True}]})
    assert res == {"peers": [{"id": l2.id}]}

    # The serving node's errors come back with their code.
    with pytest.raises(RpcError, match="missing required parameter"):
        commando(l2, l1, "withdraw", rune=rune)
    with pytest.raises(RpcError, match="unknown parameter: foobar"):
        commando(l2, l1, "invoice", rune=rune, params={"foobar": 1})
    commando(l2, l1, "invoice", rune=rune,
             params={"amount_msat": 1000, "label": "dup", "description": "d"})
    with pytest.raises(RpcError) as e:
        commando(l2, l1, "invoice", rune=rune,
                 params={"amount_msat": 1000, "label": "dup", "description": "d"})
    assert e.value.error["code"] == 900, e.value.error
    # A peer id that is not one.
    with pytest.raises(RpcError, match="peer_id: should be a node id"):
        l2.rpc.call("commando", {"peer_id": "02ab", "method": "getinfo", "rune": rune})


def test_commando_requests_and_replies_over_several_messages(pair):
    l1, l2 = pair
    rune = l1.rpc.createrune()["rune"]
    big = "A" * 200_000
    # The request (over 65000 bytes) goes in four messages...
    commando(l2, l1, "datastore", rune=rune, params={"key": ["big"], "string": big})
    assert l1.rpc.listdatastore(["big"])["datastore"][0]["string"] == big
    # ...and so does the reply.
    ret = commando(l2, l1, "listdatastore", rune=rune, params={"key": ["big"]})
    assert len(json.dumps(ret)) > 65535
    assert ret["datastore"][0]["string"] == big
    ret = commando(l2, l1, "invoice", rune=rune,
                   params={"amount_msat": "any", "label": "label", "description": big,
                           "deschashonly": True})
    assert "bolt11" in ret


def test_commando_refuses_what_the_rune_forbids(pair):
    l1, l2 = pair
    # A method the rune does not allow.
    only_peers = l1.rpc.createrune(restrictions=[["method=listpeers"]])["rune"]
    assert commando(l2, l1, "listpeers", rune=only_peers)["peers"]
    with pytest.raises(RpcError, match="Invalid rune: Not permitted: method is not equal to "
                                       "listpeers") as e:
        commando(l2, l1, "getinfo", rune=only_peers)
    assert e.value.error["code"] == REMOTE_AUTH
    # A rune for another peer.
    elsewhere = l1.rpc.createrune(restrictions=[[f"id={l1.id}"]])["rune"]
    with pytest.raises(RpcError, match="Invalid rune: Not permitted: id is not equal to") as e:
        commando(l2, l1, "getinfo", rune=elsewhere)
    assert e.value.error["code"] == REMOTE_AUTH
    # A rate-limited rune: once a minute.
    once = l1.rpc.createrune(restrictions=[["rate=1"]])["rune"]
    assert commando(l2, l1, "getinfo", rune=once)["id"] == l1.id
    with pytest.raises(RpcError, match="Invalid rune: Not permitted: too soon") as e:
        commando(l2, l1, "getinfo", rune=once)
    assert e.value.error["code"] == REMOTE_AUTH
    # A blacklisted rune.
    r = l1.rpc.createrune()
    assert commando(l2, l1, "getinfo", rune=r["rune"])["id"] == l1.id
    l1.rpc.blacklistrune(start=int(r["unique_id"]))
    with pytest.raises(RpcError, match="Invalid rune: Not authorized: Blacklisted rune") as e:
        commando(l2, l1, "getinfo", rune=r["rune"])
    assert e.value.error["code"] == REMOTE_AUTH
