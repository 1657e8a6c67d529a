"""CLN's askrene commands, served by the built-in `pay` plugin: layers (kept across restarts
when persistent), reservations, and `getroutes` over fake layer channels (no chain needed)
and over a real line of channels:

    A ══ two 500k-sat channels ══ B ── 1M-sat channel ── C

Modelled on CLN's tests/test_askrene.py. Every reply is validated against CLN's schemas by
the harness's RPC client."""

import time

import pytest

from conftest import RpcError, wait_for

# Fake nodes, in BOLT 7 order.
N0 = "02" + "0" * 63 + "1"
N1 = "02" + "0" * 63 + "2"
N2 = "02" + "0" * 63 + "3"
N3 = "02" + "0" * 63 + "4"


def error(call, *args, **kwargs):
    """The RPC error `call` fails with (the test fails if it succeeds)."""
    with pytest.raises(RpcError) as e:
        call(*args, **kwargs)
    return e.value.error


def empty_layer(name, persistent=False):
    return {"layer": name, "persistent": persistent, "disabled_nodes": [],
            "created_channels": [], "channel_updates": [], "constraints": [],
            "biases": [], "node_biases": []}


def fake_channel(rpc, layer, a, b, scid, capacity_msat, ppm=0, base=0, delay=6):
    """A channel a-b in `layer`, usable from a to b (only)."""
    rpc.askrene_create_channel(layer, a, b, scid, capacity_msat)
    rpc.askrene_update_channel(layer=layer, short_channel_id_dir=f"{scid}/{int(a > b)}",
                               enabled=True, htlc_minimum_msat=0,
                               htlc_maximum_msat=capacity_msat, fee_base_msat=base,
                               fee_proportional_millionths=ppm, cltv_expiry_delta=delay)


def getroutes(rpc, src, dst, amount, layers, maxfee=100_000, final_cltv=99, **kw):
    return rpc.getroutes(source=src, destination=dst, amount_msat=amount, layers=layers,
                         maxfee_msat=maxfee, final_cltv=final_cltv, **kw)


