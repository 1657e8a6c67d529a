"""datastore / listdatastore / deldatastore with CLN's semantics and error codes 1200-1206.
Every result goes through the schema-validating client (datastore.json etc.)."""

import pytest
from pyln.client import RpcError

from conftest import plugin_path


def error_code(call, *args, **kwargs):
    """The error code of `call(*args, **kwargs)`, which must fail."""
    with pytest.raises(RpcError) as e:
        call(*args, **kwargs)
    return e.value.error["code"]


def stored(rpc, key, string, mode):
    """`datastore` in `mode`: the (string, generation) stored."""
    r = rpc.datastore(key=key, string=string, mode=mode)
    return r["string"], r["generation"]


def test_create_and_modes(node):
    rpc = node.rpc
    r = rpc.datastore(key=["t", "a"], string="v1")
    assert r == {"key": ["t", "a"], "generation": 0, "string": "v1", "hex": "7631"}

    # must-create (the default) on an existing key
    assert error_code(rpc.datastore, key=["t", "a"], string="again") == 1202
    assert error_code(rpc.datastore, key=["t", "a"], string="again", mode="must-create") == 1202

    # must-replace: missing key -> 1203; existing -> replaced, generation bumped
    assert error_code(rpc.datastore, key=["t", "missing"], string="x", mode="must-replace") == 1203
    assert stored(rpc, ["t", "a"], "v2", "must-replace") == ("v2", 1)

    # create-or-replace never fails
    assert stored(rpc, ["t", "b"], "b0", "create-or-replace") == ("b0", 0)
    assert stored(rpc, ["t", "b"], "b1", "create-or-replace") == ("b1", 1)

    # must-append: missing -> 1203; existing -> appended
    assert error_code(rpc.datastore, key=["t", "nothere"], string="x", mode="must-append") == 1203
    assert stored(rpc, ["t", "a"], "+x", "must-append") == ("v2+x", 2)

    # create-or-append: creates, then appends
    assert stored(rpc, ["t", "c"], "c", "create-or-append") == ("c", 0)
    assert stored(rpc, ["t", "c"], "c", "create-or-append") == ("cc", 1)

    # the stored state
    listed = rpc.listdatastore(["t"])["datastore"]
    assert listed == [
        {"key": ["t", "a"], "generation": 2, "string": "v2+x", "hex": "76322b78"},
        {"key": ["t", "b"], "generation": 1, "string": "b1", "hex": "6231"},
        {"key": ["t", "c"], "generation": 1, "string": "cc", "hex": "6363"},
    ]


def test_generation_checks(node):
    rpc = node.rpc
    rpc.datastore(key="gen", string="0")
    assert error_code(rpc.datastore, key="gen", string="x", mode="must-replace",
                      generation=5) == 1204
    r = rpc.datastore(key="gen", string="1", mode="must-replace", generation=0)
    assert r["generation"] == 1
    r = rpc.datastore(key="gen", string="+", mode="must-append", generation=1)
    assert (r["string"], r["generation"]) == ("1+", 2)
    assert error_code(rpc.datastore, key="gen", string="+", mode="must-append",
                      generation=1) == 1204
    # generation only with must-replace / must-append
    assert error_code(rpc.datastore, key="gen2", string="x", mode="must-create",
                      generation=0) == -32602
    assert error_code(rpc.datastore, key="gen", string="x", mode="create-or-replace",
                      generation=2) == -32602
    # unchanged by the failures
    assert rpc.listdatastore("gen")["datastore"][0]["generation"] == 2


def test_hex_and_string(node):
    rpc = node.rpc
    r = rpc.datastore(key=["h", "bin"], hex="00ff10")
    assert r["hex"] == "00ff10" and r["generation"] == 0
    assert "string" not in r, "invalid UTF-8 must not be shown as string"
    r = rpc.datastore(key=["h", "txt"], hex="68656c6c6f")
    assert r["string"] == "hello"
    r = rpc.datastore(key=["h", "bin"], hex="ab", mode="must-append")
    assert r["hex"] == "00ff10ab"
    assert error_code(rpc.datastore, key=["h", "both"], string="a", hex="61") == -32602
    assert error_code(rpc.datastore, key=["h", "badhex"], hex="zz") == -32602
    assert error_code(rpc.datastore, key=["h", "badmode"], string="a", mode="sometimes") == -32602


