"""CLN's runes: createrune, checkrune, showrunes, blacklistrune, modelled on CLN's
tests/test_runes.py, and checked against the `runes` library (PyPI), the reference
implementation of the format: runes Fulgur makes are the library's, byte for byte, under
the node's rune secret (`makesecret` of "commando", as CLN derives it), and runes the
library makes or restricts are accepted by `checkrune`. Every reply is validated against
CLN's schemas by the harness."""

import base64
import time

import pytest
import runes
from pyln.client import RpcError

NOT_AUTHORIZED, NOT_PERMITTED, BLACKLISTED = 1501, 1502, 1503

# BOLT 11's "1 cup coffee" example invoice (signed, 2500u).
COFFEE = ("lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqf"
          "qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85f"
          "kpmdla2087ne0xh8nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh")

UNRESTRICTED_WARNING = (
    "WARNING: This rune has no restrictions! Anyone who has access to this rune could drain "
    "funds from your node. Be careful when giving this to apps that you don't trust. Consider "
    "using the restrictions parameter to only allow access to specific rpc methods.")


def secret(node):
    """The node's master rune secret, as CLN derives it."""
    return bytes.fromhex(node.rpc.makesecret(string="commando")["secret"])


def refused(node, code, match=None, **kwargs):
    """`checkrune(**kwargs)` fails with `code` (and a message matching `match`)."""
    with pytest.raises(RpcError, match=match) as e:
        node.rpc.checkrune(**kwargs)
    assert e.value.error["code"] == code, e.value.error
    return e.value.error["message"]


def valid(node, **kwargs):
    return node.rpc.checkrune(**kwargs) == {"valid": True}


def lib_rune(sec, unique_id, *restrictions):
    """The library's rune for `sec` with `unique_id` and restrictions given as text."""
    return runes.MasterRune(sec, unique_id=unique_id,
                            restrictions=[runes.Restriction.from_str(r) for r in restrictions])


def test_created_runes_are_the_runes_librarys(node_factory):
    node = node_factory.get_node()
    sec = secret(node)

    r0 = node.rpc.createrune()
    assert r0 == {"rune": lib_rune(sec, 0).to_base64(), "unique_id": "0",
                  "warning_unrestricted_rune": UNRESTRICTED_WARNING}

    r1 = node.rpc.createrune(restrictions="readonly")
    assert r1 == {"rune": lib_rune(sec, 1, "method^list|method^get|method=summary",
                                   "method/listdatastore").to_base64(),
                  "unique_id": "1"}

    # Values with the characters the format escapes are taken as written, and escaped.
    r2 = node.rpc.createrune(restrictions=[["method=invoice"],
                                           ["pnamedescription=@tipjar|jb55@sendsats.lol"],
                                           ["pnamelabel~a&b\\c", "pnum<3"]])
    expect = runes.MasterRune(sec, unique_id=2, restrictions=[
        runes.Restriction([runes.Alternative("method", "=", "invoice")]),
        runes.Restriction([runes.Alternative("pnamedescription", "=",
                                             "@tipjar|jb55@sendsats.lol")]),
        runes.Restriction([runes.Alternative("pnamelabel", "~", "a&b\\c"),
                           runes.Alternative("pnum", "<", "3")])])
    assert r2["rune"] == expect.to_base64()
    assert "warning_unrestricted_rune" not in r2

    # Restricting an existing rune gives what the library gives, with the same id; it is
    # not stored.
    r3 = node.rpc.createrune(rune=r2["rune"], restrictions=[["time<9999999999"]])
    lib = runes.Rune.from_base64(r2["rune"])
    lib.add_restriction(runes.Restriction.from_str("time<9999999999"))
    assert r3 == {"rune": lib.to_base64(), "unique_id": "2"}
    shown = node.rpc.showrunes(rune=r3["rune"])["runes"][0]
    assert shown["stored"] is False and "our_rune" not in shown

    # The library reads every one back, derived from the node's secret, with the
    # restrictions showrunes describes.
    master = runes.MasterRune(sec)
    for r in (r0, r1, r2, r3):
        decoded = runes.Rune.from_base64(r["rune"])
        assert master.is_rune_authorized(decoded)
        shown = node.rpc.showrunes(rune=r["rune"])["runes"][0]
        assert [[(a.field, a.cond, a.value) for a in restr.alternatives]
                for restr in decoded.restrictions[1:]] == [
            [(a["fieldname"], a["condition"], a["value"]) for a in restr["alternatives"]]
            for restr in shown["restrictions"]]


