"""Peers the way CLN's tests use them (`tests/test_connection.py`): what `disconnect`
refuses while a channel needs its peer (issue 18; LNbits relies on the refusal)."""

import pytest

from conftest import RpcError, wait_for


def test_disconnect_refuses_a_peer_with_an_active_channel_unless_forced(ln):
    a, b, c = ln.node(), ln.node(), ln.node()
    # No channel: disconnect simply disconnects.
    ln.connect(a, c)
    a.rpc.disconnect(c.id)
    wait_for(lambda: not a.rpc.listpeers(c.id)["peers"], what="c gone")
    with pytest.raises(RpcError, match="Peer not connected"):
        a.rpc.disconnect(c.id)

    ln.fund(a)
    ln.open(a, b)
    with pytest.raises(RpcError) as e:
        a.rpc.disconnect(b.id)
    assert e.value.error["code"] == -1
    assert e.value.error["message"] == "Peer has (at least one) channel in state CHANNELD_NORMAL"
    with pytest.raises(RpcError, match="CHANNELD_NORMAL"):
        a.rpc.disconnect(b.id, force=False)
    assert a.rpc.listpeers(b.id)["peers"][0]["connected"]

    a.rpc.disconnect(b.id, force=True)
    # (The channel's peers reconnect by themselves a few seconds later: look at the log.)
    b.wait_for_log(f"Peer {a.id} disconnected")
