"""Channels funded from outside `fundchannel` (issue 18): `fundchannel_start`,
`fundchannel_complete`, `fundchannel_cancel` (CLN's test_funding_external_wallet_corners and
test_funding_external_wallet), the PSBT flow clboss and CLN's spender use (`fundpsbt` +
`addpsbtoutput` + `fundchannel_complete` + `signpsbt` + `sendpsbt`), `multifundchannel`
(several channels, one transaction) and `fundchannel utxos=`. Replies are validated against
CLN's schemas by the harness."""

import pytest

from conftest import RpcError, wait_for


def normal(a, b):
    def both():
        ca = [c for c in a.rpc.listpeerchannels(b.id)["channels"] if c["state"] == "CHANNELD_NORMAL"]
        cb = [c for c in b.rpc.listpeerchannels(a.id)["channels"] if c["state"] == "CHANNELD_NORMAL"]
        return ca and cb and ca[0]
    return wait_for(both, what="channel normal")


def test_fundchannel_start_complete_cancel_corners(ln):
    a, b = ln.node(), ln.node()
    amount = 1_000_000
    ln.fund(a, 0.05)
    psbt = a.rpc.fundpsbt(amount, "253perkw", 250, reserve=0)["psbt"]
    with pytest.raises(RpcError, match="Unknown peer") as e:
        a.rpc.fundchannel_start(b.id, amount)
    assert e.value.error["code"] == 306
    with pytest.raises(RpcError, match="Unknown peer"):
        a.rpc.fundchannel_complete(b.id, psbt)
    ln.connect(a, b)
    with pytest.raises(RpcError, match=r"No channel funding in progress\."):
        a.rpc.fundchannel_complete(b.id, psbt)

    start = a.rpc.fundchannel_start(b.id, amount)
    assert start["funding_address"].startswith("bcrt1q")
    assert start["warning_usage"].startswith("The funding transaction MUST NOT be broadcast")
    assert a.is_in_log("Funding channel start: awaiting funding_txid with output to")
    with pytest.raises(RpcError, match="Already funding channel"):
        a.rpc.fundchannel(b.id, amount)
    with pytest.raises(RpcError, match="Already funding channel"):
        a.rpc.fundchannel_start(b.id, amount)

    wrongamt = a.rpc.txprepare([{start["funding_address"]: amount - 1}])
    with pytest.raises(RpcError, match=r"Output to open channel is .*, should be .*") as e:
        a.rpc.fundchannel_complete(b.id, wrongamt["psbt"])
    assert e.value.error["code"] == 309
    a.rpc.txdiscard(wrongamt["txid"])
    wrongaddr = a.rpc.txprepare([{a.rpc.newaddr("bech32")["bech32"]: amount}])
    with pytest.raises(RpcError, match="No output to open channel"):
        a.rpc.fundchannel_complete(b.id, wrongaddr["psbt"])
    a.rpc.txdiscard(wrongaddr["txid"])

    # Cancelling before complete; the peer stays connected.
    assert a.rpc.fundchannel_cancel(b.id) == {"cancelled": "Channel open canceled by RPC"}
    assert a.rpc.listpeers(b.id)["peers"][0]["connected"]
    with pytest.raises(RpcError) as e:
        a.rpc.fundchannel_cancel(b.id)
    assert e.value.error["code"] == 307

    # Complete, then cancel: allowed while the funding is not out.
    funding_addr = a.rpc.fundchannel_start(b.id, amount)["funding_address"]
    prep = a.rpc.txprepare([{funding_addr: amount}])
    assert a.rpc.fundchannel_complete(b.id, prep["psbt"])["commitments_secured"] is True
    wait_for(lambda: [c["state"] for c in b.rpc.listpeerchannels(a.id)["channels"]]
             == ["CHANNELD_AWAITING_LOCKIN"], what="B's channel")
    with pytest.raises(RpcError, match="Cannot cancel channel that was initiated by peer") as e:
        b.rpc.fundchannel_cancel(a.id)
    assert e.value.error["code"] == 308
    assert a.rpc.fundchannel_cancel(b.id)["cancelled"] \
        == "Channel open canceled by RPC(after fundchannel_complete)"
    # Forgotten entirely on our side; the inputs are the caller's to release.
    wait_for(lambda: a.rpc.listpeerchannels(b.id)["channels"] == [], what="cancelled channel gone")
    a.rpc.txdiscard(prep["txid"])

    # Complete and send: cancelling is refused once the funding is out, and it opens.
    wait_for(lambda: a.rpc.listpeers(b.id)["peers"] and a.rpc.listpeers(b.id)["peers"][0]["connected"]
             or ln.connect(a, b), what="reconnected")
    funding_addr = a.rpc.fundchannel_start(b.id, amount)["funding_address"]
    prep = a.rpc.txprepare([{funding_addr: amount}])
    done = a.rpc.fundchannel_complete(b.id, prep["psbt"])
    sent = a.rpc.txsend(prep["txid"])
    with pytest.raises(RpcError, match=r".* been broadcast.*") as e:
        a.rpc.fundchannel_cancel(b.id)
    assert e.value.error["code"] == 308
    assert sent["txid"] in ln.chain.call("getrawmempool")
    ln.mine(6)
    ch = normal(a, b)
    assert ch["channel_id"] == done["channel_id"]
    assert ch["total_msat"] == amount * 1000
    assert ch["funding_txid"] == sent["txid"]


