"""The built-in `bookkeeper` plugin (CLN's bkpr-* commands) end to end, on one line of
nodes shared by the module (tests run in file order; later ones use the payments made by
earlier ones):

    A ──1M── B ──1M── C

A and B are funded with 1 BTC each and open the channels. A pays C through B (B earns a
routing fee), and C is paid. Every reply is validated against CLN's schemas by the
harness."""

from types import SimpleNamespace

import pytest

import lnnet
from conftest import RpcError, wait_for

BTC_MSAT = 10**11
CHAN_MSAT = 1_000_000_000
PAID_MSAT = 50_000_000


def bkpr(node, method, **params):
    return node.rpc.call(f"bkpr-{method}", params)


def balances(node):
    return {a["account"]: a for a in bkpr(node, "listbalances")["accounts"]}


def channel_id(node, peer):
    return node.rpc.listpeerchannels(peer.id)["channels"][0]["channel_id"]


def income(node, **params):
    return bkpr(node, "listincome", **params)["income_events"]


def error(node, method, **params):
    with pytest.raises(RpcError) as e:
        bkpr(node, method, **params)
    return e.value.error


@pytest.fixture(scope="module")
def net():
    with lnnet.module_network("fulgur-bkpr-") as ln:
        n = SimpleNamespace(ln=ln)
        n.a, n.b, n.c = ln.node(), ln.node(), ln.node()
        ln.line(n.a, n.b, n.c)
        n.ab = channel_id(n.a, n.b)
        n.bc = channel_id(n.b, n.c)
        n.ba = channel_id(n.b, n.a)
        yield n


def test_balances_after_deposit_and_open(net):
    a = net.a
    accts = balances(a)
    assert set(accts) == {"wallet", net.ab}, accts
    chan = accts[net.ab]
    assert chan["peer_id"] == net.b.id
    assert chan["we_opened"] is True
    assert chan["account_closed"] is False and chan["account_resolved"] is False
    assert chan["balances"] == [{"balance_msat": CHAN_MSAT, "coin_type": "bcrt"}]
    # The wallet holds what listfunds says it holds: the deposit less the channel and fee.
    funds = sum(o["amount_msat"] for o in a.rpc.listfunds()["outputs"])
    wallet = accts["wallet"]
    assert "peer_id" not in wallet
    assert wallet["balances"][0]["balance_msat"] == funds
    assert BTC_MSAT - CHAN_MSAT - 10_000_000 < funds < BTC_MSAT - CHAN_MSAT


def test_account_events_for_wallet_and_channel(net):
    a = net.a
    wallet = bkpr(a, "listaccountevents", account="wallet")["events"]
    deposits = [e for e in wallet if e["tag"] == "deposit" and e["type"] == "chain"]
    assert deposits and deposits[0]["credit_msat"] == BTC_MSAT
    assert deposits[0]["blockheight"] > 0
    chan = bkpr(a, "listaccountevents", account=net.ab)["events"]
    opens = [e for e in chan if e["tag"] == "channel_open"]
    assert len(opens) == 1 and opens[0]["credit_msat"] == CHAN_MSAT
    funding_txid = opens[0]["outpoint"].split(":")[0]
    fees = [e for e in chan if e["type"] == "onchain_fee"]
    assert fees and all(f["txid"] == funding_txid for f in fees)
    assert sum(f["credit_msat"] - f["debit_msat"] for f in fees) > 0
    # Every event, over every account, is in the unfiltered list, by time.
    every = bkpr(a, "listaccountevents")["events"]
    assert len(every) >= len(wallet) + len(chan)
    assert [e["timestamp"] for e in every] == sorted(e["timestamp"] for e in every)
    assert error(a, "listaccountevents", account="nosuch") == {
        "code": -32602, "message": "Account 'nosuch' not found"}
    e = error(a, "listaccountevents", account="wallet", payment_id="00" * 32)
    assert e["code"] == -32602
    assert error(a, "listaccountevents", payment_id="xyz")["code"] == -32602