def test_library_runes_are_accepted(node_factory):
    node = node_factory.get_node()
    sec = secret(node)

    made = lib_rune(sec, 5, "method=getinfo|method^list").to_base64()
    assert valid(node, rune=made, method="getinfo")
    assert valid(node, rune=made, method="listpeers")
    assert refused(node, NOT_PERMITTED, rune=made, method="pay") == (
        "Not permitted: method is not equal to getinfo AND method does not start with list")
    # Without base64 padding, too.
    assert valid(node, rune=made.rstrip("="), method="getinfo")

    # A rune of ours, restricted by the library.
    ours = runes.Rune.from_base64(node.rpc.createrune()["rune"])
    ours.add_restriction(runes.Restriction.from_str("pnamelabel^shop"))
    restricted = ours.to_base64()
    assert valid(node, rune=restricted, method="invoice", params={"label": "shop-1"})
    assert refused(node, NOT_PERMITTED, rune=restricted, method="invoice",
                   params={"label": "x"}) == "Not permitted: parameter label does not start with shop"

    # Another secret, or a restriction dropped or changed without the secret: not ours.
    other = lib_rune(bytes(32), 0).to_base64()
    assert refused(node, NOT_AUTHORIZED, rune=other) == "Not authorized: Not derived from master"
    forged = runes.Rune.from_authcode(ours.authcode(), ours.restrictions[:1]).to_base64()
    refused(node, NOT_AUTHORIZED, "Not derived from master", rune=forged)
    changed = runes.Rune.from_authcode(
        ours.authcode(), ours.restrictions[:1] + [runes.Restriction.from_str("pnamelabel^")])
    refused(node, NOT_AUTHORIZED, "Not derived from master", rune=changed.to_base64())
    # A version in the unique id is not ours either (CLN has none).
    versioned = runes.MasterRune(sec, unique_id=6, version=1).to_base64()
    refused(node, NOT_AUTHORIZED, "Version mismatch", rune=versioned)


CONDITION_CASES = [
    # (restriction, method, params)
    ("method=getinfo", "getinfo", {}),
    ("method=getinfo", "pay", {}),
    ("method/getinfo", "getinfo", {}),
    ("method/getinfo", "pay", {}),
    ("method^list", "listpeers", {}),
    ("method^list", "getinfo", {}),
    ("method$info", "getinfo", {}),
    ("method$info", "pay", {}),
    ("method~tin", "getinfo", {}),
    ("method~xyz", "getinfo", {}),
    ("method{m", "getinfo", {}),
    ("method{m", "pay", {}),
    ("method}m", "pay", {}),
    ("method}m", "getinfo", {}),
    ("pnameamount!", "pay", {"bolt11": "x"}),
    ("pnameamount!", "pay", {"amount": 5}),
    ("pnameamount<10", "pay", {"amount": 9}),
    ("pnameamount<10", "pay", {"amount": 10}),
    ("pnameamount>10", "pay", {"amount": 11}),
    ("pnameamount>10", "pay", {"amount": -11}),
    ("pnameamount<10", "pay", {"amount": "nine"}),
    ("pnameamount<ten", "pay", {"amount": 9}),
    ("pnameamount=10", "pay", {}),
    ("pnamelabel=a|pnamelabel=b", "invoice", {"label": "b"}),
    ("pnamelabel=a|pnamelabel=b", "invoice", {"label": "c"}),
    ("parr0=a", "invoice", ["a", 5]),
    ("parr1>4", "invoice", ["a", 5]),
    ("parr2!", "invoice", ["a", 5]),
    ("parr1=a", "invoice", ["a"]),
    ("pnum=2", "invoice", ["a", 5]),
    ("pnum<2", "invoice", {"x": 1, "y": 2}),
    ("pnum>0", "invoice", {}),
    ("anything#comment", "pay", {}),
    ("nosuchfield!", "pay", {}),
    ("nosuchfield/x", "pay", {}),
]