def test_fundchannel_complete_with_the_psbt_commands(ln):
    """As CLN's spender plugin and clboss do: fundpsbt for inputs, addpsbtoutput for the
    channel's output, fundchannel_complete, then signpsbt and sendpsbt."""
    a, b = ln.node(), ln.node()
    amount = 700_000
    ln.fund(a, 0.02)
    ln.connect(a, b)
    start = a.rpc.fundchannel_start(b.id, amount, announce=False, mindepth=3)
    assert start["mindepth"] == 3
    funding = a.rpc.fundpsbt(amount, "3000perkw", 42 + 172, excess_as_change=True)
    psbt = a.rpc.addpsbtoutput(amount, funding["psbt"], destination=start["funding_address"])["psbt"]
    secured = a.rpc.fundchannel_complete(b.id, psbt)
    assert secured["commitments_secured"] is True
    # A version 2 PSBT is taken as well, and the same channel can't be completed twice.
    with pytest.raises(RpcError, match="No channel funding in progress"):
        a.rpc.fundchannel_complete(b.id, a.rpc.setpsbtversion(psbt, 2)["psbt"])
    signed = a.rpc.signpsbt(psbt)["signed_psbt"]
    sent = a.rpc.sendpsbt(signed)
    ln.mine(3)
    ch = normal(a, b)
    assert ch["channel_id"] == secured["channel_id"]
    assert ch["private"] is True
    assert ch["funding_txid"] == sent["txid"]
    # The change came back to the wallet.
    wait_for(lambda: any(o["status"] == "confirmed" and o["txid"] == sent["txid"]
                         for o in a.rpc.listfunds()["outputs"]), what="change")


def test_multifundchannel_opens_several_channels_in_one_transaction(ln):
    a, b, c, d = ln.node(), ln.node(), ln.node(), ln.node()
    ln.fund(a, 0.1)
    ln.connect(a, c)
    r = a.rpc.multifundchannel([
        {"id": f"{b.id}@127.0.0.1:{b.port}", "amount": 500_000},
        {"id": c.id, "amount": "400000sat", "push_msat": 10_000_000, "announce": False},
    ], feerate="2000perkw")
    assert r["txid"] in ln.chain.call("getrawmempool")
    assert "failed" not in r
    outs = ln.chain.call("decoderawtransaction", r["tx"])["vout"]
    by_peer = {x["id"]: x for x in r["channel_ids"]}
    assert set(by_peer) == {b.id, c.id}
    assert round(outs[by_peer[b.id]["outnum"]]["value"] * 10**8) == 500_000
    assert round(outs[by_peer[c.id]["outnum"]]["value"] * 10**8) == 400_000
    ln.mine(6)
    chb, chc = normal(a, b), normal(a, c)
    assert chb["channel_id"] == by_peer[b.id]["channel_id"]
    assert chc["channel_id"] == by_peer[c.id]["channel_id"]
    assert chc["private"] is True
    assert chb["funding_txid"] == chc["funding_txid"] == r["txid"]
    assert chc["to_us_msat"] == 400_000_000 - 10_000_000

    # Errors: duplicate destination, nothing given, dust.
    for bad, msg in (([{"id": d.id, "amount": 100_000}, {"id": d.id, "amount": 100_000}],
                      "Duplicate destination"),
                     ([], "must have at least one entry"),
                     ([{"id": d.id, "amount": 100}], "output would be dust")):
        with pytest.raises(RpcError, match=msg) as e:
            a.rpc.multifundchannel(bad)
        assert e.value.error["code"] == -32602

    # A peer that cannot be reached fails the call, unless minchannels allows it.
    dead = ln.node()
    dead_addr = f"{dead.id}@127.0.0.1:{dead.port}"
    dead.stop()
    with pytest.raises(RpcError, match="Unable to connect"):
        a.rpc.multifundchannel([{"id": dead_addr, "amount": 100_000},
                                {"id": f"{d.id}@127.0.0.1:{d.port}", "amount": 100_000}])
    r = a.rpc.multifundchannel([{"id": dead_addr, "amount": 100_000},
                                {"id": f"{d.id}@127.0.0.1:{d.port}", "amount": 150_000}],
                               minchannels=1)
    assert [x["id"] for x in r["channel_ids"]] == [d.id]
    assert [(f["id"], f["method"]) for f in r["failed"]] == [(dead.id, "connect")]
    ln.mine(6, nodes=[a, b, c, d])
    normal(a, d)


def test_fundchannel_with_utxos_spends_exactly_those(ln):
    a, b = ln.node(), ln.node()
    ln.fund(a, 0.01)
    ln.fund(a, 0.02)
    coins = [o for o in a.rpc.listfunds()["outputs"] if o["status"] == "confirmed"]
    small = next(o for o in coins if o["amount_msat"] == 1_000_000_000)
    ln.connect(a, b)
    r = a.rpc.fundchannel(b.id, 500_000, utxos=[f"{small['txid']}:{small['output']}"])
    tx = ln.chain.call("decoderawtransaction", r["tx"])
    assert [(i["txid"], i["vout"]) for i in tx["vin"]] == [(small["txid"], small["output"])]
    ln.mine(6)
    normal(a, b)
