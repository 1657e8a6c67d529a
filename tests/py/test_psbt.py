"""CLN's PSBT wallet commands (issue 18): `reserveinputs`/`unreserveinputs`, `fundpsbt`,
`utxopsbt`, `addpsbtoutput`, `signpsbt`, `sendpsbt` and `setpsbtversion`, modelled on CLN's
tests/test_wallet.py (test_reserveinputs, test_fundpsbt, test_utxopsbt, test_addpsbtoutput,
test_psbt_version, test_sign_and_send_psbt). The devchain has no `createpsbt`/`decodepsbt`,
so PSBTs from outside are built here (BIP 174 by hand) and read through the devchain's
`decoderawtransaction`. Replies are validated against CLN's schemas by the harness."""

import base64
import struct

import pytest

from conftest import RpcError, wait_for

AMOUNT = 1_000_000


def compact(n):
    return bytes([n]) if n < 0xfd else b"\xfd" + struct.pack("<H", n)


def create_psbt(inputs, outputs=(), locktime=0):
    """A version 0 PSBT spending `inputs` [(txid, vout)] to `outputs` [(script, sat)]."""
    tx = struct.pack("<i", 2) + compact(len(inputs))
    for txid, vout in inputs:
        tx += bytes.fromhex(txid)[::-1] + struct.pack("<I", vout) + b"\x00" + struct.pack("<I", 0xFFFFFFFD)
    tx += compact(len(outputs))
    for script, sat in outputs:
        tx += struct.pack("<q", sat) + compact(len(script)) + script
    tx += struct.pack("<I", locktime)
    raw = b"psbt\xff" + b"\x01\x00" + compact(len(tx)) + tx + b"\x00"
    raw += b"\x00" * (len(inputs) + len(outputs))
    return base64.b64encode(raw).decode()


def global_map(psbt):
    """The global key-value pairs of a base64 PSBT {key bytes: value bytes}."""
    data = base64.b64decode(psbt)
    assert data[:5] == b"psbt\xff"
    at, out = 5, {}

    def read():
        nonlocal at
        n = data[at]
        at += 1
        if n == 0xFD:
            n = struct.unpack("<H", data[at:at + 2])[0]
            at += 2
        v = data[at:at + n]
        at += n
        return v
    while True:
        k = read()
        if not k:
            return out
        out[k] = read()


def decode(chain, psbt):
    """The unsigned transaction of a version 0 PSBT, as `decoderawtransaction` shows it.
    Without inputs its serialization would read as a segwit marker, so it is decoded with
    one dummy input, then shown without it."""
    tx = global_map(psbt)[b"\x00"]
    if tx[4] != 0:
        return chain.call("decoderawtransaction", tx.hex())
    dummy = b"\x01" + b"\x22" * 32 + b"\x00" * 4 + b"\x00" + b"\xff" * 4
    d = chain.call("decoderawtransaction", (tx[:4] + dummy + tx[5:]).hex())
    d["vin"] = []
    return d


def outpoints(chain, n, count, sat=AMOUNT):
    """`count` coins of `sat` each sent to `n`, confirmed; their (txid, vout)."""
    outs = []
    for _ in range(count):
        addr = n.rpc.newaddr("bech32")["bech32"]
        txid = chain.call("sendtoaddress", addr, sat / 10**8)
        vout = [o["n"] for o in chain.call("getrawtransaction", txid, True)["vout"]
                if o["scriptPubKey"].get("address") == addr][0]
        outs.append((txid, vout))
    return outs


def funded_node(ln, count):
    n = ln.node()
    outs = outpoints(ln.chain, n, count)
    ln.mine(1)
    wait_for(lambda: len([o for o in n.rpc.listfunds()["outputs"]
                          if o["status"] == "confirmed"]) == count, what="coins")
    return n, outs


