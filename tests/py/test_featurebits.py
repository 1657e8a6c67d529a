"""Feature bits and peer messages plugins declare in their manifest, as CLN's
test_plugin.py::test_plugin_feature_announce: `init` bits reach peers, `node` bits our
node_announcement, `invoice` bits our invoices; `init.configuration.feature_set` carries the
node's real bits; an even message type is passed up only when declared (`custommessages`)."""

from conftest import plugin_path, wait_for

FEATURES = plugin_path("feature_plugin.py")


def has_bit(hexbits, bit):
    return int(hexbits or "0", 16) >> bit & 1 == 1


def test_plugin_feature_bits(ln):
    a = ln.node(plugins=[FEATURES])
    b = ln.node()
    ln.fund(a)
    ln.open(a, b)

    # init: B sees bit 201 in A's features, and the plugin's feature_set says the same.
    seen_by_b = b.rpc.listpeers(a.id)["peers"][0]["features"]
    assert has_bit(seen_by_b, 201)
    fs = a.rpc.call("feature-init")["feature_set"]
    assert set(fs) == {"init", "node", "channel", "invoice"}
    assert int(fs["init"], 16) == int(seen_by_b, 16)
    # LDK's own bits are there too: var_onion_optin (8/9), payment_secret (14/15),
    # gossip_queries (6/7).
    for bit in (8, 14, 6):
        assert has_bit(fs["init"], bit) or has_bit(fs["init"], bit + 1), (bit, fs["init"])
    assert has_bit(fs["node"], 203) and has_bit(fs["invoice"], 205)
    assert not has_bit(b.rpc.listpeers(a.id)["peers"][0]["features"], 203)

    # invoice: bit 205, and the invoice is still paid (its signature covers the bits).
    inv = a.rpc.invoice(1000, "feat", "feature bits")
    dec = b.rpc.decode(inv["bolt11"])
    assert dec["valid"] and has_bit(dec["features"], 205)

    # node_announcement: bit 203, as B learns it from gossip.
    node = wait_for(lambda: [n for n in b.rpc.listnodes(a.id)["nodes"] if "features" in n],
                    what="A's node announcement at B")[0]
    assert has_bit(node["features"], 203)


def raw_peer(node):
    """A Lightning connection to `node` from a fresh key, speaking BOLT 8 (pyln-proto),
    answering the node's BOLT 1 `init` with the same features (so it requires nothing
    unknown)."""
    import os
    import struct
    from pyln.proto.wire import PrivateKey, PublicKey, connect
    conn = connect(PrivateKey(os.urandom(32)), PublicKey(bytes.fromhex(node.id)),
                   "127.0.0.1", node.port)
    init = conn.read_message()
    assert struct.unpack(">H", init[:2])[0] == 16
    gflen = struct.unpack(">H", init[2:4])[0]
    flen = struct.unpack(">H", init[4 + gflen:6 + gflen])[0]
    fbytes = init[6 + gflen:6 + gflen + flen]
    conn.send_message(struct.pack(">HH", 16, 0) + struct.pack(">H", len(fbytes)) + fbytes)
    return conn


def test_even_custom_messages_need_declaring(ln):
    """BOLT 1: an unknown even message is not understood, so the connection fails; CLN
    passes even types up only when a plugin declared them (`custommessages`)."""
    import struct
    a = ln.node(plugins=[plugin_path("chan_notes.py")])
    c = ln.node(plugins=[plugin_path("chan_notes.py"), FEATURES])

    def got(n):
        return sorted(x["params"]["custommsg"]["payload"][:4]
                      for x in n.rpc.call("chan-notes")["calls"]
                      if x["method"] == "custommsg" and not x["hook"])

    # C's plugin declared 33000: C passes it up, and the odd 33001 too.
    conn = raw_peer(c)
    conn.send_message(struct.pack(">H", 33000) + b"\x01")
    conn.send_message(struct.pack(">H", 33001) + b"\x02")
    wait_for(lambda: got(c) == ["80e8", "80e9"], what="C passed both up")
    # A declared nothing: the odd one goes up, the even one ends the connection.
    conn = raw_peer(a)
    conn.send_message(struct.pack(">H", 33001) + b"\x02")
    wait_for(lambda: got(a) == ["80e9"], what="A passed the odd one up")
    conn.send_message(struct.pack(">H", 33000) + b"\x01")
    wait_for(lambda: a.rpc.listpeers()["peers"] == [], what="A dropped the peer")
    assert got(a) == ["80e9"]
