"""The `clnrest` built-in plugin, modelled on CLN's tests/test_clnrest.py: started only with
`clnrest-port`, CLN's refusals of bad options, certificates made in the network directory
(or `clnrest-certs`) and kept across restarts, every command as `POST /v1/<command>` with
CLN's statuses and error bodies, the rune checked first, the four body and reply formats,
CSP and CORS headers, paths added by a plugin, the Swagger page, and notifications over
Socket.IO (python-socketio, the client CLN's tests use) only for runes that allow
`listclnrest-notifications`."""

import json
import os
import ssl
import threading

import pytest
import requests
import socketio

import clnschema

from conftest import RpcError, plugin_path, wait_for
from lnnet import free_port

DEFAULT_CSP = ("default-src 'self'; font-src 'self'; img-src 'self' data:; frame-src 'self'; "
               "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline';")
CERT_FILES = ["ca.pem", "ca-key.pem", "client.pem", "client-key.pem", "server-key.pem",
              "server.pem"]


def rest_options(protocol="https", **extra):
    port = free_port()
    opts = {"clnrest-port": port, "clnrest-protocol": protocol}
    opts.update(extra)
    return opts, f"{protocol}://127.0.0.1:{port}"


class Rest:
    """A node with clnrest up, its base URL and the CA to trust."""

    def __init__(self, node, base, ca):
        self.node, self.base, self.ca = node, base, ca
        self.session = requests.Session()
        # Only our CA: REQUESTS_CA_BUNDLE, when set, would win over `verify`.
        self.session.trust_env = False
        self.session.verify = str(ca) if ca else True

    def post(self, method, rune=None, **kw):
        headers = kw.pop("headers", {})
        if rune is not None:
            headers["Rune"] = rune
        r = self.session.post(f"{self.base}/v1/{method}", headers=headers, **kw)
        # A result is what the node's own RPC gives: it must match CLN's schema too.
        if r.status_code == 201 and r.headers["Content-Type"] == "application/json" \
                and clnschema.schema_for(method):
            clnschema.validate(clnschema.schema_for(method), r.json())
        return r

    def request(self, verb, path, rune=None, **kw):
        headers = kw.pop("headers", {})
        if rune is not None:
            headers["Rune"] = rune
        return self.session.request(verb, f"{self.base}/{path}", headers=headers, **kw)


def start_rest(make_node, **extra):
    opts, base = rest_options(**extra)
    node = make_node(opts)
    node.wait_for_log(r"plugin-clnrest: REST server running at " + base.replace(".", r"\."))
    certs = extra.get("clnrest-certs", node.net_dir)
    return Rest(node, base, os.path.join(certs, "ca.pem"))


@pytest.fixture
def rest(node_factory):
    """clnrest on a node without a chain: enough for runes, datastore and help."""
    return start_rest(lambda o: node_factory.get_node(options=o))


def test_not_started_without_a_port(node_factory):
    node = node_factory.get_node()
    names = [os.path.basename(p["name"]) for p in node.rpc.plugin("list")["plugins"]]
    assert "clnrest" not in names
    node.wait_for_log(r"plugin-clnrest: Killing plugin: disabled itself at init: "
                      r"`clnrest-port` option is not configured")
    with pytest.raises(RpcError, match="Unknown command"):
        node.rpc.call("clnrest-register-path", ["x", "getinfo"])


@pytest.mark.parametrize("opts,reason", [
    ({"clnrest-port": 1000}, r"`clnrest-port` 1000, should be a valid available port "
                             r"between 1024 and 65535\."),
    ({"clnrest-protocol": "htttps"}, r"`clnrest-protocol` can either be http or https\."),
    ({"clnrest-host": "127.0.0.12.15"}, r"`clnrest-host` should be a valid IP\."),
    ({"clnrest-swagger-root": "doc"}, r"`clnrest-swagger-root` must start with `/`"),
])
def test_bad_options_disable_it(node_factory, opts, reason):
    o = {"clnrest-port": free_port()}
    o.update(opts)
    node = node_factory.get_node(options=o)
    node.wait_for_log(r"plugin-clnrest: Killing plugin: disabled itself at init: " + reason)
    assert "clnrest" not in [os.path.basename(p["name"])
                             for p in node.rpc.plugin("list")["plugins"]]