def test_layers(node_factory):
    node = node_factory.get_node()
    rpc = node.rpc
    assert rpc.askrene_listlayers() == {"layers": []}
    e = error(rpc.askrene_listlayers, "test_layers")
    assert e["code"] == -32602 and "Unknown layer" in e["message"]

    expect = empty_layer("test_layers")
    assert rpc.askrene_create_layer("test_layers") == {"layers": [expect]}
    assert "Layer already exists" in error(rpc.askrene_create_layer, "test_layers")["message"]
    assert "Cannot create auto layer" in error(rpc.askrene_create_layer, "auto.x")["message"]

    rpc.askrene_disable_node("test_layers", N0)
    expect["disabled_nodes"].append(N0)
    rpc.askrene_update_channel("test_layers", "0x0x1/0", False)
    expect["channel_updates"].append({"short_channel_id_dir": "0x0x1/0", "enabled": False})
    assert rpc.askrene_listlayers("test_layers") == {"layers": [expect]}

    # Source and destination come back in BOLT 7 order.
    rpc.askrene_create_channel("test_layers", N2, N0, "0x0x1", "1000000sat")
    expect["created_channels"].append({"source": N0, "destination": N2,
                                       "short_channel_id": "0x0x1",
                                       "capacity_msat": 1_000_000_000})
    assert "channel already exists" in error(
        rpc.askrene_create_channel, "test_layers", N2, N0, "0x0x1", 1000)["message"]
    assert "source and destination must be different" in error(
        rpc.askrene_create_channel, "test_layers", N2, N2, "0x0x2", 1000)["message"]

    # Updates merge: still disabled, and the other fields added.
    rpc.askrene_update_channel(layer="test_layers", short_channel_id_dir="0x0x1/0",
                               htlc_minimum_msat=100, htlc_maximum_msat=900_000_000,
                               fee_base_msat=1, fee_proportional_millionths=2,
                               cltv_expiry_delta=18)
    expect["channel_updates"] = [{"short_channel_id_dir": "0x0x1/0", "enabled": False,
                                  "htlc_minimum_msat": 100, "htlc_maximum_msat": 900_000_000,
                                  "fee_base_msat": 1, "fee_proportional_millionths": 2,
                                  "cltv_expiry_delta": 18}]
    assert rpc.askrene_listlayers("test_layers") == {"layers": [expect]}
    rpc.askrene_remove_channel_update(layer="test_layers", short_channel_id_dir="0x0x1/0")
    expect["channel_updates"] = []
    assert rpc.askrene_listlayers() == {"layers": [expect]}

    # Constraints: unconstrained gives a minimum, constrained a maximum one below.
    before = int(time.time())
    r = rpc.askrene_inform_channel("test_layers", "0x0x1/1", 100_000, "unconstrained")
    c1 = r["constraints"][0]
    assert c1["layer"] == "test_layers" and c1["minimum_msat"] == 100_000
    assert before <= c1["timestamp"] <= int(time.time()) + 1
    r = rpc.askrene_inform_channel(layer="test_layers", short_channel_id_dir="1x1x1/0",
                                   amount_msat=12341235, inform="constrained")
    c2 = r["constraints"][0]
    assert c2["maximum_msat"] == 12341234 and "minimum_msat" not in c2
    listed = rpc.askrene_listlayers("test_layers")["layers"][0]["constraints"]
    assert sorted(c["short_channel_id_dir"] for c in listed) == ["0x0x1/1", "1x1x1/0"]
    assert rpc.askrene_inform_channel("test_layers", "1x1x1/0", 5, "succeeded") == {
        "constraints": []}
    assert "must be constrained/unconstrained/succeeded" in error(
        rpc.askrene_inform_channel, "test_layers", "1x1x1/0", 5, "maybe")["message"]

    # Aging forgets what is older than the cutoff.
    newest = max(c1["timestamp"], c2["timestamp"])
    assert rpc.askrene_age("test_layers", min(c1["timestamp"], c2["timestamp"])) == {
        "layer": "test_layers", "num_removed": 0}
    assert rpc.askrene_age("test_layers", newest + 1) == {"layer": "test_layers",
                                                          "num_removed": 3}
    assert rpc.askrene_listlayers("test_layers")["layers"][0]["constraints"] == []

    # Biases: set, relative, clamped, removed at 0.
    r = rpc.askrene_bias_channel("test_layers", "1x1x1/1", -5, "bigger bias")
    assert r["biases"][0]["bias"] == -5 and r["biases"][0]["description"] == "bigger bias"
    r = rpc.askrene_bias_channel("test_layers", "1x1x1/1", -99, None, True)
    assert r["biases"][0]["bias"] == -100
    for bad in (-101, 101):
        assert "bias: should be a number between -100 and 100" in error(
            rpc.askrene_bias_channel, "test_layers", "1x1x1/1", bad)["message"]
    assert rpc.askrene_bias_channel("test_layers", "1x1x1/1", 0) == {"biases": []}
    r = rpc.askrene_bias_node("test_layers", N1, "out", 3)
    assert r["node_biases"][0]["out_bias"] == 3 and r["node_biases"][0]["in_bias"] == 0
    assert "Expected either in or out values." in error(
        rpc.askrene_bias_node, "test_layers", N1, "sideways", 3)["message"]
    assert rpc.askrene_listlayers("test_layers")["layers"][0]["node_biases"][0]["node"] == N1

    assert "Unknown layer" in error(rpc.askrene_remove_layer, "nope")["message"]
    assert "Unknown layer" in error(rpc.askrene_disable_node, "nope", N0)["message"]
    assert rpc.askrene_remove_layer("test_layers") == {}
    assert rpc.askrene_listlayers() == {"layers": []}

    # A layer that is not persistent is gone after a restart.
    rpc.askrene_create_layer("temporary")
    node.stop()
    node.start()
    assert node.rpc.askrene_listlayers() == {"layers": []}


