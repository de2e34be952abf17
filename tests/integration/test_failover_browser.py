"""Failover a user does not notice: the frontend a browser is on dies, the next click and form
land on the other one, still signed in (docs/architecture.md, "Failover").

Four hosts in network namespaces (docs/testing.md): the store, two frontends and the balancer
serving HTTPS themselves with a certificate of the test's own CA, one launcher each.
Everything is reached by name under one cookie domain, ``raftcloud.test``: each host
resolves the names through its own /etc/hosts, Chromium through ``--host-resolver-rules``,
and Chromium trusts the test CA through ``--ignore-certificate-errors-spki-list`` with that
CA's key alone (the flag ignores errors only for chains holding one of the listed keys; a
certificate from anyone else still fails).

A user signs up through the balancer and lands on one frontend; a second tab on it holds the
drive's new-folder form.  The test kills every process of that frontend's host.  A click on
a link and the form sent from the second tab both land on the other frontend, signed in, the
folder made.  A second browser session on the same frontend with service workers blocked
shows the test can fail: the same click there ends on the browser's error page.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .._procs import SECRET, wait_for
from ..cluster import Hosts
from ..netns import NetnsLab
from .test_portal_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, artifacts

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.slow]

DOMAIN = "raftcloud.test"
HOSTS = ["store", "web1", "web2", "edge"]
NAMES = {f"web1.{DOMAIN}": "web1", f"web2.{DOMAIN}": "web2", DOMAIN: "edge"}
HTTPS_PORT, BALANCER_PORT = 8443, 8000
ENTRY = f"https://{DOMAIN}:{BALANCER_PORT}"  # [web] public_url: the balancer serves TLS too
SIGNED_IN = "header .me .who"  # the address the signed-in header shows


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_test_ca(directory: Path, names: list[str]) -> str:
    """A CA of this test and a certificate it signs for ``names``: ``cert.pem`` (the chain,
    CA included, so the browser sees the CA's key) and ``key.pem`` in ``directory``.
    Returns the base64 SHA-256 of the CA's public key, as Chromium's SPKI list wants it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raftcloud failover test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key.pem").write_bytes(_pem(key))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                                         + ca.public_bytes(serialization.Encoding.PEM))
    spki = ca_key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _cluster_file(ip: dict[str, str]) -> str:
    store = ip["store"]
    lines = ["[cluster]", 'name = "failover"', 'secret_file = "secret"',
             f'domains = ["{DOMAIN}"]', "shards = 8", "", "[control]"]
    lines += [f'{h} = "{ip[h]}:7000"' for h in HOSTS]
    lines += ["", "[[group]]", "id = 1", "replica = [",
              f'  {{name = "g1a", raft = "{store}:7111", client = "{store}:7211", '
              f'host = "store"}},', "]"]
    for web in ("web1", "web2"):
        lines += ["", "[[frontend]]", f'name = "{web}"', f'listen = "{web}.{DOMAIN}:{HTTPS_PORT}"',
                  "workers = 1", "threads = 4", f'host = "{web}"']
    lines += ["", "[balancer]", 'name = "balancer"', f'listen = "{ip["edge"]}:{BALANCER_PORT}"',
              'host = "edge"',
              "", "[web]", 'scheme = "https"', f'cookie_domain = "{DOMAIN}"',
              f'public_url = "{ENTRY}"', 'tls_cert = "tls/cert.pem"', 'tls_key = "tls/key.pem"',
              ""]
    return "\n".join(lines)


class Lab(Hosts):
    """The four hosts, one launcher each."""

    def __init__(self, root: Path, lab: NetnsLab) -> None:
        self.lab = lab
        self.ns = dict(zip(HOSTS, lab.hosts, strict=True))
        self.ip = {h: lab.address(self.ns[h]) for h in HOSTS}
        lab.name_hosts({name: self.ns[host] for name, host in NAMES.items()})
        root.mkdir(parents=True, exist_ok=True)
        (root / "secret").write_bytes(SECRET)
        self.ca_spki = make_test_ca(root / "tls", list(NAMES))
        config = root / "cluster.toml"
        config.write_text(_cluster_file(self.ip))
        super().__init__(root, config, HOSTS, lambda host: lab.exec_prefix(self.ns[host]))

    def kill_host(self, host: str) -> None:
        """The machine dies: every process on it at once (its address stays: connections
        to it are refused, as from a host whose processes are gone)."""
        pids = subprocess.run(["ip", "netns", "pids", self.ns[host]], capture_output=True,
                              text=True, timeout=10, check=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def resolver_rules(self) -> str:
        return ", ".join(f"MAP {name} {self.ip[host]}" for name, host in NAMES.items())

    def diagnosis(self) -> str:
        """The routes and addresses the browser's packets met, for a failure's report."""
        out = [subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                              timeout=10).stdout]
        out += [subprocess.run(["ip", "-n", self.ns[h], "-4", "addr"], capture_output=True,
                               text=True, timeout=10).stdout for h in HOSTS]
        return "\n".join(out)



@pytest.fixture
def lab(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    if not NetnsLab.available():
        pytest.skip("network namespaces are not available here (root and iproute2 needed)")
    netns = NetnsLab(len(HOSTS))
    netns.up()
    hosts = None
    try:
        hosts = Lab(tmp_path / "lab", netns)
        hosts.start()
        yield hosts
    except BaseException:
        if hosts is not None:
            print(hosts.logs())
        raise
    finally:
        if hosts is not None:
            hosts.stop()
        netns.down()


def _served_by(page) -> str:
    found = re.search(r"served by (\w+)", page.inner_text("footer"))
    assert found, page.content()
    return found.group(1)


def _sign_in(page, origin: str, user: str) -> None:
    page.goto(f"{origin}/login")
    form = page.locator("main form")
    form.locator('[name="username"]').fill(user)
    form.locator('[name="password"]').fill(PASSWORD)
    form.locator('button[type="submit"]').click()
    page.wait_for_load_state()


def test_a_click_and_a_form_whose_frontend_died_land_signed_in_on_the_other(lab):
    user = "ada"
    address = f"{user}@{DOMAIN}"
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules={lab.resolver_rules()}",
            f"--ignore-certificate-errors-spki-list={lab.ca_spki}"]
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            _walk(lab, chromium, user, address)
        except BaseException:
            print(args, lab.diagnosis(), lab.logs(), sep="\n")
            raise
        finally:
            chromium.close()


def _walk(lab: Lab, chromium, user: str, address: str) -> None:
    context = chromium.new_context()
    page = context.new_page()
    # Through the balancer, as a user would come: it sends us to a frontend.
    wait_for(lambda: page.goto(f"{ENTRY}/signup").ok, 30, "the balancer's redirect",
             interval=0.5)
    first = _served_by(page)
    origin = f"https://{first}.{DOMAIN}:{HTTPS_PORT}"
    assert page.url == f"{origin}/signup"
    form = page.locator("main form")
    for field, value in (("username", user), ("password", PASSWORD),
                         ("password2", PASSWORD)):
        form.locator(f'[name="{field}"]').fill(value)
    form.locator('button[type="submit"]').click()
    page.wait_for_load_state()
    assert page.inner_text(SIGNED_IN) == address
    page.goto(f"{origin}/drive")
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=10_000)
    cookie = next(c for c in context.cookies() if c["name"] == "sid")
    assert cookie["domain"].lstrip(".") == DOMAIN and cookie["secure"], cookie
    form_tab = context.new_page()
    form_tab.goto(f"{origin}/drive")
    # The same user in a browser session whose service workers are blocked.
    bare = chromium.new_context(service_workers="block")
    bare_page = bare.new_page()
    _sign_in(bare_page, origin, user)
    assert bare_page.inner_text(SIGNED_IN) == address

    lab.kill_host(first)
    other = "web2" if first == "web1" else "web1"
    other_origin = f"https://{other}.{DOMAIN}:{HTTPS_PORT}"

    began = time.monotonic()
    page.click('header nav a:text-is("Mail")')
    page.wait_for_url(f"{other_origin}/mail", timeout=20_000)
    print(f"the link landed on {other} {time.monotonic() - began:.2f} s after {first} died")
    assert _served_by(page) == other
    assert page.inner_text(SIGNED_IN) == address

    folder = "made while a frontend died"
    mkdir = form_tab.locator('form[action="/drive/mkdir"]')
    mkdir.locator('[name="name"]').fill(folder)
    began = time.monotonic()
    mkdir.locator('button[type="submit"]').click()
    form_tab.wait_for_url(re.compile(re.escape(other_origin) + r"/drive\b.*"),
                          timeout=20_000)
    print(f"the form landed on {other} {time.monotonic() - began:.2f} s after it was sent")
    assert _served_by(form_tab) == other
    assert form_tab.inner_text(SIGNED_IN) == address
    assert form_tab.locator(f'td > a:text-is("{folder}")').count() == 1
    form_tab.screenshot(path=str(artifacts() / "failover-form-landed.png"),
                        full_page=True)

    # Without the worker the same click has nowhere to go.
    bare_page.click('header nav a:text-is("Mail")')
    bare_page.wait_for_load_state()
    assert not bare_page.url.startswith(other_origin), bare_page.url
    assert "served by" not in bare_page.content()