def test_certificates(node_factory, tmp_path):
    # Plain HTTP makes none.
    certs = tmp_path / "clnrest-certs"
    start_rest(lambda o: node_factory.get_node(options=o), protocol="http",
               **{"clnrest-certs": str(certs)})
    assert not certs.exists()

    # By default they are made in the network directory, and the server's name is its IP.
    r = start_rest(lambda o: node_factory.get_node(options=o))
    files = [r.node.net_dir / f for f in CERT_FILES]
    assert all(f.stat().st_size > 0 for f in files)
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files if "key" in f.name)
    ctx = ssl.create_default_context(cafile=str(r.node.net_dir / "ca.pem"))
    import socket
    host, port = r.base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as s, \
            ctx.wrap_socket(s, server_hostname=host) as tls:
        san = tls.getpeercert()["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in san, san
    assert r.session.get(r.base + "/v1/list-methods").status_code == 200

    # Kept across a restart; all made anew when one is missing.
    node = r.node
    before = [f.read_bytes() for f in files]
    node.stop()
    node.start()
    node.wait_for_log("REST server running at", start=node.start_mark)
    assert [f.read_bytes() for f in files] == before
    files[2].unlink()
    node.stop()
    node.start()
    node.wait_for_log("REST server running at", start=node.start_mark)
    after = [f.read_bytes() for f in files]
    assert all(a != b for a, b in zip(before, after))


def test_list_methods_and_swagger(rest):
    r = rest.session.get(rest.base + "/v1/list-methods")
    assert r.status_code == 200
    assert "Command: getinfo" in r.text and "Command: createrune" in r.text

    # `/` leads to the Swagger page, which reads the document at /swagger.json.
    r = rest.session.get(rest.base + "/")
    assert r.status_code == 200 and r.url.rstrip("/").endswith("/swagger-ui")
    assert "swagger" in r.text.lower()
    doc = rest.session.get(rest.base + "/swagger.json").json()
    assert doc["openapi"].startswith("3.")
    inv = doc["paths"]["/v1/invoice"]["post"]
    schema = inv["requestBody"]["content"]["application/json"]["schema"]
    assert {"amount_msat", "label", "description"} <= set(schema["required"])
    assert doc["components"]["securitySchemes"]["rune"]["name"] == "rune"
    # Commands of plugins are there too.
    assert "/v1/clnrest-register-path" in doc["paths"]


def test_statuses_and_errors(rest):
    node = rest.node
    rune = node.rpc.createrune()["rune"]

    r = rest.request("GET", "v1/unknown-get", rune)
    assert r.status_code == 405
    assert r.json() == {"code": -32601,
                        "message": "Path invalid, http_method must be POST for CLN methods"}
    r = rest.post("unknown-post", rune)
    assert r.status_code == 404
    assert r.json()["code"] == -32601
    assert r.json()["message"] == "Unknown command 'unknown-post'"
    r = rest.request("POST", "nowhere", rune)
    assert (r.status_code, r.json()["message"]) == (404, "Path not found")

    # No rune, a rune that forbids the method, one made elsewhere, one that allows it.
    r = rest.post("getinfo")
    assert r.status_code == 403
    assert r.json() == {"code": 1501, "message": "Not authorized: Missing rune"}
    no_getinfo = node.rpc.createrune(restrictions=[["method/getinfo"]])["rune"]
    r = rest.post("getinfo", no_getinfo)
    assert r.status_code == 401
    assert r.json() == {"code": 1502, "message": "Not permitted: method is equal to getinfo"}
    r = rest.post("getinfo", "jMHrjVJb5l9-mjEd7zwux7Ookra1fgZ8wa9D8QbVT-w9MA==")
    assert r.status_code == 401
    assert r.json()["code"] == 1501
    assert r.json()["message"] == "Not authorized: Not derived from master"
    getinfo = node.rpc.createrune(restrictions=[["method=getinfo"]])["rune"]
    r = rest.post("getinfo", getinfo)
    assert r.status_code == 201
    assert r.json()["id"] == node.rpc.getinfo()["id"]
    assert r.headers["Content-Type"] == "application/json"

    # A blacklisted rune is refused like any other.
    node.rpc.blacklistrune(start=node.rpc.showrunes(getinfo)["runes"][0]["unique_id"])
    r = rest.post("getinfo", getinfo)
    assert (r.status_code, r.json()["code"]) == (401, 1503)
    assert "Blacklisted" in r.json()["message"], r.json()

    # The rune sees the params: a rune for one datastore key only.
    key_rune = node.rpc.createrune(restrictions=[["method=listdatastore"],
                                                 ["pnamekey=mine"]])["rune"]
    assert rest.post("listdatastore", key_rune, json={"key": "mine"}).status_code == 201
    r = rest.post("listdatastore", key_rune, json={"key": "theirs"})
    assert r.status_code == 401 and r.json()["code"] == 1502

    # The command's own errors: 500 with its code; nulls count as not given.
    r = rest.post("createrune", rune, json={"restrictions": "nonsense"})
    assert r.status_code == 500 and r.json()["code"] == -32602
    r = rest.post("listdatastore", rune, json={"key": None})
    assert r.status_code == 201

    # Bad bodies and headers.
    r = rest.post("getinfo", rune, data="{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 500 and "JSON request" in r.json()["message"]
    r = rest.post("getinfo", rune, data="x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 406
    assert r.json()["message"] == "Unsupported content-type header: text/plain"
    r = rest.post("getinfo", rune, headers={"Accept": "text/csv"})
    assert r.status_code == 406
    assert r.json()["message"] == "Unsupported accept header: text/csv"


def test_body_and_reply_formats(rest):
    node = rest.node
    node.rpc.datastore(key=["project"], string="core lightning", mode="must-create")
    rune = node.rpc.createrune(restrictions=[])["rune"]
    bodies = [
        ({}, json.dumps({"key": ["project"]})),
        ({"Content-Type": "application/json"}, json.dumps({"key": ["project"]})),
        ({"Content-Type": "application/yaml"}, "key: ['project']"),
        ({"Content-Type": "application/xml"},
         "<listdatastore><key>project</key></listdatastore>"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, {"key": "project"}),
    ]
    for headers, body in bodies:
        r = rest.post("listdatastore", rune, headers=headers, data=body)
        assert r.status_code == 201, (headers, r.text)
        ds = r.json()["datastore"]
        assert [(d["key"], d["string"]) for d in ds] == [(["project"], "core lightning")]

    node_id = node.rpc.getinfo()["id"]
    for accept, text in (("application/json", f'"id":"{node_id}"'),
                         ("application/yaml", f"id: {node_id}"),
                         ("application/xml", f"<id>{node_id}</id>"),
                         ("application/x-www-form-urlencoded", f"id={node_id}"),
                         ("*/*", f'"id":"{node_id}"')):
        r = rest.post("getinfo", rune, headers={"Accept": accept})
        assert r.status_code == 201
        assert text in r.text.replace(" ", "").replace("id:", "id: "), (accept, r.text[:200])
        assert r.headers["Content-Type"] == ("application/json" if accept == "*/*" else accept)

    r = rest.post("listdatastore", rune, data="key: [project]",
                  headers={"Content-Type": "application/yaml", "Accept": "application/yaml"})
    assert "key:\n  - project" in r.text
    r = rest.post("listdatastore", rune, data={"key": "project"},
                  headers={"Accept": "application/x-www-form-urlencoded"})
    assert "datastore[0][key][0]=project" in requests.utils.unquote(r.text)


def test_http_headers(node_factory):
    r = start_rest(lambda o: node_factory.get_node(options=o))
    resp = r.session.get(r.base + "/v1/list-methods")
    assert resp.headers["Content-Security-Policy"] == DEFAULT_CSP
    assert resp.headers["Access-Control-Allow-Origin"] == "*"

    csp = "default-src 'self'; script-src 'self';"
    origins = ["https://localhost:5500", "http://192.168.1.30:3030"]
    r = start_rest(lambda o: node_factory.get_node(options=o),
                   **{"clnrest-csp": csp, "clnrest-cors-origins": origins})
    for origin in origins:
        resp = r.session.get(r.base + "/v1/list-methods", headers={"Origin": origin})
        assert resp.headers["Content-Security-Policy"] == csp
        assert resp.headers["Access-Control-Allow-Origin"] == origin
    resp = r.session.get(r.base + "/v1/list-methods", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    # A browser's preflight for a POST with a rune header.
    resp = r.session.options(r.base + "/v1/getinfo", headers={
        "Origin": origins[0], "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "rune,content-type"})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == origins[0]


def test_registered_paths(node_factory):
    r = start_rest(lambda o: node_factory.get_node(plugins=[plugin_path("rest_paths.py")],
                                                    options=o))
    node = r.node
    rune = node.rpc.createrune(restrictions=[])["rune"]
    wait_for(lambda: r.request("GET", "public/one").status_code == 201, what="paths registered")

    assert r.request("GET", "public/one").json() == {"answer": "one"}
    resp = r.request("GET", "shop/item", rune)
    assert resp.status_code == 405
    assert resp.json() == {"code": -32601,
                           "message": "Dynamic path: shop/item has no http_method:GET registered"}
    assert r.request("POST", "shop/item", rune).json() == {"answer": "one"}
    assert r.request("PATCH", "shop/item", rune).json() == {"answer": "two"}
    assert r.request("DELETE", "shop/item", rune).json() == {"answer": "one"}
    # Checked against `pay`, not the method the path runs.
    no_pay = node.rpc.createrune(restrictions=[["method/pay"]])["rune"]
    assert r.request("POST", "shop/item", no_pay).status_code == 401
    assert r.request("POST", "shop/item").status_code == 403
    resp = r.request("GET", "v2/ct1/go", rune)
    assert resp.json() == {"version": "2", "capture": "ct1"}

    # CLN's refusals.
    for args, err in (
            ({"path": "v{version}/{capture}/go", "rpc_method": "x", "http_method": "GET"},
             "already exists with http_method: GET"),
            (["/", "x"], "Path must not be root"),
            ({"path": "", "rpc_method": "x"}, "Path must not be empty"),
            ({"path": "/{*wild}", "rpc_method": "x"}, "Wildcards not supported"),
            ({"path": "/p", "rpc_method": "x", "rune_required": False},
             "rune_required must be true for anything but GET requests")):
        with pytest.raises(RpcError, match=err):
            node.rpc.call("clnrest-register-path", args)
    node.rpc.call("clnrest-register-path", {"path": "v{version}/{capture}/go",
                                            "rpc_method": "rest-capture"})
    assert r.request("POST", "v3/x/go", rune).json() == {"version": "3", "capture": "x"}


class Listener:
    """A Socket.IO client of clnrest, as CLN's test and RTL connect: the rune in a header."""

    def __init__(self, rest, rune=None, transports=None):
        session = requests.Session()
        session.trust_env = False
        session.verify = rest.session.verify
        if rune is not None:
            session.headers["rune"] = rune
        self.sio = socketio.Client(http_session=session)
        self.messages = []
        self.error = None
        self.lock = threading.Lock()

        @self.sio.event
        def message(data):
            with self.lock:
                self.messages.append(data)

        @self.sio.event
        def connect_error(data):
            self.error = str(data)

        try:
            # Polling first, then the upgrade to a WebSocket, as RTL's client does (unless
            # `transports` says otherwise).
            self.sio.connect(rest.base, wait_timeout=30, transports=transports)
        except socketio.exceptions.ConnectionError as e:
            self.error = self.error or str(e)

    def topic(self, name):
        with self.lock:
            return [m[name] for m in self.messages if name in m]

    def close(self):
        self.sio.disconnect()


def test_notifications_need_a_rune_for_them(ln):
    opts, base = rest_options()
    node = ln.node(options=opts)
    node.wait_for_log("REST server running at")
    rest = Rest(node, base, node.net_dir / "ca.pem")

    refused = [
        (None, "Missing rune"),
        ("jMHrjVJb5l9-mjEd7zwux7Ookra1fgZ8wa9D8QbVT-w9MA==", "Not derived from master"),
        (node.rpc.createrune(restrictions=[["method/listclnrest-notifications"]])["rune"],
         "Not permitted: method is equal to listclnrest-notifications"),
    ]
    for rune, err in refused:
        # The refusal is Socket.IO's answer to the connect, over polling. No WebSocket
        # here: python-socketio closing a refused client's TLS WebSocket while its reader
        # thread is still reading aborted the whole pytest process once (OpenSSL, "Fatal
        # Python error: Aborted" in ssl's close, CI of 1699cb5).
        listener = Listener(rest, rune, transports=["polling"])
        assert listener.error is not None and err in listener.error, (rune, listener.error)

    allowed = [node.rpc.createrune()["rune"],
               node.rpc.createrune(restrictions="readonly")["rune"],
               node.rpc.createrune(restrictions=[["method=listclnrest-notifications"]])["rune"]]
    listeners = [Listener(rest, rune) for rune in allowed]
    assert [lst.error for lst in listeners] == [None] * 3
    node.rpc.invoice(100000, "label", "description")
    for lst in listeners:
        created = wait_for(lambda: lst.topic("invoice_creation"), what="invoice_creation")
        assert created[0]["label"] == "label"
        assert created[0]["msat"] == 100000
        lst.close()


def test_payment_notifications_carry_numbers(ln):
    opts, base = rest_options(protocol="http")
    l1, l2 = ln.node(), ln.node(options=opts)
    l2.wait_for_log("REST server running at")
    ln.fund(l1)
    ln.open(l1, l2)
    rest = Rest(l2, base, None)
    rune = l2.rpc.createrune(restrictions=[["method=listclnrest-notifications"]])["rune"]
    listener = Listener(rest, rune)
    assert listener.error is None
    inv = l2.rpc.invoice(5000000, "paid", "paid")["bolt11"]
    l1.rpc.pay(inv)
    paid = wait_for(lambda: listener.topic("invoice_payment"), what="invoice_payment")
    assert isinstance(paid[0]["msat"], int) and paid[0]["msat"] == 5000000
    assert paid[0]["label"] == "paid"
    listener.close()


def test_invoices_over_rest(ln):
    opts, base = rest_options()
    node = ln.node(options=opts)
    node.wait_for_log("REST server running at")
    rest = Rest(node, base, node.net_dir / "ca.pem")
    rune = node.rpc.createrune(restrictions=[["method=invoice"]])["rune"]

    r = rest.post("invoice", rune)
    assert r.status_code == 500 and r.json()["code"] == -32602
    r = rest.post("invoice", rune, data={"amount_msat": "<WRONG>", "label": "l",
                                         "description": "d"})
    assert r.status_code == 500 and r.json()["code"] == -32602
    r = rest.post("invoice", rune, data={"amount_msat": "50000000", "label": "l",
                                         "description": "d"})
    assert r.status_code == 201 and r.json()["bolt11"].startswith("lnbcrt500u")

    # A large reply, with msat fields as numbers.
    for i in range(300):
        node.rpc.invoice(amount_msat=100, label=str(i), description="inv")
    everything = node.rpc.createrune()["rune"]
    invoices = rest.post("listinvoices", everything).json()["invoices"]
    assert len(invoices) == 301
    assert all(isinstance(i["amount_msat"], int) for i in invoices)
