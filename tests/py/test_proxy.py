"""`--proxy` and `--always-use-proxy` (CLN's options, `connectd/tor.c`): outbound
connections through a SOCKS5 proxy. A small SOCKS5 server written here stands in for Tor: it
records each CONNECT request (address type, host, port) and relays bytes to the real node,
mapping names no resolver knows (a `.onion`, a `.invalid` name) to a node's port."""

import socket
import struct
import threading

import pytest

from conftest import RpcError, wait_for

# 56 base32 characters: the shape of a Tor v3 address (nothing resolves it but our proxy).
ONION = "fulgurtestnodeb" + "a" * 41 + ".onion"
# Any valid node id (the generator point), for connections that fail before any handshake.
SOME_ID = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def _read(conn, n):
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed mid-request")
        out += chunk
    return out


def _pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            s.shutdown(how)
        except OSError:
            pass


class Socks5:
    """A SOCKS5 server (no authentication, CONNECT only). `names` maps a requested host to
    the (ip, port) really dialled (the requested port is ignored for those); other hosts
    are dialled as requested. `reply` other than 0 refuses every request with that code."""

    def __init__(self, names=None, reply=0):
        self.names = dict(names or {})
        self.reply = reply
        self.requests = []  # (atyp, host, port), in order
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def seen(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.sock.close()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            ver, n = _read(conn, 2)
            methods = _read(conn, n)
            assert ver == 5 and 0 in methods, (ver, methods)
            conn.sendall(b"\x05\x00")
            ver, cmd, _, atyp = _read(conn, 4)
            assert ver == 5 and cmd == 1, (ver, cmd)
            if atyp == 1:
                host = socket.inet_ntop(socket.AF_INET, _read(conn, 4))
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, _read(conn, 16))
            else:
                assert atyp == 3, atyp
                host = _read(conn, _read(conn, 1)[0]).decode()
            (port,) = struct.unpack(">H", _read(conn, 2))
            with self.lock:
                self.requests.append((atyp, host, port))
            if self.reply:
                conn.sendall(bytes([5, self.reply, 0, 1, 0, 0, 0, 0, 0, 0]))
                conn.close()
                return
            target = socket.create_connection(self.names.get(host, (host, port)), timeout=10)
            target.settimeout(None)
        except (OSError, AssertionError, ConnectionError):
            conn.close()
            return
        conn.sendall(bytes([5, 0, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", self.port))
        threading.Thread(target=_pipe, args=(conn, target), daemon=True).start()
        threading.Thread(target=_pipe, args=(target, conn), daemon=True).start()


@pytest.fixture
def socks():
    servers = []

    def make(**kw):
        s = Socks5(**kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def test_always_use_proxy_sends_names_unresolved_and_ips_as_addresses(ln, socks):
    b, c = ln.node(), ln.node()
    proxy = socks(names={"node-b.invalid": ("127.0.0.1", b.port)})
    a = ln.node(options={"proxy": proxy.address, "always-use-proxy": "true"})

    configs = a.rpc.listconfigs()["configs"]
    assert configs["proxy"] == {"value_str": proxy.address, "source": "cmdline"}
    assert configs["always-use-proxy"] == {"value_bool": True, "source": "cmdline"}
    assert "no effect" not in a.log()

    # A name no resolver knows: only the proxy could have found it (ATYP 3).
    r = a.rpc.connect(b.id, "node-b.invalid", b.port)
    assert r["id"] == b.id and r["direction"] == "out"
    # (CLN's schema has no `dns` address here: what the connection's socket sees.)
    assert r["address"]["type"] == "ipv4"
    assert proxy.seen() == [(3, "node-b.invalid", b.port)]
    # `localhost` is a name too: the proxy resolves it, we do not.
    a.rpc.disconnect(b.id)
    wait_for(lambda: not a.rpc.listpeers(b.id)["peers"], what="b gone")
    a.rpc.connect(b.id, "localhost", b.port)
    assert proxy.seen()[-1] == (3, "localhost", b.port)
    # An IP literal goes through the proxy as an address (ATYP 1).
    a.rpc.connect(f"{c.id}@127.0.0.1:{c.port}")
    assert proxy.seen()[-1] == (1, "127.0.0.1", c.port)
    assert {p["id"] for p in a.rpc.listpeers()["peers"] if p["connected"]} == {b.id, c.id}


def test_onion_goes_through_the_proxy_and_carries_a_channel(ln, socks):
    b, c = ln.node(), ln.node()
    proxy = socks(names={ONION: ("127.0.0.1", b.port)})
    a = ln.node(options={"proxy": proxy.address})
    assert a.rpc.listconfigs()["configs"]["always-use-proxy"] == {
        "value_bool": False, "source": "default"}

    r = a.rpc.connect(b.id, ONION)
    assert r["address"] == {"type": "torv3", "address": ONION, "port": 9735}
    assert proxy.seen() == [(3, ONION, 9735)]
    # Without --always-use-proxy, other peers are dialled directly.
    ln.connect(a, c)
    assert proxy.seen() == [(3, ONION, 9735)]

    ln.fund(a)
    r = a.rpc.fundchannel(b.id, 500_000)
    ln.mine(6)
    wait_for(lambda: any(ch["state"] == "CHANNELD_NORMAL"
                         for ch in b.rpc.listpeerchannels(a.id)["channels"]),
             what="channel normal over the proxy")
    assert len(proxy.seen()) == 1

    # After a restart, the channel peer is reconnected through the proxy, by its onion.
    ln.restart(a)
    wait_for(lambda: len(proxy.seen()) == 2, what="reconnection through the proxy")
    assert proxy.seen()[1] == (3, ONION, 9735)
    wait_for(lambda: a.rpc.listpeers(b.id)["peers"]
             and a.rpc.listpeers(b.id)["peers"][0]["connected"], what="b reconnected")


def test_a_proxy_that_refuses_gives_the_connect_error(ln, socks):
    proxy = socks(reply=5)
    a = ln.node(options={"proxy": proxy.address})
    with pytest.raises(RpcError) as e:
        a.rpc.connect(SOME_ID, ONION, 9735)
    assert e.value.error["code"] == 401
    msg = e.value.error["message"]
    assert msg.startswith("Unable to connect: All addresses failed: "), msg
    assert f"{ONION}:9735" in msg and "connection refused" in msg and "proxy" in msg, msg
    assert proxy.seen() == [(3, ONION, 9735)]


def test_a_proxy_that_is_not_there_gives_the_connect_error(ln):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    a = ln.node(options={"proxy": f"127.0.0.1:{port}", "always-use-proxy": "true"})
    with pytest.raises(RpcError) as e:
        a.rpc.connect(SOME_ID, "127.0.0.1", 9)
    assert e.value.error["code"] == 401
    assert f"proxy 127.0.0.1:{port}" in e.value.error["message"], e.value.error


def test_onion_without_a_proxy_fails_clearly(ln):
    a = ln.node()
    with pytest.raises(RpcError) as e:
        a.rpc.connect(SOME_ID, ONION)
    assert e.value.error["code"] == 401
    assert e.value.error["message"] == (
        f"Unable to connect: All addresses failed: {ONION}:9735: need a proxy.")


def test_always_use_proxy_needs_a_proxy(node_factory):
    n = node_factory.get_node(options={"always-use-proxy": "true"}, start=False)
    rc, err = n.start_expect_exit()
    assert rc == 1 and "--always-use-proxy needs --proxy" in err, err
    n = node_factory.get_node(options={"always-use-proxy": "true", "proxy": "tor.invalid:9050"},
                              start=False)
    rc, err = n.start_expect_exit()
    assert rc == 1 and "lookups suppressed" in err, err


def test_disable_dns_refuses_names_but_not_localhost_nor_the_proxy(ln, socks):
    """CLN's `--disable-dns` (connectd.c): a host name given to `connect` is not resolved
    ("dns disabled"), `localhost` still is, and names handed to the proxy are unaffected."""
    b = ln.node()
    a = ln.node(options={"disable-dns": None})
    cfg = a.rpc.listconfigs("disable-dns")["configs"]["disable-dns"]
    assert cfg["set"] is True
    with pytest.raises(RpcError) as e:
        a.rpc.connect(b.id, "fulgur-peer.invalid", b.port)
    assert e.value.error["code"] == 401
    assert e.value.error["message"] == (
        f"Unable to connect: All addresses failed: fulgur-peer.invalid:{b.port}: dns disabled. ")
    assert a.rpc.connect(b.id, "localhost", b.port)["id"] == b.id
    # Through an always-used proxy the name is the proxy's to resolve.
    proxy = socks(names={"fulgur-peer.invalid": ("127.0.0.1", b.port)})
    c = ln.node(options={"disable-dns": None, "proxy": f"127.0.0.1:{proxy.port}",
                         "always-use-proxy": "true"})
    assert c.rpc.connect(b.id, "fulgur-peer.invalid", b.port)["id"] == b.id
