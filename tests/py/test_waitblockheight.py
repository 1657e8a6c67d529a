"""`waitblockheight` as CLN's (clboss waits for blocks with it; issue 18)."""

import threading

import pytest

from conftest import RpcError


def test_waitblockheight_returns_at_the_height_or_times_out(ln):
    a = ln.node()
    ln.mine(1)
    h = a.rpc.getinfo()["blockheight"]
    assert a.rpc.waitblockheight(h) == {"blockheight": h}
    assert a.rpc.waitblockheight(h - 1) == {"blockheight": h}
    with pytest.raises(RpcError) as e:
        a.rpc.waitblockheight(h + 1, 1)
    assert e.value.error == {"code": 2000, "message": "Timed out."}

    got = {}
    waiter = threading.Thread(target=lambda: got.update(a.rpc.waitblockheight(h + 2, 60)))
    waiter.start()
    ln.mine(2)
    waiter.join(60)
    assert not waiter.is_alive()
    assert got["blockheight"] >= h + 2