def test_hierarchy(node):
    rpc = node.rpc
    rpc.datastore(key=["p", "x", "y"], string="deep")
    rpc.datastore(key=["p", "z"], string="shallow")
    # a key with children cannot get a value
    assert error_code(rpc.datastore, key=["p", "x"], string="v") == 1205
    # a key under a key with a value cannot be created
    assert error_code(rpc.datastore, key=["p", "z", "under"], string="v") == 1206

    # listdatastore of a parent lists its immediate children; a child that only has
    # children is shown with its key alone.
    assert rpc.listdatastore(["p"])["datastore"] == [
        {"key": ["p", "x"]},
        {"key": ["p", "z"], "generation": 0, "string": "shallow", "hex": "7368616c6c6f77"},
    ]
    assert rpc.listdatastore(["p", "x", "y"])["datastore"] == [
        {"key": ["p", "x", "y"], "generation": 0, "string": "deep", "hex": "64656570"}]
    root = rpc.listdatastore()["datastore"]
    assert {"key": ["p"]} in root
    assert rpc.listdatastore(["nope"])["datastore"] == []
    assert rpc.listdatastore(["p", "x", "y", "below-a-leaf"])["datastore"] == []

    # a single string is a one-element key
    rpc.datastore(key="single", string="s")
    assert rpc.listdatastore("single")["datastore"][0]["key"] == ["single"]
    assert rpc.listdatastore(["single"])["datastore"][0]["string"] == "s"


def test_deldatastore(node):
    rpc = node.rpc
    assert error_code(rpc.deldatastore, ["d", "none"]) == 1200
    rpc.datastore(key=["d", "k"], string="v")
    rpc.datastore(key=["d", "k"], string="w", mode="must-replace")
    assert error_code(rpc.deldatastore, ["d", "k"], generation=0) == 1201
    r = rpc.deldatastore(["d", "k"], generation=1)
    assert r == {"key": ["d", "k"], "generation": 1, "string": "w", "hex": "77"}
    assert rpc.listdatastore(["d", "k"])["datastore"] == []
    # parents are removed automatically with their last child
    assert {"key": ["d"]} not in rpc.listdatastore()["datastore"]
    rpc.datastore(key="plain", string="p")
    assert rpc.deldatastore("plain")["key"] == ["plain"]
    assert error_code(rpc.deldatastore, "plain") == 1200


def test_param_errors(node):
    rpc = node.rpc
    assert error_code(rpc.call, "datastore", {"string": "no key"}) == -32602
    assert error_code(rpc.call, "datastore", {"key": ["a", 1], "string": "x"}) == -32602
    assert error_code(rpc.call, "deldatastore", {}) == -32602
    assert error_code(rpc.call, "listdatastore", {"key": {"not": "a key"}}) == -32602


def test_positional_params(node):
    rpc = node.rpc
    r = rpc.call("datastore", [["pos", "k"], "v"])
    assert r["string"] == "v"
    r = rpc.call("datastore", [["pos", "k"], "w", None, "must-replace", 0])
    assert (r["string"], r["generation"]) == ("w", 1)
    assert rpc.call("listdatastore", [["pos"]])["datastore"][0]["string"] == "w"
    assert rpc.call("deldatastore", [["pos", "k"], 1])["string"] == "w"


def test_datastore_persists_across_restart(node_factory):
    node = node_factory.get_node()
    node.rpc.datastore(key=["persist", "me"], string="still here")
    node.stop()
    node.start()
    assert node.rpc.listdatastore(["persist", "me"])["datastore"] == [
        {"key": ["persist", "me"], "generation": 0, "string": "still here",
         "hex": "7374696c6c2068657265"}]


def test_plugin_uses_datastore(node_factory):
    node = node_factory.get_node(plugins=[plugin_path("methods_plugin.py")])
    r = node.rpc.call("ds_put", {"key": "k1", "value": "from plugin"})
    assert r["stored"]["key"] == ["methods_plugin", "k1"]
    assert r["listed"]["datastore"][0]["string"] == "from plugin"
    assert node.rpc.listdatastore(["methods_plugin", "k1"])["datastore"][0]["string"] == "from plugin"