def test_evaluation_agrees_with_the_library(node_factory):
    """For every condition: checkrune says what the library says about the same values."""
    node = node_factory.get_node()
    sec = secret(node)
    master = runes.MasterRune(sec)
    node_id = node.rpc.getinfo()["id"]
    for i, (restriction, method, params) in enumerate(CONDITION_CASES):
        rune = node.rpc.createrune(restrictions=[restriction.split("|")])["rune"]
        values = {"method": method, "id": node_id, "time": int(time.time()),
                  "pnum": len(params)}
        if isinstance(params, dict):
            values.update({"pname" + k: v for k, v in params.items()})
        else:
            values.update({"parr{}".format(n): v for n, v in enumerate(params)})
        expected, why = master.check_with_reason(rune, values)
        try:
            got = valid(node, rune=rune, nodeid=node_id, method=method, params=params)
        except RpcError as e:
            assert e.error["code"] == NOT_PERMITTED, e.error
            got = False
        assert got == expected, (restriction, method, params, why)


def test_checkrune_fields_and_messages(node_factory):
    node = node_factory.get_node()
    node_id = node.rpc.getinfo()["id"]

    # id: the caller's node id.
    by_id = node.rpc.createrune(restrictions=[["id=" + node_id]])["rune"]
    assert valid(node, rune=by_id, nodeid=node_id)
    refused(node, NOT_PERMITTED, "Not permitted: id not present", rune=by_id)
    no_id = node.rpc.createrune(restrictions=[["id!"]])["rune"]
    assert valid(node, rune=no_id, method="getinfo")
    refused(node, NOT_PERMITTED, "Not permitted: id is present", rune=no_id, nodeid=node_id)
    with pytest.raises(RpcError, match="nodeid: should be a node id"):
        node.rpc.checkrune(rune=by_id, nodeid="02zz")

    # method: missing, present, empty.
    not_getinfo = node.rpc.createrune(restrictions=[["method/getinfo"]])["rune"]
    refused(node, NOT_PERMITTED, "Not permitted: method is equal to getinfo",
            rune=not_getinfo, method="getinfo")
    refused(node, NOT_PERMITTED, "Not permitted: method not present", rune=not_getinfo)
    no_method = node.rpc.createrune(restrictions=[["method!"]])["rune"]
    refused(node, NOT_PERMITTED, "Not permitted: method is present", rune=no_method, method="")
    assert valid(node, rune=no_method)

    # CLN's messages for parameters.
    pnum = node.rpc.createrune(restrictions=[["method=pay"], ["pnum=1"]])["rune"]
    for params in (["xxx", 12000], {"bolt11": "xxx", "amount_msat": 17}):
        refused(node, NOT_PERMITTED, "Not permitted: number of parameters is not equal to 1",
                rune=pnum, method="pay", params=params)
    parr = node.rpc.createrune(restrictions=[["method=pay"], ["parr1=17"]])["rune"]
    refused(node, NOT_PERMITTED, "Not permitted: parameter #1 is not equal to 17",
            rune=parr, method="pay", params=["xxx", 12000])
    refused(node, NOT_PERMITTED, "Not permitted: parameter #1 not present",
            rune=parr, method="pay", params={"bolt11": "xxx"})
    amount = node.rpc.createrune(restrictions=[["method=pay"], ["pnameamount_msat<10000"]])["rune"]
    refused(node, NOT_PERMITTED, "Not permitted: parameter amount_msat not present",
            rune=amount, method="pay", params=["lnbcrt1", 12000])
    refused(node, NOT_PERMITTED, "Not permitted: parameter amount_msat is not an integer",
            rune=amount, method="pay", params={"bolt11": "x", "amount_msat": "10000sat"})
    refused(node, NOT_PERMITTED,
            "Not permitted: parameter amount_msat is greater or equal to 10000",
            rune=amount, method="pay", params={"bolt11": "x", "amount_msat": 12000})
    assert valid(node, rune=amount, method="pay", params={"bolt11": "x", "amount_msat": 9999})
    # The name without its punctuation works too (CLN's `pnameamountmsat`).
    bare = node.rpc.createrune(restrictions=[["pnameamountmsat=5"]])["rune"]
    assert valid(node, rune=bare, method="pay", params={"amount_msat": 5})
    with pytest.raises(RpcError, match="params: must be object or array"):
        node.rpc.checkrune(rune=bare, params="x")

    # CLN's escaping case: the value is compared with the parameter as written.
    weird = node.rpc.createrune(restrictions=[["method=invoice"],
                                              ["pnamedescription=@tipjar|jb55@sendsats.lol"]])
    refused(node, NOT_PERMITTED, "Not permitted:", rune=weird["rune"], method="invoice",
            params={"amount_msat": "any", "label": "lbl",
                    "description": "@tipjar\\|jb55@sendsats.lol"})
    assert valid(node, rune=weird["rune"], method="invoice",
                 params={"amount_msat": "any", "label": "lbl",
                         "description": "@tipjar|jb55@sendsats.lol"})

    # time: seconds since 1970.
    assert valid(node, rune=node.rpc.createrune(restrictions=[["time>1656675211"]])["rune"])
    refused(node, NOT_PERMITTED, "Not permitted: time is greater or equal to 1656675211",
            rune=node.rpc.createrune(restrictions=[["time<1656675211"]])["rune"])

    # Invoice fields of a bolt11 parameter.
    inv = COFFEE
    decoded = node.rpc.decode(inv)
    coffee = node.rpc.createrune(restrictions=[["pinvbolt11_description=" + decoded["description"]],
                                               ["pinvbolt11_amount<250000001"],
                                               ["pinvbolt11_node=" + decoded["payee"]]])["rune"]
    assert valid(node, rune=coffee, method="pay", params={"bolt11": "lightning:" + inv})
    cheap = node.rpc.createrune(restrictions=[["pinvbolt11_amount<1000"]])["rune"]
    refused(node, NOT_PERMITTED,
            "Not permitted: invoice parameter bolt11_amount is greater or equal to 1000",
            rune=cheap, method="pay", params={"bolt11": inv})
    refused(node, NOT_PERMITTED, "Not permitted: Unknown invoice parameter bolt11",
            rune=coffee, method="pay", params={"invoice": inv})
    refused(node, NOT_PERMITTED, "Not permitted: Invalid invoice: ",
            rune=coffee, method="pay", params={"bolt11": "xxx"})