def test_reserveinputs_extends_and_unreserve_shortens(ln):
    n, outs = funded_node(ln, 4)
    funds = lambda: n.rpc.listfunds()["outputs"]  # noqa: E731
    assert not any(o["reserved"] for o in funds())
    for op in outs:
        r = n.rpc.reserveinputs(create_psbt([op]))["reservations"]
        assert r == [{"txid": op[0], "vout": op[1], "was_reserved": False, "reserved": True,
                      "reserved_to_block": ln.chain.height() + 72}]
    reserveheight = ln.chain.height() + 72
    assert all(o["reserved"] and o["reserved_to_block"] == reserveheight for o in funds())
    # Unreserve as a batch.
    psbt = create_psbt(outs)
    n.rpc.unreserveinputs(psbt)
    assert not any(o["reserved"] or "reserved_to_block" in o for o in funds())
    # Reserving twice fails unless not exclusive, which extends.
    n.rpc.reserveinputs(psbt)
    with pytest.raises(RpcError, match="already reserved") as e:
        n.rpc.reserveinputs(psbt)
    assert e.value.error["code"] == -32602
    n.rpc.reserveinputs(psbt, False)
    assert all(o["reserved_to_block"] == reserveheight + 72 for o in funds())
    r = n.rpc.unreserveinputs(psbt)["reservations"]
    assert all(x["was_reserved"] and x["reserved"] for x in r)
    assert all(o["reserved_to_block"] == reserveheight for o in funds())
    # Reservations survive a restart.
    ln.restart(n)
    assert all(o["reserved"] and o["reserved_to_block"] == reserveheight for o in funds())
    n.rpc.unreserveinputs(psbt)
    assert not any(o["reserved"] for o in funds())
    # A coin that is not ours is left out; garbage is refused with CLN's words.
    foreign = create_psbt([("11" * 32, 0)])
    assert n.rpc.reserveinputs(foreign) == {"reservations": []}
    with pytest.raises(RpcError, match="psbt: Expected a PSBT") as e:
        n.rpc.reserveinputs("cHNidP8BAAAAAA==")
    assert e.value.error["code"] == -32602