def test_inspect_channel(net):
    a = net.a
    txs = bkpr(a, "inspect", account=net.ab)["txs"]
    opens = bkpr(a, "listaccountevents", account=net.ab)["events"]
    funding = next(e for e in opens if e["tag"] == "channel_open")["outpoint"]
    assert txs[0]["txid"] == funding.split(":")[0]
    assert txs[0]["fees_paid_msat"] > 0
    outs = [o for o in txs[0]["outputs"] if o["account"] == net.ab]
    assert outs and outs[0]["output_tag"] == "channel_open"
    assert outs[0]["outnum"] == int(funding.split(":")[1])
    assert error(a, "inspect", account="wallet")["code"] == -3
    assert error(a, "inspect", account="ff" * 32)["code"] == -3


def test_income_after_paying_receiving_and_routing(net):
    a, b, c = net.a, net.b, net.c
    inv = c.rpc.invoice(PAID_MSAT, "coffee", "a cup of coffee")
    assert a.rpc.pay(inv["bolt11"])["status"] == "complete"
    h = inv["payment_hash"]
    net.hash = h

    def paid_line(node, tag):
        return [i for i in income(node) if i["tag"] == tag and i.get("payment_id") == h]

    # The payee: the invoice's amount as income, with its description.
    got = wait_for(lambda: paid_line(c, "invoice"), what="C's income")
    assert got[0]["credit_msat"] == PAID_MSAT and got[0]["debit_msat"] == 0
    assert got[0]["description"] == "a cup of coffee"
    assert got[0]["account"] == channel_id(c, b)
    # The payer: the amount and the routing fee, apart.
    spent = wait_for(lambda: paid_line(a, "invoice"), what="A's expense")
    assert spent[0]["debit_msat"] == PAID_MSAT and spent[0]["account"] == net.ab
    assert spent[0]["description"] == "a cup of coffee"
    fee = paid_line(a, "invoice_fee")
    assert len(fee) == 1 and fee[0]["debit_msat"] > 0
    # The router: the same fee, earned on the outgoing channel.
    routed = wait_for(lambda: paid_line(b, "routed"), what="B's routing fee")
    assert routed == [dict(routed[0], account=net.bc, credit_msat=fee[0]["debit_msat"],
                           debit_msat=0)]
    net.fee = fee[0]["debit_msat"]
    # Balances moved with the payment.
    assert balances(a)[net.ab]["balances"][0]["balance_msat"] == \
        CHAN_MSAT - PAID_MSAT - net.fee
    assert balances(c)[channel_id(c, b)]["balances"][0]["balance_msat"] == PAID_MSAT
    # Consolidated fees: one line per transaction and account; the time box is (start, end].
    lines = income(a, consolidate_fees=False)
    assert len([i for i in lines if i["tag"] == "onchain_fee"]) >= \
        len([i for i in income(a) if i["tag"] == "onchain_fee"])
    late = spent[0]["timestamp"]
    assert all(i["timestamp"] > late - 1 for i in income(a, start_time=late - 1))
    assert all(i["timestamp"] <= late - 1 for i in income(a, end_time=late - 1))


def test_edit_descriptions(net):
    a, c = net.a, net.c
    upd = bkpr(c, "editdescriptionbypaymentid", payment_id=net.hash,
               description="two cups")["updated"]
    assert upd and all(u["description"] == "two cups" for u in upd)
    assert all(u["payment_id"] == net.hash for u in upd)
    assert [i["description"] for i in income(c) if i.get("payment_id") == net.hash] == \
        ["two cups"]
    # By outpoint: the deposit into A's wallet.
    dep = next(i for i in income(a) if i["tag"] == "deposit")
    upd = bkpr(a, "editdescriptionbyoutpoint", outpoint=dep["outpoint"],
               description="savings")["updated"]
    assert [u["outpoint"] for u in upd] == [dep["outpoint"]]
    assert next(i for i in income(a) if i["tag"] == "deposit")["description"] == "savings"
    assert error(a, "editdescriptionbyoutpoint", outpoint="nope",
                 description="x")["code"] == -32602


