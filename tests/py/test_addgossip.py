"""`addgossip` (issue 18): gossip messages fed by hand reach the graph, as in CLN's
test_addgossip. A's graph gives the raw messages (`dev gossip`, as CLN's test reads them
from its io log); C, connected to nobody, learns the channel and both nodes from them,
and a corrupted update is refused for its signature."""

import pytest

from conftest import RpcError, wait_for


def test_addgossip_feeds_the_graph(ln):
    a = ln.node(options={"developer": None})
    b = ln.node()
    c = ln.node()
    ln.fund(a)
    scid = ln.open(a, b)
    ln.wait_gossip(a, scid)
    # Both node announcements follow the channel's.
    msgs = wait_for(lambda: (lambda g: len(g) == 5 and g)(a.rpc.call("dev", ["gossip"])["gossip"]),
                    what="A's gossip complete")
    kinds = sorted(m[:4] for m in msgs)
    assert kinds == ["0100", "0101", "0101", "0102", "0102"], kinds
    assert c.rpc.listchannels()["channels"] == []
    for m in msgs:
        assert c.rpc.addgossip(m) == {}
    # The announcement waits for its funding output to be looked up.
    wait_for(lambda: len(c.rpc.listchannels()["channels"]) == 2, what="C knows the channel")
    wait_for(lambda: len(c.rpc.listnodes()["nodes"]) == 2, what="C knows the nodes")
    assert {ch["short_channel_id"] for ch in c.rpc.listchannels()["channels"]} == {scid}
    # Again: duplicates are fine (best effort, as CLN).
    for m in msgs:
        c.rpc.addgossip(m)

    # A newer timestamp (bytes 106..110 of a channel_update) under the old signature.
    update = next(m for m in msgs if m.startswith("0102"))
    ts = int(update[212:220], 16)
    bad = update[:212] + f"{ts + 1:08x}" + update[220:]
    with pytest.raises(RpcError, match="Bad signature") as e:
        c.rpc.addgossip(bad)
    assert e.value.error["code"] == -1
    for junk, msg in (("01", "too short"), ("abcd00", "Unknown gossip type"),
                      ("0100" + "00" * 10, "Malformed channel_announcement")):
        with pytest.raises(RpcError, match=msg):
            c.rpc.addgossip(junk)
    with pytest.raises(RpcError, match="should be hex") as e:
        c.rpc.addgossip("xyz")
    assert e.value.error["code"] == -32602