def test_layer_persistence(node_factory):
    node = node_factory.get_node()
    node.rpc.askrene_create_layer(layer="kept", persistent=True)
    node.stop()
    node.start()
    assert node.rpc.askrene_listlayers("kept") == {"layers": [empty_layer("kept", True)]}
    # Creating a persistent layer again is no error.
    node.rpc.askrene_create_layer(layer="kept", persistent=True)

    rpc = node.rpc
    rpc.askrene_disable_node("kept", N3)
    fake_channel(rpc, "kept", N0, N1, "0x0x1", "1000000sat", ppm=2)
    rpc.askrene_inform_channel("kept", "0x0x1/1", 100000, "unconstrained")
    rpc.askrene_bias_channel("kept", "0x0x1/0", 7, "liked")
    expect = rpc.askrene_listlayers("kept")
    assert len(expect["layers"][0]["created_channels"]) == 1
    node.stop()
    node.start()
    assert node.rpc.askrene_listlayers("kept") == expect
    # The channel still routes after the restart.
    assert getroutes(node.rpc, N0, N1, 1000, ["kept"])["routes"][0]["amount_msat"] == 1000

    assert node.rpc.askrene_remove_layer("kept") == {}
    node.stop()
    node.start()
    assert node.rpc.askrene_listlayers() == {"layers": []}


def test_getroutes_over_layer_channels(node_factory):
    rpc = node_factory.get_node().rpc
    rpc.askrene_create_layer("net")
    fake_channel(rpc, "net", N0, N1, "0x1x0", "1000000sat", ppm=10_000)
    fake_channel(rpc, "net", N1, N3, "3x3x2", "1000000sat", ppm=20_000)
    fake_channel(rpc, "net", N0, N2, "1x2x1", "9000sat")
    fake_channel(rpc, "net", N0, N2, "3x2x3", "10000sat", base=1)

    # Without the layer, there is no such node.
    e = error(getroutes, rpc, N0, N1, 1000, [])
    assert e["code"] == 205 and e["message"] == f"Unknown source node {N0}"

    r = getroutes(rpc, N0, N3, 100_000, ["net"], maxfee=5000)
    assert len(r["routes"]) == 1
    route = r["routes"][0]
    assert route["amount_msat"] == 100_000 and route["final_cltv"] == 99
    assert 990_000 < route["probability_ppm"] <= 1_000_000
    assert r["probability_ppm"] == route["probability_ppm"]
    hops = [{k: h[k] for k in ("short_channel_id_dir", "node_id_in", "node_id_out",
                               "amount_in_msat", "amount_out_msat", "cltv_in", "cltv_out")}
            for h in route["path"]]
    # Each hop charges its own channel's fee: the source's too (no auto.sourcefree).
    assert hops == [
        {"short_channel_id_dir": "0x1x0/0", "node_id_in": N0, "node_id_out": N1,
         "amount_in_msat": 103_020, "amount_out_msat": 102_000,
         "cltv_in": 99 + 12, "cltv_out": 99 + 6},
        {"short_channel_id_dir": "3x3x2/0", "node_id_in": N1, "node_id_out": N3,
         "amount_in_msat": 102_000, "amount_out_msat": 100_000,
         "cltv_in": 99 + 6, "cltv_out": 99}]
    # auto.sourcefree: the source's own channel costs nothing.
    r = getroutes(rpc, N0, N3, 100_000, ["net", "auto.sourcefree"], maxfee=5000)
    assert r["routes"][0]["path"][0]["amount_in_msat"] == 102_000
    assert r["routes"][0]["path"][0]["cltv_in"] == 99 + 6

    e = error(getroutes, rpc, N0, N3, 100_000, ["net"], maxfee=100)
    assert e["code"] == 206 and e["message"] == "Could not find route without excessive cost"
    e = error(getroutes, rpc, N0, N3, 100_000, ["net"], maxdelay=100)
    assert e["code"] == 206
    assert e["message"] == "Could not find route without excessive delays"

    # 10,000 sat fit neither N0-N2 channel: two parts, one over each.
    r = getroutes(rpc, N0, N2, 10_000_000, ["net"], maxfee=5000)
    assert len(r["routes"]) == 2
    assert sum(x["amount_msat"] for x in r["routes"]) == 10_000_000
    assert {x["path"][0]["short_channel_id_dir"] for x in r["routes"]} == {"1x2x1/0",
                                                                           "3x2x3/0"}
    assert r["probability_ppm"] < 1_000_000
    e = error(getroutes, rpc, N0, N2, 10_000_000, ["net"], maxfee=5000, maxparts=1)
    assert e["code"] == 205
    # More than the source has at all.
    e = error(getroutes, rpc, N0, N2, 2_000_000_000, ["net"])
    assert e["code"] == 215
    assert e["message"] == ("We could not find a usable set of paths. Total source capacity "
                            "is only 1019000000msat (in 3 channels).")

    # A constraint moves the route to the other channel.
    small = getroutes(rpc, N0, N2, 1_000_000, ["net"], maxfee=5000)["routes"]
    assert small[0]["path"][0]["short_channel_id_dir"] == "3x2x3/0"
    rpc.askrene_create_layer("learned")
    rpc.askrene_inform_channel("learned", "3x2x3/0", 500_000, "constrained")
    moved = getroutes(rpc, N0, N2, 1_000_000, ["net", "learned"], maxfee=5000)["routes"]
    assert moved[0]["path"][0]["short_channel_id_dir"] == "1x2x1/0"

    # A disabled node, and a disabled channel, explained.
    rpc.askrene_create_layer("no_n1")
    rpc.askrene_disable_node("no_n1", N1)
    e = error(getroutes, rpc, N0, N3, 1000, ["net", "no_n1"])
    assert e["code"] == 205
    assert e["message"] == ("We could not find a usable set of paths. The shortest path is "
                            "0x1x0->3x3x2, but 3x3x2/0 marked disabled by layer no_n1.")
    rpc.askrene_create_layer("chans_disabled")
    rpc.askrene_update_channel(layer="chans_disabled", short_channel_id_dir="0x1x0/0",
                               enabled=False)
    e = error(getroutes, rpc, N0, N1, 1000, ["net", "chans_disabled"])
    assert e["message"] == ("We could not find a usable set of paths. The shortest path is "
                            "0x1x0, but 0x1x0/0 marked disabled by layer chans_disabled.")

    # Parameter errors, as CLN.
    for kw, code, text in [
            ({"amount_msat": 0}, -32602, "amount must be non-zero"),
            ({"maxparts": 0}, -32602, "maxparts must be non-zero"),
            ({"maxdelay": 2017}, 217, "maximum delay allowed is 2016"),
            ({"destination": N0}, -32602, "source and destination must be different"),
            ({"layers": ["nope"]}, -32602, "layers: unknown layer"),
            ({"source": "02zz"}, -32602, "source: should be a node id")]:
        params = {"source": N0, "destination": N3, "amount_msat": 1000, "layers": ["net"],
                  "maxfee_msat": 1000, "final_cltv": 9}
        params.update(kw)
        e = error(rpc.call, "getroutes", params)
        assert e["code"] == code and text in e["message"], (kw, e)
    e = error(rpc.call, "getroutes", {"source": N0})
    assert e["message"] == "missing required parameter: destination"