@pytest.mark.parametrize("fmt,header", [
    ("koinly", "Date,Sent Amount,Sent Currency,Received Amount,Received Currency,"
               "Fee Amount,Fee Currency,Label,Description,TxHash"),
    ("cointracker", "Date,Received Quantity,Received Currency,Sent Quantity,Sent Currency,"
                    "Fee Amount,Fee Currency,Tag,Account"),
    ("harmony", "HarmonyCSV v0.2,,,,,,,,,"),
    ("quickbooks", "Date,Description,Credit,Debit"),
])
def test_dumpincomecsv(net, tmp_path, fmt, header):
    a = net.a
    path = str(tmp_path / f"{fmt}.csv")
    r = bkpr(a, "dumpincomecsv", csv_format=fmt, csv_file=path)
    assert r == {"csv_file": path, "csv_format": fmt}
    lines = open(path).read().split("\n")
    assert lines[0] == header
    events = income(a)
    inline = [i for i in events if i["tag"] != "invoice_fee"] \
        if fmt in ("koinly", "cointracker") else events
    body = lines[4:] if fmt == "harmony" else lines[1:]
    assert len(body) == len(inline), lines
    if fmt == "koinly":
        pay = next(line for line in body if ",invoice," in line)
        assert pay.split(",")[1] == "0.00050000000"
        assert pay.split(",")[5] == f"{net.fee / 10**11:.11f}"
    e = error(a, "dumpincomecsv", csv_format="excel")
    assert e["code"] == -32602
    assert "should be one of" in e["message"]


def test_report(net):
    a = net.a
    r = bkpr(a, "report", format="{tag},{creditdebit},{description:none}",
             headers=["Tag,Amount,Description"], escape="csv")
    assert r["report"][0] == "Tag,Amount,Description"
    assert len(r["report"]) == 1 + len(income(a))
    assert "invoice,-0.00050000000,a cup of coffee" in r["report"]
    assert "deposit,+1.00000000000,savings" in r["report"]
    assert any(line.startswith("invoice_fee,-") for line in r["report"])
    assert error(a, "report", format="{nosuch}")["code"] == -32602


def test_channelsapy_for_router(net):
    b = net.b
    apys = {x["account"]: x for x in bkpr(b, "channelsapy")["channels_apy"]}
    assert set(apys) == {net.ba, net.bc, "net"}
    out = apys[net.bc]
    assert out["fees_out_msat"] == net.fee
    assert out["routed_out_msat"] == PAID_MSAT
    assert out["our_start_balance_msat"] == CHAN_MSAT
    assert apys[net.ba]["routed_in_msat"] == PAID_MSAT + net.fee
    assert apys["net"]["fees_out_msat"] == net.fee
    assert float(out["apy_out"].rstrip("%")) > 0
    # Nothing moved in channels after now.
    assert bkpr(b, "channelsapy", start_time=2**32)["channels_apy"] == []


def test_plugin_state_in_datastore(net):
    keys = [d["key"] for d in net.a.rpc.listdatastore(["bookkeeper"])["datastore"]]
    assert ["bookkeeper", "chainmoves_index"] in keys, keys


def test_descriptions_kept_across_restart(net):
    """Edited descriptions live in the datastore: a restarted plugin rebuilds its books from
    the node's moves and still shows them."""
    c = net.c
    net.ln.restart(c)
    lines = [i for i in income(c) if i.get("payment_id") == net.hash]
    assert lines and all(i["description"] == "two cups" for i in lines)
    assert bkpr(net.a, "listincome")["income_events"]


def test_restart_records_no_move_twice(net):
    c = net.c
    moves = c.rpc.call("listchannelmoves")["channelmoves"]
    assert len([m for m in moves if m.get("payment_hash") == net.hash]) == 1, moves