def test_invalid_parameters(node_factory):
    node = node_factory.get_node()
    for cond in "!=/^$~<>{}#,":
        with pytest.raises(RpcError, match="not a valid restriction") as e:
            node.rpc.createrune(restrictions=[[f"{cond}method"]])
        assert e.value.error["code"] == -32602
    with pytest.raises(RpcError, match="not a valid restriction"):
        node.rpc.createrune(restrictions=["method=getinfo"])
    # CLN's test_nonnumeric_uniqueid: "zero", "0andstr", too big, none.
    for rune in ("pX1h8z05kg0WZqe0ogo_8MHOa7-8gVZNXTckyyLKuLk9emVybw==",
                 "1dYYAIxmjRDHbXUIpztpwDA0q7RrHKbXJd9Yhj50Dfc9MGFuZHN0cmluZw==",
                 "cr7eQmdhPVqH3-M2g67JymP2zVKyZ_n5hhFk3IMSg5o9OTIyMzM3MjAzNjg1NDc3NTgwOQ==",
                 "SaQlgbzu6SGAhANReucs7P8GLuVbSlPg30QG78UzNcY="):
        with pytest.raises(RpcError, match="should have valid numeric unique_id"):
            node.rpc.showrunes(rune)
    with pytest.raises(RpcError, match="rune: should be base64 string"):
        node.rpc.checkrune(rune="not a rune")
    with pytest.raises(RpcError, match="missing required parameter: rune"):
        node.rpc.checkrune()


