"""CLN's network events (issue 18): `listnetworkevents` records connections made (with how
long an outgoing one took), lost (with how long it lasted) and failed attempts (with why);
`delnetworkevent` forgets one; `wait networkevents` follows them."""

import pytest

from conftest import RpcError, wait_for


def events(n, **kw):
    return n.rpc.call("listnetworkevents", kw)["networkevents"]


def test_connections_are_recorded(ln):
    a, b, dead = ln.node(), ln.node(), ln.node()
    dead_port = dead.port
    dead.stop()
    ln.connect(a, b)
    [c] = wait_for(lambda: events(a), what="A's connect event")
    assert c["type"] == "connect" and c["peer_id"] == b.id and c["created_index"] == 1
    assert c["duration_nsec"] > 0
    [bc] = wait_for(lambda: events(b), what="B's connect event")
    assert bc["type"] == "connect" and bc["peer_id"] == a.id and "duration_nsec" not in bc

    a.rpc.disconnect(b.id, force=True)
    ev = wait_for(lambda: (lambda e: len(e) == 2 and e)(events(a)), what="A's disconnect")
    assert ev[1]["type"] == "disconnect" and ev[1]["peer_id"] == b.id
    assert ev[1]["duration_nsec"] > 0

    with pytest.raises(RpcError):
        a.rpc.connect(dead.id, "127.0.0.1", dead_port)
    ev = wait_for(lambda: (lambda e: len(e) == 3 and e)(events(a)), what="A's connect_fail")
    f = ev[2]
    assert f["type"] == "connect_fail" and f["peer_id"] == dead.id
    assert f["connect_attempted"] is True and "refused" in f["reason"].lower()

    # Filtering and paging, as CLN.
    assert [e["type"] for e in events(a, id=b.id)] == ["connect", "disconnect"]
    assert [e["created_index"] for e in events(a, index="created", start=2, limit=1)] == [2]
    with pytest.raises(RpcError, match=r"Can only specify \{start\} with \{index\}"):
        events(a, start=2)

    # Deleting, and waiting on the indexes.
    assert a.rpc.wait("networkevents", "created", 3)["created"] == 3
    assert a.rpc.delnetworkevent(2) == {}
    assert [e["created_index"] for e in events(a)] == [1, 3]
    assert a.rpc.wait("networkevents", "deleted", 1) == {"subsystem": "networkevents", "deleted": 1}
    with pytest.raises(RpcError, match="Could not find that networkevent") as e:
        a.rpc.delnetworkevent(2)
    assert e.value.error["code"] == 1402


def test_reconnection_attempts_back_off(ln):
    """A channel peer that stays away is tried again after 5 s, then 10 s, ... (up to a
    minute), as CLN backs off: each attempt is a connect_fail event, so the log of a dead
    peer grows slowly, not every 5 s."""
    a, b = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, b)
    b.stop()

    def fails():
        return [e for e in events(a, id=b.id) if e["type"] == "connect_fail"]
    f = wait_for(lambda: (lambda x: len(x) >= 3 and x)(fails()), timeout=90,
                 what="three failed reconnections")
    gaps = [f[i + 1]["timestamp"] - f[i]["timestamp"] for i in range(2)]
    assert gaps[0] >= 4 and gaps[1] >= 9 and gaps[1] > gaps[0], gaps
