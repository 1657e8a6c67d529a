"""`close` waits as CLN's does: with `unilateraltimeout=0` it waits for the peer as long as it
takes and closes mutually; it never force-closes a channel because its peer is offline."""

import threading

from conftest import ASKED_FORCE_CLOSE, wait_for


def test_close_with_timeout_zero_waits_for_the_peer_and_closes_mutually(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a)
    ln.open(a, b)
    b.stop()
    wait_for(lambda: not a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="B gone")
    result = {}
    rpc = a.new_rpc()
    closer = threading.Thread(target=lambda: result.update(rpc.close(b.id, unilateraltimeout=0)))
    closer.start()
    # While B is away the channel is untouched.
    a.wait_for_log(r"close: peer [0-9a-f]{66} is disconnected; the mutual close waits for it "
                   r"as long as it takes")
    assert a.rpc.listpeerchannels(b.id)["channels"][0]["state"] == "CHANNELD_NORMAL"
    assert ln.chain.call("getrawmempool") == []
    mark = b.log_mark()
    b.start()
    b.wait_for_log("Lightning engine started", start=mark)
    wait_for(lambda: not closer.is_alive(), what="close returns")
    assert result["type"] == "mutual", result
    assert result["txids"][0] in ln.chain.call("getrawmempool")


def test_close_with_the_peer_offline_forces_after_its_timeout(ln):
    a, b = ln.node(broken_log=ASKED_FORCE_CLOSE), ln.node()
    ln.fund(a)
    ln.open(a, b)
    b.stop()
    wait_for(lambda: not a.rpc.listpeerchannels(b.id)["channels"][0]["peer_connected"],
             what="B gone")
    r = a.rpc.close(b.id, unilateraltimeout=1)
    assert r["type"] == "unilateral"
    assert r["txids"][0] in ln.chain.call("getrawmempool")
