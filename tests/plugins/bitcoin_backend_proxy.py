#!/usr/bin/env python3
"""A CLN-style Bitcoin backend plugin for tests: serves getchaininfo, estimatefees,
getrawblockbyheight, getutxout and sendrawtransaction by proxying to a bitcoind-compatible
JSON-RPC endpoint (devchain or bitcoind), like CLN's bcli does with bitcoin-cli.

Options: --proxy-url=http://127.0.0.1:PORT and --proxy-cookie=PATH (or a URL with user:pass).
No dependencies beyond the standard library."""
import base64
import json
import sys
import urllib.parse
import urllib.request

URL = None
AUTH = None
COOKIE = None


def send(o):
    sys.stdout.write(json.dumps(o) + "\n\n")
    sys.stdout.flush()


def auth_header():
    if COOKIE:
        with open(COOKIE) as f:
            return "Basic " + base64.b64encode(f.read().strip().encode()).decode()
    return AUTH


def rpc(method, params):
    body = json.dumps({"jsonrpc": "1.0", "id": "proxy", "method": method, "params": params}).encode()
    req = urllib.request.Request(URL, data=body, headers={"Content-Type": "application/json"})
    a = auth_header()
    if a:
        req.add_header("Authorization", a)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            resp = json.loads(r.read())
    except urllib.error.HTTPError as e:
        resp = json.loads(e.read() or b"{}")
    if resp.get("error"):
        raise RpcFailure(resp["error"].get("code", -1), resp["error"].get("message", ""))
    return resp.get("result")


class RpcFailure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def getchaininfo(params):
    i = rpc("getblockchaininfo", [])
    return {"chain": i["chain"], "headercount": i["headers"], "blockcount": i["blocks"],
            "ibd": i.get("initialblockdownload", False)}


def estimatefees(params):
    feerates = []
    for blocks in (2, 6, 12, 100):
        r = rpc("estimatesmartfee", [blocks, "ECONOMICAL"])
        if "feerate" in r:
            feerates.append({"blocks": blocks, "feerate": int(r["feerate"] * 100_000_000)})
    m = rpc("getmempoolinfo", [])
    floor = int(max(m.get("mempoolminfee", 0), m.get("minrelaytxfee", 0)) * 100_000_000)
    return {"feerate_floor": max(floor, 1000), "feerates": feerates}


def getrawblockbyheight(params):
    h = params["height"] if isinstance(params, dict) else params[0]
    try:
        bh = rpc("getblockhash", [h])
    except RpcFailure:
        return {"blockhash": None, "block": None}
    return {"blockhash": bh, "block": rpc("getblock", [bh, 0])}


def getutxout(params):
    txid, vout = (params["txid"], params["vout"]) if isinstance(params, dict) else params[:2]
    o = rpc("gettxout", [txid, vout])
    if not o:
        return {"amount": None, "script": None}
    return {"amount": int(round(o["value"] * 100_000_000)), "script": o["scriptPubKey"]["hex"]}


def sendrawtransaction(params):
    tx = params["tx"] if isinstance(params, dict) else params[0]
    try:
        rpc("sendrawtransaction", [tx])
        return {"success": True}
    except RpcFailure as e:
        return {"success": False, "errmsg": "error code: %d\nerror message:\n%s" % (e.code, e.message)}


METHODS = {f.__name__: f for f in (getchaininfo, estimatefees, getrawblockbyheight, getutxout,
                                   sendrawtransaction)}


def main():
    global URL, AUTH, COOKIE
    dec, data = json.JSONDecoder(), ""
    for line in sys.stdin:
        data += line
        while data.strip():
            data = data.lstrip()
            try:
                obj, end = dec.raw_decode(data)
            except ValueError:
                break
            data = data[end:]
            m, i = obj.get("method"), obj.get("id")
            if m == "getmanifest":
                send({"jsonrpc": "2.0", "id": i, "result": {
                    "options": [
                        {"name": "proxy-url", "type": "string", "default": "", "description": "backend URL"},
                        {"name": "proxy-cookie", "type": "string", "default": "", "description": "cookie file"},
                    ],
                    "rpcmethods": [{"name": n, "usage": "", "description": "Bitcoin backend: " + n}
                                   for n in METHODS],
                    "dynamic": False}})
            elif m == "init":
                opts = obj["params"]["options"]
                u = urllib.parse.urlparse(opts.get("proxy-url", ""))
                URL = "%s://%s:%d/" % (u.scheme, u.hostname, u.port)
                if u.username:
                    AUTH = "Basic " + base64.b64encode(
                        ("%s:%s" % (urllib.parse.unquote(u.username),
                                    urllib.parse.unquote(u.password or ""))).encode()).decode()
                COOKIE = opts.get("proxy-cookie") or None
                send({"jsonrpc": "2.0", "id": i, "result": {}})
            elif m in METHODS:
                try:
                    send({"jsonrpc": "2.0", "id": i, "result": METHODS[m](obj.get("params", {}))})
                except Exception as e:  # noqa: BLE001 - reported to fulgurd as an error
                    send({"jsonrpc": "2.0", "id": i, "error": {"code": -1, "message": str(e)}})
            elif i is not None:
                send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "unknown"}})


if __name__ == "__main__":
    main()
