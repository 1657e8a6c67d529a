"""`--rescan`, as CLN users restore a node from its `hsm_secret`: a fresh node with the seed
of a funded one starts at the chain's tip and sees none of the seed's coins; restarted with
`rescan=-HEIGHT` (from a height) or `rescan=N` (N blocks below the tip), its wallet scans
those blocks again and finds them."""

import shutil

from conftest import wait_for
from lnnet import free_port


def confirmed(n):
    return sorted(o["amount_msat"] for o in n.rpc.listfunds()["outputs"]
                  if o["status"] == "confirmed")


def test_rescan_finds_a_restored_seed_s_coins(ln):
    a = ln.node()
    ln.fund(a, 0.5)
    born = ln.chain.height()
    ln.fund(a, 0.25)
    assert confirmed(a) == [25_000_000_000, 50_000_000_000]
    a.rpc_id = a.rpc.getinfo()["id"]
    a.stop()
    ln.mine(3)

    # A fresh node with A's seed (A is stopped: one node per key).
    opts = dict(ln.chain.options())
    opts["bind-addr"] = f"127.0.0.1:{free_port()}"
    b = ln.factory.get_node(options=opts, start=False)
    b.net_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(a.net_dir / "hsm_secret", b.net_dir / "hsm_secret")
    b.start()
    b.wait_for_log("Lightning engine started")
    assert b.rpc.getinfo()["id"] == a.rpc_id
    assert confirmed(b) == []

    # N blocks below the tip: only the second deposit is that recent.
    b.options["rescan"] = ln.chain.height() - born  # from block `born`: the next ones
    ln.restart(b)
    b.wait_for_log(r"Rescanning from block \d+ for wallet")
    wait_for(lambda: confirmed(b) == [25_000_000_000], what="the recent deposit")

    # From height 1: everything.
    b.options["rescan"] = -1
    ln.restart(b)
    b.wait_for_log(r"Rescanning from block 1 for wallet \(--rescan=-1\)")
    wait_for(lambda: confirmed(b) == [25_000_000_000, 50_000_000_000], what="both deposits")
    assert b.rpc.listconfigs("rescan")["configs"]["rescan"]["value_int"] == -1
