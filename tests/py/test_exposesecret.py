"""`exposesecret`, as CLN's `test_exposesecret` (its old-format `hsm_secret` case: 32 bytes,
"lightning-1" then zeros): the codex32 strings are CLN's own vectors, the passphrase is
concealed by `listconfigs`, and a node without `--exposesecret-passphrase` refuses."""

import os

import pytest

from conftest import RpcError


def node_with_secret(node_factory, secret, **options):
    n = node_factory.get_node(options=options, start=False)
    n.net_dir.mkdir(parents=True, exist_ok=True)
    path = n.net_dir / "hsm_secret"
    path.write_bytes(secret)
    os.chmod(path, 0o400)
    n.start()
    return n


def test_exposesecret(node_factory):
    secret = b"lightning-1" + bytes(21)
    l1 = node_with_secret(node_factory, secret, **{"exposesecret-passphrase": "test_exposesecret",
                                                    "alias": "JUNIORBEAM"})
    l2 = node_factory.get_node()

    # listconfigs conceals the value, even asked directly.
    assert l1.rpc.listconfigs()["configs"]["exposesecret-passphrase"]["value_str"] == "..."
    assert l1.rpc.listconfigs("exposesecret-passphrase")["configs"][
        "exposesecret-passphrase"]["value_str"] == "..."
    assert not l1.is_in_log(r"exposesecret-passphrase has no effect")

    with pytest.raises(RpcError, match="exposesecrets-passphrase is not set"):
        l2.rpc.exposesecret(passphrase="test_exposesecret")
    # `check` refuses the same way.
    with pytest.raises(RpcError, match="exposesecrets-passphrase is not set"):
        l2.rpc.check("exposesecret", passphrase="test_exposesecret")
    l1.rpc.check("exposesecret", passphrase="test_exposesecret")
    with pytest.raises(RpcError, match="passphrase does not match exposesecrets-passphrase"):
        l1.rpc.exposesecret(passphrase="test_exposesecret2")
    for invalid in ("", "x", "xxxxx"):
        with pytest.raises(RpcError, match="must be 4 characters"):
            l1.rpc.exposesecret(passphrase="test_exposesecret", identifier=invalid)
    for invalid in ("CLNX", "Clnx", "clnX"):
        with pytest.raises(RpcError, match="must be lower-case"):
            l1.rpc.exposesecret(passphrase="test_exposesecret", identifier=invalid)
    for invalid in ("cln1", "clno", "clnb", "clni"):
        with pytest.raises(RpcError, match="must be valid bech32 string"):
            l1.rpc.exposesecret(passphrase="test_exposesecret", identifier=invalid)

    # CLN's vectors (lightning-hsmtool getcodexsecret on the same hsm_secret).
    assert l1.rpc.exposesecret(passphrase="test_exposesecret") == {
        "codex32": "cl10junrsd35kw6r5de5kueedxyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqj00m675kxffh",
        "identifier": "junr"}
    assert l1.rpc.exposesecret(passphrase="test_exposesecret", identifier="cln2") == {
        "codex32": "cl10cln2sd35kw6r5de5kueedxyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq2v3y60yxxn4mq",
        "identifier": "cln2"}

    # The identifier follows the alias as in CLN.
    l1.stop()
    l1.options["alias"] = "J1U1IOBiobN"
    l1.start()
    assert l1.rpc.exposesecret(passphrase="test_exposesecret") == {
        "codex32": "cl10junxsd35kw6r5de5kueedxyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq6mdtn5lql6p8m",
        "identifier": "junx"}
