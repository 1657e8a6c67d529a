"""The built-in `autopilot` plugin end to end, on one devnet shared by the whole module
(built once; the tests run in file order and each builds on the state the previous left).

    N6 ─┐           ┌─ N4
    N7 ─┴─ N1 ── N0 ┼─ N5        every channel 200k sat, public, announced with an address
           │  ╲    └┬─ N3
           │   ╲── N2┘
           P (autopilot, connected to N0 only for gossip; starts enabled but in dry run)

Preferential scores rank N0 (degree 5), N1 (4), N2 (3), N3 (2), then the leaves. P has
five 400k-sat coins (2M sat); with budget 50 % and reserve 300k it may put 1M into
channels, 150k..250k each, at most 3 channels: three opens of 250k."""

from types import SimpleNamespace

import pytest

import lnnet
from conftest import RpcError, wait_for

COIN_SAT = 400_000
OPTIONS = {
    "autopilot-enable": "true",
    "autopilot-dry-run": "true",
    "autopilot-budget-percent": 50,
    "autopilot-reserve-sat": 300_000,
    "autopilot-max-channels": 3,
    "autopilot-min-channel-sat": 150_000,
    "autopilot-max-channel-sat": 250_000,
    "autopilot-max-feerate": 5000,
    "autopilot-interval": 3600,
}


def announced_node(ln):
    """A node that announces its listening address, so others can find it in listnodes."""
    port = lnnet.free_port()
    n = ln.node(options={"bind-addr": f"127.0.0.1:{port}", "announce-addr": f"127.0.0.1:{port}"})
    n.port = port
    return n


def confirmed_coins(node):
    return [o for o in node.rpc.listfunds()["outputs"] if o["status"] == "confirmed"]


@pytest.fixture(scope="module")
def net():
    with lnnet.module_network("fulgur-ap-") as ln:
        chain = ln.chain
        n = SimpleNamespace(ln=ln, chain=chain)
        n.g = [announced_node(ln) for _ in range(8)]
        n.p = ln.node(options=OPTIONS)
        g = n.g
        opens = [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 1), (7, 1), (2, 1), (3, 2)]
        coins = {}
        for a, _ in opens:
            coins[a] = coins.get(a, 0) + 1
        for a, k in coins.items():
            for _ in range(k):
                chain.call("sendtoaddress", g[a].rpc.newaddr("bech32")["bech32"], 0.003)
        for _ in range(5):
            chain.call("sendtoaddress", n.p.rpc.newaddr("bech32")["bech32"], COIN_SAT / 1e8)
        ln.mine(1)
        for a, k in coins.items():
            wait_for(lambda: len(confirmed_coins(g[a])) >= k, what="coins")
        wait_for(lambda: len(confirmed_coins(n.p)) >= 5, what="P's coins")
        # P follows the graph from N0 and N7 (no channels: gossip-only peers), connected
        # before the channels are announced so it hears the announcements as they spread;
        # from two peers, because an update arriving while its channel's announcement is
        # still being checked is dropped, and the second copy then fills the gap.
        ln.connect(n.p, g[0])
        ln.connect(n.p, g[7])
        for a, b in opens:
            ln.connect(g[a], g[b])
            r = g[a].rpc.fundchannel(g[b].id, 200_000)
            wait_for(lambda: r["txid"] in chain.call("getrawmempool"), what="funding tx")
        ln.mine(7)
        n.scids = []
        for a, b in opens:
            def normal():
                cs = [c for c in g[a].rpc.listpeerchannels(g[b].id)["channels"]
                      if c["state"] == "CHANNELD_NORMAL" and c.get("short_channel_id")]
                return cs and cs[0]["short_channel_id"]
            n.scids.append(wait_for(normal, what="channel normal"))
        # Autopilot needs each channel once (either direction) and the nodes' addresses.
        # Not ln.wait_gossip, which waits for both directions: now and then one direction's
        # channel_update never spreads (every node misses the same one), which the scores
        # do not need.
        def graph_known():
            known = {c["short_channel_id"] for c in n.p.rpc.listchannels()["channels"]}
            return known >= set(n.scids)
        for _ in range(4):
            try:
                wait_for(graph_known, timeout=15, what="the graph at P")
                break
            except TimeoutError:
                for peer in (g[0], g[7]):
                    n.p.rpc.disconnect(peer.id, force=True)
                    ln.connect(n.p, peer)
        wait_for(graph_known, timeout=15, what="the graph at P")

        def addresses():
            nodes = n.p.rpc.listnodes()["nodes"]
            return sum(1 for x in nodes if x.get("addresses")) >= 8
        wait_for(addresses, timeout=60, what="node announcements with addresses at P")
        n.funds_before = sum(o["amount_msat"] for o in confirmed_coins(n.p)) // 1000
        yield n