def test_fundpsbt_picks_reserves_and_makes_change(ln):
    n, outs = funded_node(ln, 4)
    feerate = "7500perkw"
    height = ln.chain.height()
    funding = n.rpc.fundpsbt(AMOUNT // 2, feerate, 0, reserve=0)
    tx = decode(ln.chain, funding["psbt"])
    assert 0 < funding["excess_msat"] < AMOUNT // 2 * 1000
    assert funding["feerate_per_kw"] == 7500
    assert "reservations" not in funding and "change_outnum" not in funding
    assert height - 100 < tx["locktime"] <= height
    assert len(tx["vin"]) == 1 and tx["vout"] == []
    # The inputs' weight and the fee are what excess_msat says.
    w = funding["estimated_final_weight"]
    assert funding["excess_msat"] == (AMOUNT - AMOUNT // 2 - 7500 * w // 1000) * 1000

    # 99 more weight costs more fee; the locktime is as asked.
    funding2 = n.rpc.fundpsbt(AMOUNT // 2, feerate, 99, reserve=0, locktime=height + 1)
    assert decode(ln.chain, funding2["psbt"])["locktime"] == height + 1
    assert funding2["excess_msat"] < funding["excess_msat"]
    assert funding2["estimated_final_weight"] == w + 99

    with pytest.raises(RpcError, match="not afford") as e:
        n.rpc.fundpsbt(AMOUNT * 4, feerate, 0)
    assert e.value.error["code"] == 301
    with pytest.raises(RpcError, match="not afford"):
        n.rpc.fundpsbt(AMOUNT // 2, feerate, 0, minconf=2)

    # The excess as change: change plus its own fee is the excess.
    funding3 = n.rpc.fundpsbt(AMOUNT // 2, feerate, 0, reserve=0, excess_as_change=True)
    assert funding3["excess_msat"] == 0
    tx3 = decode(ln.chain, funding3["psbt"])
    change = round(tx3["vout"][funding3["change_outnum"]]["value"] * 10**8)
    change_weight = funding3["estimated_final_weight"] - w
    assert change_weight == 172
    assert funding["excess_msat"] == change * 1000 + 7500 * change_weight
    # The change goes to the wallet.
    addr = tx3["vout"][funding3["change_outnum"]]["scriptPubKey"]["address"]
    assert addr.startswith("bcrt1p")

    # Two inputs for the whole amount.
    assert len(decode(ln.chain, n.rpc.fundpsbt(AMOUNT, feerate, 0, reserve=0)["psbt"])["vin"]) == 2

    # Reserved coins are not used.
    n.rpc.reserveinputs(create_psbt(outs))
    with pytest.raises(RpcError, match="not afford"):
        n.rpc.fundpsbt(AMOUNT // 2, feerate, 0)
    n.rpc.unreserveinputs(create_psbt([outs[0]]))
    f = n.rpc.fundpsbt(AMOUNT // 2, feerate, 0)
    assert [(r["txid"], r["vout"], r["was_reserved"], r["reserved"]) for r in f["reservations"]] \
        == [(outs[0][0], outs[0][1], False, True)]
    with pytest.raises(RpcError, match="already reserved"):
        n.rpc.reserveinputs(f["psbt"])
    with pytest.raises(RpcError, match="not afford"):
        n.rpc.fundpsbt(AMOUNT // 2, feerate, 0)


def test_utxopsbt_spends_exactly_the_coins_named(ln):
    n, outs = funded_node(ln, 2)
    feerate = "7500perkw"
    first = [f"{outs[0][0]}:{outs[0][1]}"]
    both = first + [f"{outs[1][0]}:{outs[1][1]}"]
    funding = n.rpc.utxopsbt(AMOUNT // 2, feerate, 0, first, reserve=0)
    tx = decode(ln.chain, funding["psbt"])
    assert [(i["txid"], i["vout"]) for i in tx["vin"]] == [outs[0]]
    assert 0 < funding["excess_msat"] < AMOUNT // 2 * 1000
    assert "reservations" not in funding
    funding2 = n.rpc.utxopsbt(AMOUNT // 2, feerate, 99, first, reserve=0,
                              locktime=ln.chain.height() + 1)
    assert funding2["estimated_final_weight"] == funding["estimated_final_weight"] + 99
    assert funding2["excess_msat"] < funding["excess_msat"]
    with pytest.raises(RpcError, match="not afford") as e:
        n.rpc.utxopsbt(AMOUNT, feerate, 0, first)
    assert e.value.error["code"] == 301
    with pytest.raises(RpcError, match="not afford"):
        n.rpc.utxopsbt(AMOUNT * 2, feerate, 0, both)
    # Without enough for change, no change output.
    funding4 = n.rpc.utxopsbt(AMOUNT - 3500, feerate, 0, first, reserve=0, excess_as_change=True)
    assert "change_outnum" not in funding4
    # Both, reserved.
    f = n.rpc.utxopsbt(AMOUNT, feerate, 0, both)
    assert [(r["txid"], r["vout"], r["was_reserved"], r["reserved"]) for r in f["reservations"]] \
        == [(o[0], o[1], False, True) for o in outs]
    with pytest.raises(RpcError, match="already reserved"):
        n.rpc.utxopsbt(AMOUNT, feerate, 0, both)
    n.rpc.utxopsbt(AMOUNT, feerate, 0, both, reservedok=True)
    with pytest.raises(RpcError, match="Unknown UTXO"):
        n.rpc.utxopsbt(AMOUNT, feerate, 0, [f"{'11' * 32}:0"])


def test_addpsbtoutput_and_setpsbtversion(ln):
    n = ln.node()
    r = n.rpc.addpsbtoutput(AMOUNT, locktime=111)
    assert r["outnum"] == 0 and r["estimated_added_weight"] == 172
    tx = decode(ln.chain, n.rpc.setpsbtversion(r["psbt"], 0)["psbt"])
    assert [round(o["value"] * 10**8) for o in tx["vout"]] == [AMOUNT]
    assert tx["locktime"] == 111
    ours = tx["vout"][0]["scriptPubKey"]["address"]
    assert ours.startswith("bcrt1p")
    r = n.rpc.addpsbtoutput(3_333_333, r["psbt"])
    assert r["outnum"] == 1
    dest = n.rpc.newaddr("p2tr")["p2tr"]
    r = n.rpc.addpsbtoutput(3_333_333, r["psbt"], destination=dest)
    tx = decode(ln.chain, r["psbt"])
    assert r["outnum"] == 2 and tx["vout"][2]["scriptPubKey"]["address"] == dest
    with pytest.raises(RpcError, match="locktime of an existing") as e:
        n.rpc.addpsbtoutput(AMOUNT, r["psbt"], locktime=5)
    assert e.value.error["code"] == 309
    with pytest.raises(RpcError, match="below dust limit") as e:
        n.rpc.addpsbtoutput(100)
    assert e.value.error["code"] == 302

    # Version 2 has no unsigned transaction; it round-trips to the same version 0.
    v0 = r["psbt"]
    v2 = n.rpc.setpsbtversion(v0, 2)["psbt"]
    g = global_map(v2)
    assert b"\x00" not in g and g[b"\xfb"] == struct.pack("<I", 2)
    assert g[b"\x03"] == struct.pack("<I", 111)
    assert n.rpc.setpsbtversion(v2, 0)["psbt"] == v0
    # Every PSBT command takes version 2 in.
    assert n.rpc.reserveinputs(v2) == {"reservations": []}
    for bad in (1, 3, 4, 5):
        with pytest.raises(RpcError, match="Could not set PSBT version"):
            n.rpc.setpsbtversion(v2, bad)


def test_sign_and_send_psbt(ln):
    n, outs = funded_node(ln, 6)
    other = ln.node()
    dest = other.rpc.newaddr("bech32")["bech32"]
    out_total = AMOUNT * 3
    funding = n.rpc.fundpsbt(satoshi=out_total, feerate=7500, startweight=42)
    assert len([x for x in n.rpc.listfunds()["outputs"] if x["reserved"]]) == 4
    saved = decode(ln.chain, funding["psbt"])["vin"][0]
    n.rpc.unreserveinputs(funding["psbt"])
    single = create_psbt([(saved["txid"], saved["vout"])])
    n.rpc.reserveinputs(single)
    # Coins must be reserved to be signed.
    with pytest.raises(RpcError, match=r"Aborting PSBT signing. UTXO .* is not reserved"):
        n.rpc.signpsbt(funding["psbt"])
    n.rpc.unreserveinputs(single)

    # Add the output (the excess included), reserve, sign, send.
    n.rpc.reserveinputs(funding["psbt"])
    tx = decode(ln.chain, funding["psbt"])
    full = n.rpc.addpsbtoutput(out_total + funding["excess_msat"] // 1000, funding["psbt"],
                               destination=dest)["psbt"]
    assert decode(ln.chain, full)["vout"][0]["scriptPubKey"]["address"] == dest
    # An external input (not ours) listed in signonly is refused; an index out of range too.
    with pytest.raises(RpcError, match="out of range") as e:
        n.rpc.signpsbt(full, [len(tx["vin"])])
    assert e.value.error["code"] == -32602
    # Signing only the first input leaves the rest unsigned: not sendable.
    partial = n.rpc.signpsbt(full, [0])["signed_psbt"]
    with pytest.raises(RpcError, match="PSBT not finalizeable"):
        n.rpc.sendpsbt(partial)
    signed = n.rpc.signpsbt(full)["signed_psbt"]
    # Signing twice changes nothing.
    assert n.rpc.signpsbt(signed)["signed_psbt"] == signed
    # A version 2 PSBT is signed and answered in version 2.
    v2 = n.rpc.signpsbt(n.rpc.setpsbtversion(full, 2)["psbt"])["signed_psbt"]
    assert b"\xfb" in global_map(v2)
    assert n.rpc.setpsbtversion(v2, 0)["psbt"] == signed
    sent = n.rpc.sendpsbt(signed)
    assert sent["txid"] in ln.chain.call("getrawmempool")
    assert ln.chain.call("decoderawtransaction", sent["tx"])["txid"] == sent["txid"]
    ln.mine(1)
    wait_for(lambda: sum(o["amount_msat"] for o in other.rpc.listfunds()["outputs"]
                         if o["status"] == "confirmed") == (out_total + funding["excess_msat"] // 1000) * 1000,
             what="payee's coins")
    # The spent coins are gone from the wallet; two of six remain.
    wait_for(lambda: len([o for o in n.rpc.listfunds()["outputs"]
                          if o["status"] == "confirmed"]) == 2, what="A's coins")
    # Nothing of ours to sign.
    with pytest.raises(RpcError, match="No wallet inputs to sign") as e:
        n.rpc.signpsbt(create_psbt([("11" * 32, 0)]))
    assert e.value.error["code"] == -1


def test_sendpsbt_refused_by_the_backend_releases_its_reservation(ln):
    n, outs = funded_node(ln, 1)
    f = n.rpc.fundpsbt(AMOUNT // 2, 7500, 42)
    # No outputs: the backend refuses it as invalid.
    signed = n.rpc.signpsbt(f["psbt"])["signed_psbt"]
    before = n.rpc.listfunds()["outputs"]
    with pytest.raises(RpcError, match="Error broadcasting transaction") as e:
        n.rpc.sendpsbt(signed)
    assert e.value.error["code"] == -1
    # Reserved as before (by fundpsbt), not for 72 more blocks.
    assert n.rpc.listfunds()["outputs"] == before
    assert before[0]["reserved_to_block"] == ln.chain.height() + 72