def test_showrunes(node_factory):
    node = node_factory.get_node()
    sec = secret(node)
    first = node.rpc.createrune()["rune"]
    second = node.rpc.createrune(restrictions=[["method^list", "method^get"], ["pnum<2"]])["rune"]
    assert node.rpc.showrunes() == {"runes": [
        {"rune": first, "unique_id": "0", "restrictions": [], "restrictions_as_english": ""},
        {"rune": second, "unique_id": "1",
         "restrictions": [
             {"alternatives": [
                 {"fieldname": "method", "value": "list", "condition": "^",
                  "english": "method starts with list"},
                 {"fieldname": "method", "value": "get", "condition": "^",
                  "english": "method starts with get"}],
              "english": "method starts with list OR method starts with get"},
             {"alternatives": [{"fieldname": "pnum", "value": "2", "condition": "<",
                                "english": "pnum < 2"}],
              "english": "pnum < 2"}],
         "restrictions_as_english":
             "method starts with list OR method starts with get AND pnum < 2"}]}
    assert node.rpc.showrunes(first)["runes"][0] == node.rpc.showrunes()["runes"][0]

    # Ours but never stored; stored: false.
    unstored = node.rpc.showrunes(rune=lib_rune(sec, 9).to_base64())["runes"][0]
    assert unstored["unique_id"] == "9" and unstored["stored"] is False
    assert "our_rune" not in unstored
    # Not ours (CLN's example, from another node).
    not_ours = node.rpc.showrunes(rune="oNJAqigqDrHBGzsm7gV3z87oGpzq-KqFlOxx2O9iEQk9MA==")["runes"][0]
    assert not_ours["stored"] is False and not_ours["our_rune"] is False

    # last_used: only after a check that passed.
    getinfo = node.rpc.createrune(restrictions=[["method=getinfo"]])["rune"]
    refused(node, NOT_PERMITTED, rune=getinfo, method="listchannels")
    assert "last_used" not in node.rpc.showrunes(rune=getinfo)["runes"][0]
    before = time.time()
    assert valid(node, rune=getinfo, method="getinfo")
    after = time.time()
    assert before <= node.rpc.showrunes(rune=getinfo)["runes"][0]["last_used"] <= after


def test_rate_limits(node_factory):
    node = node_factory.get_node()
    sec = secret(node)
    for per in ("2000000000nsec", "2000000usec", "2000msec", "2sec", "2"):
        rune = node.rpc.createrune(restrictions=[["per=" + per]])["rune"]
        assert valid(node, rune=rune, method="getinfo")
        used = node.rpc.showrunes(rune=rune)["runes"][0]["last_used"]
        assert refused(node, NOT_PERMITTED, rune=rune, method="listpeers") == \
            "Not permitted: too soon"
        # A refused check is not a use.
        assert node.rpc.showrunes(rune=rune)["runes"][0]["last_used"] == used
    time.sleep(2.1)
    assert valid(node, rune=rune, method="getinfo")

    # rate=30: one every 2 seconds, counted per unique id: a rune restricted from it shares
    # its uses.
    rated = node.rpc.createrune(restrictions=[["rate=30"]])
    derived = node.rpc.createrune(rune=rated["rune"], restrictions=[["method=getinfo"]])["rune"]
    assert valid(node, rune=rated["rune"])
    refused(node, NOT_PERMITTED, "too soon", rune=derived, method="getinfo")
    time.sleep(2.1)
    assert valid(node, rune=derived, method="getinfo")
    refused(node, NOT_PERMITTED, "too soon", rune=rated["rune"])

    # Malformed limits are refusals, not errors.
    for bad, why in (("per=1week", "malformed suffix"), ("per=0", "malformed per"),
                     ("rate=x", "malformed rate"), ("per<3", "per operator must be =")):
        rune = node.rpc.createrune(restrictions=[[bad]])["rune"]
        refused(node, NOT_PERMITTED, why, rune=rune)

    # A rune never stored is never limited (CLN: "if we do not know the rune, per does not
    # work").
    unknown = lib_rune(sec, 500, "per=1day").to_base64()
    assert valid(node, rune=unknown)
    assert valid(node, rune=unknown)