def status(node, limit=None):
    s = node.rpc.call("autopilot-status", {} if limit is None else {"limit": limit})
    # Every decision is explained: each candidate shown has a score and a reason, every
    # action a reason.
    for c in s["candidates"]:
        assert c["reason"], c
        assert 0.0 <= c["score"] <= 1.0, c
    for a in s["actions"]:
        assert a["reason"] and a["action"], a
    return s


def chosen(node, report_status):
    return [c["id"] for c in report_status["candidates"] if c["chosen"]]


def run(node):
    return node.rpc.call("autopilot-run")


def channel_peers(node):
    return [c["peer_id"] for c in node.rpc.listpeerchannels()["channels"]]


def test_off_by_default(net):
    n7 = net.g[7]
    s = status(n7)
    assert s["enabled"] is False and s["options"]["enable"] is False
    r = run(n7)
    assert "disabled" in r["skipped"] and r["opens"] == []
    # N7 has 0.003 BTC minus its channel left, yet opened nothing of its own.
    assert channel_peers(n7) == [net.g[1].id]


def test_dry_run_changes_nothing(net):
    p, g = net.p, net.g
    r = run(p)
    assert r["dry_run"] is True and r.get("skipped") is None, r
    assert [o["result"] for o in r["opens"]] == ["dry-run"] * 3
    s = status(p)
    assert chosen(p, s) == [g[0].id, g[1].id, g[2].id]
    assert all(c["amount_sat"] == 250_000 for c in s["candidates"] if c["chosen"])
    assert s["budget"]["left_sat"] == 1_000_000 and s["targets"]["target_this_round"] == 3
    leaf = next(c for c in s["candidates"] if c["id"] == g[4].id)
    assert "opens only 3" in leaf["reason"]
    # Event rounds (blocks, connections) may have planned too: the last three are this one.
    planned = [a for a in s["actions"] if a["action"] == "would_open"]
    assert len(planned) >= 3
    assert sorted(a["peer_id"] for a in planned[-3:]) == sorted([g[0].id, g[1].id, g[2].id])
    assert all(a["reason"].startswith("dry run, nothing done: chosen") for a in planned)
    # Nothing happened on the node: no channel, the same coins, nothing stored as opened.
    assert channel_peers(p) == []
    assert sum(o["amount_msat"] for o in confirmed_coins(p)) // 1000 == net.funds_before
    stored = p.rpc.listdatastore(["autopilot", "state"])["datastore"]
    assert not stored or '"opens":[]' in stored[0]["string"]


def test_heuristics(net):
    p, g = net.p, net.g
    p.rpc.setconfig("autopilot-heuristic", "centrality")
    run(p)
    s = status(p)
    # The hubs carry every path between the two halves.
    assert chosen(p, s)[:2] == [g[0].id, g[1].id]
    assert s["candidates"][0]["score"] == 1.0
    p.rpc.setconfig("autopilot-heuristic", "external")
    p.rpc.call("autopilot-setscore", {"id": g[6].id, "score": 0.9})
    p.rpc.call("autopilot-setscore", [g[5].id, 0.4])
    run(p)
    s = status(p)
    assert chosen(p, s) == [g[6].id, g[5].id]
    zero = next(c for c in s["candidates"] if c["id"] == g[0].id)
    assert zero["reason"] == "score is 0" and not zero["chosen"]
    with pytest.raises(RpcError):
        p.rpc.call("autopilot-setscore", {"id": g[6].id, "score": 2})
    with pytest.raises(RpcError):
        p.rpc.setconfig("autopilot-heuristic", "astrology")
    with pytest.raises(RpcError):
        p.rpc.setconfig("autopilot-budget-percent", "150")
    with pytest.raises(RpcError):
        p.rpc.setconfig("autopilot-interval", "0")
    assert status(p)["options"]["budget_percent"] == 50
    p.rpc.setconfig("autopilot-heuristic", "preferential")


def test_unmanage(net):
    p, g = net.p, net.g
    r = p.rpc.call("autopilot-unmanage", {"id": g[0].id})
    assert r["unmanaged"] is True and r["changed"] is True
    with pytest.raises(RpcError):
        p.rpc.call("autopilot-unmanage", {"id": "not-a-node"})
    run(p)
    s = status(p)
    assert g[0].id in s["unmanaged"]
    assert chosen(p, s) == [g[1].id, g[2].id, g[3].id]
    n0 = next(c for c in s["candidates"] if c["id"] == g[0].id)
    assert "autopilot-unmanage" in n0["reason"] and n0["rank"] == 1
    assert any(a["action"] == "unmanage" and a["peer_id"] == g[0].id for a in s["actions"])


