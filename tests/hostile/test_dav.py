"""The WebDAV door (/dav/ of a frontend), on raw sockets byte for byte.

Traversal in every form (the path and the Destination), a PROPFIND body with a
billion-laughs entity, a PUT claiming 100 GB, names with control characters, no
credentials, and PROPFIND bodies of 10 MB (announced and chunked): each a clear
4xx, never a 500, and the frontend still answers; the victim's drive is untouched
(conftest's witnesses).
"""

from __future__ import annotations

import base64
import re
import time

import pytest

from . import _raw
from .conftest import PASSWORD, new_account

pytestmark = pytest.mark.cluster

LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
          + b"".join(b' <!ENTITY lol%d "%s">\n' % (n, (b"&lol%d;" % (n - 1) if n > 1
                                                       else b"&lol;") * 10)
                     for n in range(1, 10))
          + b']>\n<D:propfind xmlns:D="DAV:"><D:prop><D:x>&lol9;</D:x></D:prop></D:propfind>')


@pytest.fixture(scope="module")
def attacker(cloud) -> str:
    return new_account(cloud, "davatk")


def _auth(name: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()


def dav(cloud, method: str, path: str, name: str | None, headers: dict[str, str] | None = None,
        body: bytes = b"", length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {cloud.frontend}", "Connection: close"]
    if name:
        lines.append(f"Authorization: {_auth(name)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return _raw.http(cloud.frontend, "\r\n".join(lines) + "\r\n\r\n", body, wait=20)


@pytest.fixture(autouse=True)
def still_answering(cloud, attacker):
    yield
    answer = dav(cloud, "PROPFIND", "/dav/", attacker, {"Depth": "1"})
    assert _raw.status_of(answer) == 207, answer[:300]


def _refused(answer: bytes, *statuses: int) -> None:
    status = _raw.status_of(answer)
    assert status in (statuses or range(400, 500)), answer[:400]
    assert answer.partition(b"\r\n\r\n")[2].strip(), "a refusal says why"
    assert b"Traceback" not in answer


TRAVERSALS = ["/dav/../drive", "/dav/%2e%2e/drive", "/dav/%2E%2E/%2e%2e/etc/passwd",
              "/dav/a/..%2f..%2fetc", "/dav/%2fetc/passwd", "/dav/a%5c..%5c..%5cb",
              "/dav/./keep.txt", "/dav/a/../../x",
              "/dav/%c0%ae%c0%ae/x", "/dav/a%00b"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_in_the_path(cloud, attacker, path):
    for method in ("GET", "PROPFIND", "DELETE", "PUT"):
        answer = dav(cloud, method, path, attacker, {"Depth": "0"})
        _refused(answer, 400, 404)


@pytest.mark.parametrize("target", ["/dav/../drive/x", "/dav/%2e%2e/x", "/drive/x",
                                    "/dav/a%2fb", "http://elsewhere.test/dav/x",
                                    "/dav/x%01y", "/dav/..%5cx"])
def test_traversal_in_the_destination(cloud, attacker, target):
    assert _raw.status_of(dav(cloud, "PUT", "/dav/source.txt", attacker, body=b"x")) in (201, 204)
    for method in ("COPY", "MOVE"):
        answer = dav(cloud, method, "/dav/source.txt", attacker, {"Destination": target})
        _refused(answer, 400, 502)


def test_billion_laughs_propfind(cloud, attacker):
    began = time.monotonic()
    answer = dav(cloud, "PROPFIND", "/dav/", attacker, {"Depth": "0",
                                                        "Content-Type": "application/xml"},
                 LAUGHS)
    _refused(answer, 400)
    assert time.monotonic() - began < 10
    answer = dav(cloud, "PROPPATCH", "/dav/", attacker, {"Content-Type": "application/xml"},
                 LAUGHS.replace(b"D:propfind", b"D:propertyupdate"))
    _refused(answer, 400)


def test_put_claiming_100_gb(cloud, attacker):
    answer = dav(cloud, "PUT", "/dav/huge.bin", attacker, body=b"x" * 1000,
                 length=100 * 1024 ** 3)
    _refused(answer, 413, 507)


@pytest.mark.parametrize("name", ["a%01b", "tab%09name", "new%0aline", "cr%0d%0aX-Evil:%201",
                                  "del%7f", "nul%00"])
def test_names_with_control_characters(cloud, attacker, name):
    for method in ("PUT", "MKCOL"):
        _refused(dav(cloud, method, f"/dav/{name}", attacker, body=b"x" if method == "PUT"
                     else b""), 400)
    assert _raw.status_of(dav(cloud, "PUT", "/dav/plain.txt", attacker, body=b"x")) in (201, 204)
    _refused(dav(cloud, "MOVE", "/dav/plain.txt", attacker, {"Destination": f"/dav/{name}"}),
             400)


def test_unauthenticated_and_wrong_schemes(cloud):
    for headers in ({}, {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"},
                    {"Authorization": "Basic " + "A" * 5000}):
        answer = dav(cloud, "PROPFIND", "/dav/", None, {"Depth": "0", **headers})
        _refused(answer, 401)
        assert 'basic realm="raftcloud"' in _raw.headers_of(answer).get("www-authenticate",
                                                                         "").lower()


def test_propfind_bodies_of_10_mb(cloud, attacker):
    big = b"<" * (10 * 1024 * 1024)
    began = time.monotonic()
    _refused(dav(cloud, "PROPFIND", "/dav/", attacker, {"Depth": "0"}, big), 413)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (big[i:i + 65536] for i in range(0, len(big), 65536)))
    _refused(dav(cloud, "PROPFIND", "/dav/", attacker,
                 {"Depth": "0", "Transfer-Encoding": "chunked"}, chunked + b"0\r\n\r\n"), 413)
    assert time.monotonic() - began < 30


def test_unbounded_depth_and_unknown_methods(cloud, attacker):
    answer = dav(cloud, "PROPFIND", "/dav/", attacker, {"Depth": "infinity"})
    _refused(answer, 403)
    assert b"propfind-finite-depth" in answer
    _refused(dav(cloud, "TRACE", "/dav/", attacker), 405)
    _refused(dav(cloud, "SEARCH", "/dav/", attacker), 405)


@pytest.mark.parametrize("timeout", ["Second-31536000", "Infinite", "Second-99999999999999999999",
                                     "Infinite, Second-4100000000", "Second-x"])
def test_lock_with_a_year_long_timeout(cloud, attacker, timeout):
    assert _raw.status_of(dav(cloud, "PUT", "/dav/locked.txt", attacker, body=b"x")) in (201, 204)
    body = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
            b"<D:owner>probe</D:owner></D:lockinfo>")
    answer = dav(cloud, "LOCK", "/dav/locked.txt", attacker, {"Timeout": timeout,
                                                               "Content-Type": "application/xml"},
                 body)
    assert _raw.status_of(answer) == 200, answer[:400]
    granted = re.search(rb"<[^>]*timeout>Second-(\d+)<", answer)
    assert granted and int(granted.group(1)) <= 3600, answer[-600:]
    token = _raw.headers_of(answer)["lock-token"]
    assert _raw.status_of(dav(cloud, "UNLOCK", "/dav/locked.txt", attacker,
                              {"Lock-Token": token})) == 204