def test_blacklistrune(node_factory):
    node = node_factory.get_node()
    rune0 = node.rpc.createrune()
    rune1 = node.rpc.createrune()
    assert (rune0["unique_id"], rune1["unique_id"]) == ("0", "1")
    assert valid(node, rune=rune0["rune"], method="getinfo")
    assert valid(node, rune=rune1["rune"], method="getinfo")

    assert node.rpc.blacklistrune() == {"blacklist": []}
    assert node.rpc.blacklistrune(start=1) == {"blacklist": [{"start": 1, "end": 1}]}
    refused(node, BLACKLISTED, "Not authorized: Blacklisted rune", rune=rune1["rune"])
    assert valid(node, rune=rune0["rune"], method="getinfo")
    assert node.rpc.showrunes(rune=rune1["rune"])["runes"][0]["blacklisted"] is True
    assert "blacklisted" not in node.rpc.showrunes(rune=rune0["rune"])["runes"][0]

    # Ranges merge as CLN's do.
    assert node.rpc.blacklistrune(start=2) == {"blacklist": [{"start": 1, "end": 2}]}
    assert node.rpc.blacklistrune(start=6) == {"blacklist": [{"start": 1, "end": 2},
                                                              {"start": 6, "end": 6}]}
    assert node.rpc.blacklistrune(start=3, end=5) == {"blacklist": [{"start": 1, "end": 6}]}
    assert node.rpc.blacklistrune(start=9) == {"blacklist": [{"start": 1, "end": 6},
                                                              {"start": 9, "end": 9}]}
    assert node.rpc.blacklistrune(start=0) == {"blacklist": [{"start": 0, "end": 6},
                                                              {"start": 9, "end": 9}]}
    refused(node, BLACKLISTED, rune=rune0["rune"])
    # Blacklisted even when restricted further, or made by the library.
    sec = secret(node)
    refused(node, BLACKLISTED, rune=lib_rune(sec, 4, "method=x").to_base64())
    assert valid(node, rune=lib_rune(sec, 7).to_base64())

    # relist takes ids off the list.
    assert node.rpc.blacklistrune(start=10, relist=True) == {
        "blacklist": [{"start": 0, "end": 6}, {"start": 9, "end": 9}]}
    assert node.rpc.blacklistrune(start=9, end=9, relist=True) == {
        "blacklist": [{"start": 0, "end": 6}]}
    assert node.rpc.blacklistrune(start=1, end=2, relist=True) == {
        "blacklist": [{"start": 0, "end": 0}, {"start": 3, "end": 6}]}
    assert node.rpc.blacklistrune(start=4, relist=True) == {
        "blacklist": [{"start": 0, "end": 0}, {"start": 3, "end": 3}, {"start": 5, "end": 6}]}
    assert node.rpc.blacklistrune(start=0, end=3, relist=True) == {
        "blacklist": [{"start": 5, "end": 6}]}
    assert valid(node, rune=rune1["rune"])

    with pytest.raises(RpcError, match="Cannot blacklist beyond 100000000") as e:
        node.rpc.blacklistrune(start=100_000_000)
    assert e.value.error["code"] == -32602
    with pytest.raises(RpcError, match="Can not specify end without start"):
        node.rpc.blacklistrune(end=3)
    # Positional, as lightning-cli sends it.
    assert node.rpc.call("blacklistrune", [5, 6]) == {"blacklist": [{"start": 5, "end": 6}]}

    # The blacklist survives a restart.
    node.stop()
    node.start()
    assert node.rpc.blacklistrune() == {"blacklist": [{"start": 5, "end": 6}]}
    assert node.rpc.blacklistrune(start=0, end=99_999_999, relist=True) == {"blacklist": []}


def test_runes_persist_across_restart(node_factory):
    node = node_factory.get_node()
    r0 = node.rpc.createrune(restrictions=[["per=1day"]])["rune"]
    r1 = node.rpc.createrune(restrictions="readonly")["rune"]
    assert valid(node, rune=r0, method="getinfo")
    shown = node.rpc.showrunes()
    node.stop()
    node.start()
    assert node.rpc.showrunes() == shown
    # Numbering goes on; the rate limit's last use is kept.
    assert node.rpc.createrune()["unique_id"] == "2"
    refused(node, NOT_PERMITTED, "too soon", rune=r0, method="getinfo")
    assert valid(node, rune=r1, method="listpeers")


def test_padding_is_optional_and_garbage_is_refused(node_factory):
    node = node_factory.get_node()
    rune = node.rpc.createrune()["rune"]
    raw = base64.urlsafe_b64decode(rune)
    assert valid(node, rune=rune.rstrip("="))
    # A NUL in the restrictions, or a truncated authcode, is not a rune.
    for bad in (raw + b"\0", raw[:20]):
        with pytest.raises(RpcError, match="should be base64 string"):
            node.rpc.checkrune(rune=base64.urlsafe_b64encode(bad).decode())
