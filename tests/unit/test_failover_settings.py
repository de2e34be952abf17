"""Failover's settings and pieces (docs/architecture.md, "Failover"): ``[web] public_url``,
``tls_cert`` and ``tls_key``, the worker the portal serves, gunicorn's TLS options and the
balancer's health check over TLS."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client as HTTPClient

from balancer.pool import FrontendPool, check_health
from balancer.server import _BalancerHTTPServer
from balancer.settings import BalancerSettings
from deploy.processes import process_specs
from deploy.tls import ensure_certificate
from portal.admin import CHARTS_CSP
from portal.app import CSP
from portal.config import PortalConfig, web_settings
from portal.drive import DRIVE_CSP
from portal.failover import WORKER_CSP, WORKER_PATH, worker_script
from portal.mail import MAIL_CSP
from raftkv.cluster import ClusterConfig, GroupConfig, ReplicaConfig
from raftkv.errors import ConfigError
from shards.site import Site

from .._memstore import MemClient
from .._portal import signed_up, unit_portal

STATIC = Path(__file__).resolve().parents[2] / "portal" / "static"


def _cluster(tmp_path: Path | None = None, **tables: object) -> ClusterConfig:
    replica = ReplicaConfig(name="g1a", group=1, raft="127.0.0.1:1", client="127.0.0.1:2")
    return ClusterConfig(name="unit", groups=(GroupConfig(id=1, replicas=(replica,)),),
                         secret=b"s" * 32, tables=dict(tables),
                         path=tmp_path / "cluster.toml" if tmp_path else None)


def test_the_public_url_is_the_key_else_the_balancer_s_own_address():
    assert Site.of(_cluster(web={"public_url": "HTTPS://Example.ORG/"})).public_url == \
        "https://example.org"
    assert Site.of(_cluster(web={"public_url": "http://raftcloud.test:8000"})).public_url == \
        "http://raftcloud.test:8000"
    # Without the key: the balancer speaks plain HTTP where it listens...
    assert Site.of(_cluster(balancer={"listen": "10.0.0.9:8000"})).public_url == \
        "http://10.0.0.9:8000"
    assert Site.of(_cluster(balancer={})).public_url == "http://127.0.0.1:8000"
    # ...unless that is no address a browser can use, or there is no balancer.
    assert Site.of(_cluster(balancer={"listen": "0.0.0.0:80"})).public_url is None
    assert Site.of(_cluster()).public_url is None


@pytest.mark.parametrize("value", [
    "example.org", "ftp://example.org", "https://example.org/mail", "https://example.org?x=1",
    "https://user@example.org", "https://example.org:port", "https://", 3,
])
def test_a_public_url_that_is_no_site_address_is_refused(value):
    with pytest.raises(ConfigError):
        Site.of(_cluster(web={"public_url": value}))


def test_tls_files_are_relative_to_the_cluster_file_and_need_https(tmp_path):
    site = Site.of(_cluster(tmp_path, web={"scheme": "https", "tls_cert": "tls/c.pem",
                                           "tls_key": "/etc/k.pem"}))
    assert (site.tls_cert, site.tls_key) == (tmp_path / "tls/c.pem", Path("/etc/k.pem"))
    assert site.serves_tls and not Site.of(_cluster(tmp_path)).serves_tls
    for web in ({"scheme": "https", "tls_cert": "c.pem"},     # no key
                {"scheme": "https", "tls_key": "k.pem"},      # no certificate
                {"tls_cert": "c.pem", "tls_key": "k.pem"},    # served HTTPS, said http
                {"scheme": "https", "tls_cert": "", "tls_key": "k.pem"}):
        with pytest.raises(ConfigError):
            Site.of(_cluster(tmp_path, web=web))


def test_the_portal_takes_the_new_web_keys():
    web = {"scheme": "https", "public_url": "https://example.org", "tls_cert": "c.pem",
           "tls_key": "k.pem", "cookie_domain": "example.org"}
    config = PortalConfig(cluster=_cluster(web=web), **web_settings(web))
    config.validate()
    assert config.site.public_url == "https://example.org"


def test_gunicorn_serves_tls_with_the_files_and_is_asked_for_health_over_tls(tmp_path):
    frontend = {"name": "web1", "listen": "web1.example.org:443"}
    plain = process_specs(_cluster(tmp_path, frontend=[frontend]), tmp_path / "c.toml",
                          tmp_path, None)[-1]
    assert "--certfile" not in plain.argv and not plain.tls
    cluster = _cluster(tmp_path, frontend=[frontend], balancer={"listen": "10.0.0.9:80"},
                       web={"scheme": "https", "tls_cert": "c.pem", "tls_key": "k.pem"})
    spec = next(s for s in process_specs(cluster, tmp_path / "c.toml", tmp_path, None)
                if s.kind == "frontend")
    argv = spec.argv
    assert argv[argv.index("--certfile") + 1] == str(tmp_path / "c.pem")
    assert argv[argv.index("--keyfile") + 1] == str(tmp_path / "k.pem")
    assert argv.index("--keyfile") < argv.index("portal:create_app()")
    assert spec.tls
    assert BalancerSettings.from_cluster(cluster).tls == (tmp_path / "c.pem", tmp_path / "k.pem")


@pytest.fixture
def portal() -> Iterator[object]:
    frontends = [{"name": "web1", "listen": "Web1.example.org:8443"},
                 {"name": "web2", "listen": "0.0.0.0:8443"}]
    config = PortalConfig(cluster=_cluster(web={"public_url": "https://example.org:8443",
                                                "scheme": "https"}, frontend=frontends),
                          frontend="fe-unit", scheme="https", background=False)
    app = unit_portal(MemClient(), config)
    yield app
    app.close()


def test_the_worker_is_served_for_the_whole_site_with_the_entry_written_in(portal):
    answer = HTTPClient(portal).get(WORKER_PATH)
    assert answer.status_code == 200 and answer.mimetype == "text/javascript"
    assert answer.headers["Content-Security-Policy"] == WORKER_CSP
    assert answer.headers["Cache-Control"] == "no-cache"
    assert "Set-Cookie" not in answer.headers  # no session for a script
    assert 'var ENTRY = "https://example.org:8443";' in answer.text
    # The static copy does nothing: its ENTRY is empty.
    assert 'var ENTRY = "";' in (STATIC / "failover-sw.js").read_text()
    assert worker_script(None).decode() == (STATIC / "failover-sw.js").read_text()
    # Pages may register it; the page script does, for the whole site.
    assert "worker-src 'self'" in CSP
    assert f'register("{WORKER_PATH}", {{ scope: "/" }})' in (STATIC / "pages.js").read_text()


def test_the_entry_is_written_as_a_string_whatever_it_holds():
    tricky = 'https://x.test/";alert(1);//'  # refused by Site; even so, written as data
    line = next(line for line in worker_script(tricky).decode().splitlines()
                if line.startswith("var ENTRY"))
    assert json.loads(line.removeprefix("var ENTRY = ").removesuffix(";")) == tricky


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"status": "ok", "load": 3}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_balancer_checks_a_tls_frontend_over_tls(tmp_path):
    cert, key = ensure_certificate(tmp_path, "web1.example.org")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        addr = f"127.0.0.1:{server.server_address[1]}"
        assert check_health(addr, 2.0, tls=True) == 3.0
        assert check_health(addr, 2.0) is None  # plain HTTP to a TLS port: not live
    finally:
        server.shutdown()
        server.server_close()


def test_the_balancer_serves_tls_and_a_stalled_handshake_holds_no_one_else(tmp_path):
    cert, key = ensure_certificate(tmp_path, "example.org")
    pool = FrontendPool(lambda: ["web1.example.org:8443"], check=lambda addr, timeout: 0.0)
    pool.refresh()
    settings = BalancerSettings(listen="127.0.0.1:0", scheme="https", tls=(cert, key))
    server = _BalancerHTTPServer(("127.0.0.1", 0), pool, settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # says nothing
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                               context=ssl._create_unverified_context())
            conn.request("POST", "/drive/mkdir?x=1", body=b"csrf=t&name=a")
            answer = conn.getresponse()
            assert answer.status == 307
            assert answer.getheader("Location") == "https://web1.example.org:8443/drive/mkdir?x=1"
            conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((OSError, http.client.HTTPException)):
            plain.request("GET", "/")
            plain.getresponse()
        plain.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_s_forms_may_go_on_through_the_balancer_to_a_frontend(portal):
    targets = "form-action 'self' https://example.org:8443 https://web1.example.org:8443"
    policy = HTTPClient(portal).get("/login").headers["Content-Security-Policy"]
    assert policy == CSP.replace("form-action 'self'", targets)
    # The drive page sets its own policy, its forms the same targets.
    http, _ = signed_up(portal)
    assert targets in http.get("/drive").headers["Content-Security-Policy"]
    # Without a balancer or a frontend a browser can be sent to: 'self' alone, as before.
    bare = unit_portal(MemClient())
    try:
        assert HTTPClient(bare).get("/login").headers["Content-Security-Policy"] == CSP
    finally:
        bare.close()


def test_every_page_policy_lets_the_page_script_register_the_worker():
    # A policy without worker-src falls back to script-src (hashes only): the registration
    # would be refused, with a CSP violation in the console of every such page.
    for policy in (CSP, MAIL_CSP, DRIVE_CSP, CHARTS_CSP):
        assert "worker-src 'self'" in policy, policy
        assert policy.count("form-action 'self'") == 1, policy  # portal.failover widens it
