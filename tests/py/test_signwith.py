"""`signmessagewithkey` (a BIP137 signature by a wallet key, CLN's test_signmessagewithkey,
verified here with coincurve by recovering the key and matching the address) and
`signinvoice` (CLN's test_signinvoice: another node re-signs an invoice and becomes its
payee)."""

import base64
import hashlib

import coincurve
import pytest
from pyln.proto import bech32

from conftest import RpcError


def bip137_digest(message):
    data = message.encode()
    assert len(data) < 0xfd
    blob = b"\x18Bitcoin Signed Message:\n" + bytes([len(data)]) + data
    return hashlib.sha256(hashlib.sha256(blob).digest()).digest()


def test_signmessagewithkey(node_factory):
    a, b = node_factory.get_node(), node_factory.get_node()
    message = "a test message"
    addr = a.rpc.newaddr("bech32")["bech32"]
    other = b.rpc.newaddr("bech32")["bech32"]
    with pytest.raises(RpcError, match="Address is not p2wpkh and it is not supported") as e:
        a.rpc.signmessagewithkey(message, a.rpc.newaddr("p2tr")["p2tr"])
    assert e.value.error["code"] == -32602
    with pytest.raises(RpcError, match="Address is not found in the wallet's database"):
        a.rpc.signmessagewithkey(message, other)
    r = a.rpc.signmessagewithkey(message, addr)
    assert r["address"] == addr
    sig = base64.b64decode(r["base64"])
    assert sig.hex() == r["signature"] and len(sig) == 65
    # BIP137, P2WPKH: header 39..42; the key recovered from it is the address's key.
    assert 39 <= sig[0] <= 42
    recoverable = sig[1:] + bytes([sig[0] - 39])
    key = coincurve.PublicKey.from_signature_and_message(recoverable, bip137_digest(message),
                                                         hasher=None)
    assert key.format().hex() == r["pubkey"]
    _, program = bech32.decode("bcrt", addr)
    h160 = hashlib.new("ripemd160", hashlib.sha256(key.format()).digest()).digest()
    assert bytes(program) == h160
    # Another message, another signature that does not recover to the same key.
    sig2 = bytes.fromhex(a.rpc.signmessagewithkey("other", addr)["signature"])
    wrong = coincurve.PublicKey.from_signature_and_message(
        sig2[1:] + bytes([sig2[0] - 39]), bip137_digest(message), hasher=None)
    assert wrong.format().hex() != r["pubkey"]


def test_signinvoice_makes_us_the_payee(ln):
    a, b = ln.node(), ln.node()
    inv = a.rpc.invoice(1000, "inv1", "inv1")["bolt11"]
    assert a.rpc.decode(inv)["payee"] == a.id
    inv2 = b.rpc.signinvoice(inv)["bolt11"]
    d = a.rpc.decode(inv2)
    assert d["payee"] == b.id and d["valid"] is True
    assert d["payment_hash"] == a.rpc.decode(inv)["payment_hash"]
    # Not stored.
    assert b.rpc.listinvoices()["invoices"] == []
    with pytest.raises(RpcError, match="Unparsable invoice") as e:
        b.rpc.signinvoice("lnbcrt1nonsense")
    assert e.value.error["code"] == -32602