def test_reserve(node_factory):
    rpc = node_factory.get_node().rpc
    rpc.askrene_create_layer("net")
    fake_channel(rpc, "net", N0, N1, "0x1x0", "1000000sat")
    fake_channel(rpc, "net", N1, N2, "0x2x0", "1000000sat")
    assert rpc.askrene_listreservations() == {"reservations": []}
    initial = getroutes(rpc, N0, N2, 1_000_000, ["net"])["probability_ppm"]

    rpc.askrene_reserve(path=[{"short_channel_id_dir": "0x1x0/0", "amount_msat": 1_000_000},
                              {"short_channel_id_dir": "0x2x0/0",
                               "amount_msat": 1_000_001}])
    listed = rpc.askrene_listreservations()["reservations"]
    assert sorted((r["short_channel_id_dir"], r["amount_msat"]) for r in listed) == [
        ("0x1x0/0", 1_000_000), ("0x2x0/0", 1_000_001)]
    assert all(r["command_id"] and r["age_in_seconds"] >= 0 for r in listed)
    assert getroutes(rpc, N0, N2, 1_000_000, ["net"])["probability_ppm"] < initial

    # Everything reserved: no route, and the explanation names the reservation.
    everything = [{"short_channel_id_dir": "0x1x0/0", "amount_msat": 1_000_000_000},
                  {"short_channel_id_dir": "0x2x0/0", "amount_msat": 1_000_000_000}]
    rpc.askrene_reserve(path=everything)
    e = error(getroutes, rpc, N0, N2, 1_000_000, ["net"])
    assert e["code"] == 205
    assert e["message"].startswith("We could not find a usable set of paths. The shortest "
                                   "path is 0x1x0->0x2x0, but 0x1x0/0 already reserved")

    # Wrong amounts are refused, and nothing is released.
    e = error(rpc.askrene_unreserve,
              path=[{"short_channel_id_dir": "0x1x0/0", "amount_msat": 1_000_000},
                    {"short_channel_id_dir": "0x2x0/0", "amount_msat": 1_000_000}])
    assert e["code"] == -32602 and e["message"] == "Unknown reservation for 0x2x0/0"
    assert len(rpc.askrene_listreservations()["reservations"]) == 4
    rpc.askrene_unreserve(path=everything)
    rpc.askrene_unreserve(path=[{"short_channel_id_dir": "0x1x0/0", "amount_msat": 1_000_000},
                                {"short_channel_id_dir": "0x2x0/0",
                                 "amount_msat": 1_000_001}])
    assert rpc.askrene_listreservations() == {"reservations": []}
    assert getroutes(rpc, N0, N2, 1_000_000, ["net"])["probability_ppm"] == initial

    # Reserving the other direction changes nothing.
    rpc.askrene_reserve(path=[{"short_channel_id_dir": "0x1x0/1",
                               "amount_msat": 1_000_000_000}])
    assert getroutes(rpc, N0, N2, 1_000_000, ["net"])["probability_ppm"] == initial
    # A reservation on a layer is not listed, and goes with its layer.
    rpc.askrene_reserve(path=[{"short_channel_id_dir": "0x1x0/0", "amount_msat": 5,
                               "layer": "net"}])
    assert len(rpc.askrene_listreservations()["reservations"]) == 1
    assert "Unknown layer" in error(
        rpc.askrene_reserve,
        path=[{"short_channel_id_dir": "0x1x0/0", "amount_msat": 5, "layer": "x"}])["message"]


