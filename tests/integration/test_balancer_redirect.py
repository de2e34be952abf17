"""The balancer with the real registry and fake frontends (tiny HTTP servers on loopback)."""

from __future__ import annotations

import dataclasses
import http.client
import json
import secrets
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from balancer.pool import registry_frontends
from balancer.server import Balancer
from shards.model.registry import list_nodes, register, unregister

from .._procs import Proc, free_port, port_open, wait_for

pytestmark = pytest.mark.cluster


class FakeFrontend:
    """A peer that answers /healthz with a load we set; everything else is 404."""

    def __init__(self, load: float = 0.0) -> None:
        self.load = load
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"status": "ok", "load": fake.load}).encode()
                self.send_response(200 if self.path == "/healthz" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.name = f"fake-{secrets.token_hex(3)}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def kill(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def frontends(client):
    """Fake frontends, registered in the real registry; removed from it afterwards."""
    started: list[FakeFrontend] = []

    def start(load: float) -> FakeFrontend:
        fake = FakeFrontend(load)
        register(client, kind="frontend", name=fake.name, addr=fake.addr)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.kill()
        unregister(client, kind="frontend", name=fake.name)


@pytest.fixture
def balancer(kv_cluster, client, frontends):
    """A balancer that sees only this test's frontends (the registry is shared by the session)."""
    mine: set[str] = set()
    everyone = registry_frontends(client)
    cluster = dataclasses.replace(kv_cluster.cluster, tables={**kv_cluster.cluster.tables,
        "balancer": {"name": f"balancer-{secrets.token_hex(3)}",
                     "listen": f"127.0.0.1:{free_port()}"}})
    server = Balancer(cluster, client, discover=lambda: [a for a in everyone() if a in mine])
    server.start()
    server.mine = mine
    try:
        yield server
    finally:
        server.stop()


def _get(addr: str, target: str, method: str = "GET") -> http.client.HTTPResponse:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, target)
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def _location_host(response: http.client.HTTPResponse) -> str:
    return response.getheader("Location").split("/")[2]


def test_redirects_to_the_least_loaded_frontend_keeping_path_and_query(balancer, frontends):
    busy, idle = frontends(50), frontends(0)
    balancer.mine |= {busy.addr, idle.addr}
    wait_for(lambda: len([f for f in balancer.pool.snapshot() if f.live]) == 2, 10,
             "both frontends to be checked")
    response = _get(balancer.address, "/mail/inbox?page=2&q=a%20b")
    assert response.status == 307
    assert response.getheader("Location") == f"http://{idle.addr}/mail/inbox?page=2&q=a%20b"
    assert response.getheader("Cache-Control") == "no-store"
    assert _get(balancer.address, "/upload", method="POST").status == 307


def test_never_redirects_to_a_dead_frontend(balancer, frontends):
    doomed, survivor = frontends(0), frontends(0)
    balancer.mine |= {doomed.addr, survivor.addr}
    wait_for(lambda: len([f for f in balancer.pool.snapshot() if f.live]) == 2, 10,
             "both frontends to be checked")
    doomed.kill()  # still alive in the registry for a while: the health check must notice
    wait_for(lambda: [f.addr for f in balancer.pool.snapshot() if f.live] == [survivor.addr],
             10, "the dead frontend to be noticed")
    hosts = {_location_host(_get(balancer.address, f"/x{i}")) for i in range(20)}
    assert hosts == {survivor.addr}


def test_no_live_frontend_is_a_503(balancer, frontends):
    lone = frontends(0)
    balancer.mine.add(lone.addr)
    wait_for(lambda: _get(balancer.address, "/").status == 307, 10, "a first redirect")
    lone.kill()
    response = wait_for(lambda: (r := _get(balancer.address, "/admin")).status == 503 and r, 10,
                        "the balancer to give up on its only frontend")
    assert response.getheader("Retry-After") == "2"
    assert response.getheader("Cache-Control") == "no-store"
    assert b"No web frontend is available" in response.body
    assert _get(balancer.address, "/", method="HEAD").status == 503


def test_balancer_registers_itself(client, balancer):
    def registered():
        return [n for n in list_nodes(client, "balancer")
                if n.name == balancer.settings.name and n.alive]
    node = wait_for(registered, 10, "the balancer heartbeat")[0]
    assert node.addr == balancer.address


def test_entry_point_redirects_and_stops_on_sigterm(kv_cluster, client, frontends, tmp_path):
    """raftcloud-balancer as a real process, discovering frontends through the registry."""
    fake = frontends(0)
    name, listen = f"balancer-{secrets.token_hex(3)}", f"127.0.0.1:{free_port()}"
    path = kv_cluster.path.with_name(f"{name}.toml")  # beside it: the secret_file is relative
    path.write_text(kv_cluster.path.read_text()
                    + f'\n[balancer]\nname = "{name}"\nlisten = "{listen}"\n')
    proc = Proc(name, [sys.executable, "-m", "balancer.server", "--config", str(path)],
                tmp_path).start()
    try:
        wait_for(lambda: port_open(listen), 20, "raftcloud-balancer to listen")
        response = wait_for(lambda: (r := _get(listen, "/?a=1")).status == 307 and r, 10,
                            "a redirect")
        # Other tests' frontends may be registered too; any live one is a correct answer.
        live = {n.addr for n in list_nodes(client, "frontend") if n.alive}
        assert fake.addr in live and _location_host(response) in live
        assert response.getheader("Location").endswith("/?a=1")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0, proc.log()
    finally:
        proc.stop()
    assert f"balancer {name} stopped" in proc.log()