@pytest.mark.watchdog(300)
def test_waits_while_feerate_above_ceiling(net):
    p, chain = net.p, net.chain
    # 50 sat/vB = 12500 perkw for the 12-block target the opening feerate uses.
    chain.call("setfeerate", {"2": 60, "6": 55, "12": 50, "100": 40})
    wait_for(lambda: p.rpc.feerates("perkw")["perkw"]["opening"] > 5000, what="high fees at P")
    p.rpc.setconfig("autopilot-dry-run", "false")
    # A block arrives: autopilot looks, and waits.
    net.ln.mine(1)
    wait_for(lambda: (status(p).get("last_round") or {}).get("trigger", "").startswith("block_added"),
             timeout=60, what="a round after block_added")
    s = status(p)
    assert "waiting for lower fees" in s["last_round"]["skipped"], s["last_round"]
    assert "5000" in s["last_round"]["skipped"]
    r = run(p)
    assert "waiting for lower fees" in r["skipped"] and r["opens"] == []
    assert channel_peers(p) == []
    # Fees fall; the next block lets it open.
    chain.call("setfeerate", {"2": 4, "6": 3, "12": 2, "100": 1})
    wait_for(lambda: p.rpc.feerates("perkw")["perkw"]["opening"] <= 5000, what="low fees at P")
    net.ln.mine(1)
    # A channel is listed as soon as it is negotiated; the round records the open when
    # fundchannel answers.
    wait_for(lambda: len([a for a in status(p)["actions"] if a["action"] == "open"]) == 3,
             timeout=90, what="autopilot's three opens")


def test_opens_within_budget_and_reserve(net):
    p, g = net.p, net.g
    chans = p.rpc.listpeerchannels()["channels"]
    assert sorted(c["peer_id"] for c in chans) == sorted([g[1].id, g[2].id, g[3].id])
    assert all(c["opener"] == "local" for c in chans)
    sizes = [c["total_msat"] // 1000 for c in chans]
    assert all(150_000 <= s <= 250_000 for s in sizes), sizes
    assert sum(sizes) <= net.funds_before * 50 // 100
    # The reserve is untouched: what is left on chain (change included) covers it.
    left = sum(o["amount_msat"] for o in p.rpc.listfunds()["outputs"]) // 1000
    assert left >= 300_000, left
    s = status(p)
    opens = [a for a in s["actions"] if a["action"] == "open"]
    assert sorted(a["peer_id"] for a in opens) == sorted([g[1].id, g[2].id, g[3].id]), s["actions"]
    assert all("chosen" in a["reason"] and "funding txid" in a["reason"] for a in opens)
    assert len(s["managed_channels"]) == 3 and s["in_flight"] == []
    # Full: another round says so and does nothing.
    r = run(p)
    assert "already managing 3" in r["skipped"] and r["opens"] == []
    assert len(channel_peers(p)) == 3


@pytest.mark.watchdog(300)
def test_restart_does_not_reopen(net):
    p, g = net.p, net.g
    before = set(channel_peers(p))
    # Confirm the funding transactions (and their change), then restart with room for more.
    # Each spends the previous one's change, and the last may reach the mempool only after
    # fundchannel answered: mine until everything is confirmed.
    def confirmed():
        net.ln.mine(1)
        return all(o["status"] == "confirmed" for o in p.rpc.listfunds()["outputs"])
    wait_for(confirmed, interval=0.5, what="change confirmed")
    # Command-line options win over setconfig's saved values: restart as configured now.
    p.options["autopilot-max-channels"] = 5
    p.options["autopilot-dry-run"] = "false"
    net.ln.restart(p)
    s = status(p)
    # Its memory survived: past opens and the opt-out.
    assert len([a for a in s["actions"] if a["action"] == "open"]) == 3
    assert g[0].id in s["unmanaged"]
    assert {o["peer_id"] for o in s["managed_channels"]} == before
    # The startup round (or this one) uses what the budget still allows: one more channel
    # (1M share minus 750k already in channels), to a peer it has no channel with.
    run(p)
    wait_for(lambda: len([a for a in status(p)["actions"] if a["action"] == "open"]) == 4,
             timeout=60, what="one more open")
    peers = channel_peers(p)
    assert len(set(peers)) == 4, "one channel per peer"
    new = set(peers) - before
    assert len(new) == 1 and g[0].id not in new
    r = run(p)
    assert r["opens"] == [] and "budget too small" in r["skipped"], r
    s = status(p)
    for c in s["candidates"]:
        if c["id"] in before:
            assert "round skipped" in c["reason"] or "already have a channel" in c["reason"]


def test_status_explains_everything(net):
    p = net.p
    s = status(p, limit=100)
    # The eight graph nodes (P's own channels are not announced yet).
    assert s["candidates_total"] == len(s["candidates"]) == 8
    assert {"pool_sat", "allowance_sat", "committed_sat", "above_reserve_sat", "left_sat",
            "free_slots", "affordable", "target"} <= set(s["budget"])
    assert s["budget_left_sat"] == s["budget"]["left_sat"]
    assert s["targets"]["max_channels"] == 5 and s["targets"]["managed"] == 4
    assert s["last_round"]["skipped"] and s["last_round"]["duration_ms"] >= 0
    kinds = {a["action"] for a in s["actions"]}
    assert {"open", "unmanage", "setscore"} <= kinds