def test_getroutes_real_line_splits(ln):
    """A has two 500k-sat channels to B, B one of 1M sat to C: 700k sat to C must split."""
    a, b, c = ln.node(), ln.node(), ln.node()
    ln.fund(a)
    ln.fund(a)
    ln.fund(b)
    ln.open(a, b, sat=500_000)
    ln.open(a, b, sat=500_000)
    bc = ln.open(b, c)
    # (open names the first channel between two nodes: ask for both.)
    wait_for(lambda: len(a.rpc.listpeerchannels(b.id)["channels"]) == 2)
    ab1, ab2 = sorted(ch["short_channel_id"] for ch in a.rpc.listpeerchannels(b.id)["channels"])
    for scid in (ab1, ab2, bc):
        ln.wait_gossip(a, scid)
    r = a.rpc.getroutes(source=a.id, destination=c.id, amount_msat=700_000_000, layers=[],
                        maxfee_msat=10_000_000, final_cltv=18)
    assert sum(x["amount_msat"] for x in r["routes"]) == 700_000_000
    firsts = {x["path"][0]["short_channel_id_dir"].split("/")[0] for x in r["routes"]}
    assert firsts == {ab1, ab2}
    for x in r["routes"]:
        assert [h["node_id_out"] for h in x["path"]] == [b.id, c.id]
        assert x["path"][-1]["amount_out_msat"] == x["amount_msat"]
    # With our channels' live balances, and no fee to ourselves.
    r = a.rpc.getroutes(source=a.id, destination=c.id, amount_msat=700_000_000,
                        layers=["auto.localchans", "auto.sourcefree"],
                        maxfee_msat=10_000_000, final_cltv=18)
    assert {x["path"][0]["short_channel_id_dir"].split("/")[0] for x in r["routes"]} == {
        ab1, ab2}
    # A's channels hold less than 1.1M sat: explained as CLN does.
    e = error(a.rpc.getroutes, source=a.id, destination=c.id, amount_msat=1_100_000_000,
              layers=[], maxfee_msat=10_000_000, final_cltv=18)
    assert e["code"] == 215
    assert e["message"] == ("We could not find a usable set of paths. Total source capacity "
                            "is only 1000000000msat (in 2 channels).")
    # getroutes itself reserves nothing.
    assert a.rpc.askrene_listreservations() == {"reservations": []}
