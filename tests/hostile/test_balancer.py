"""The balancer: a redirector, so the danger is a request that steers the redirect, or kills it.

Malformed requests get a 4xx/5xx status of HTTP's own; well-formed but
hostile targets get a 307 that always points at one of our frontends, keeps
no raw CR/LF, and sets nothing else (no header injection).
"""

from __future__ import annotations

import urllib.parse

import pytest

from . import _raw

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def still_answering(cloud):
    yield
    answer = _raw.http(cloud.balancer, f"GET /drive HTTP/1.1\r\nHost: {cloud.balancer}\r\n"
                                       "Connection: close\r\n\r\n")
    assert _raw.status_of(answer) == 307, answer[:300]
    assert _raw.headers_of(answer)["location"] == f"http://{cloud.frontend}/drive"


MALFORMED = {
    "bad-method": (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "bad-request-line": (b"GARBAGE\r\n\r\n", 400),
    "bad-version": (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505),
    "huge-header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 70_000 + b"\r\n\r\n",
                    431),
    "too-many-headers": (b"GET / HTTP/1.1\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n", 431),
    "request-line-of-100-kb": (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n", 414),
}


@pytest.mark.parametrize("payload, status", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_gets_an_http_error(cloud, payload, status):
    answer = _raw.exchange(cloud.balancer, payload)
    # A request line it cannot read is answered as HTTP/0.9 would be: the error page alone.
    assert _raw.status_of(answer) == status or f"Error code: {status}".encode() in answer, \
        answer[:300]


TARGETS = {
    "path-traversal": "/../../etc/passwd",
    "scheme-relative": "//evil.example/x",
    "backslash-host": "/\\evil.example/x",
    "absolute-form": "http://evil.example/x",
    "encoded-crlf-header-injection": "/%0d%0aSet-Cookie:%20sid=planted",
    "userinfo-at-sign": "@evil.example/x",
}


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_a_hostile_target_is_redirected_to_our_frontend_only(cloud, target):
    answer = _raw.http(cloud.balancer, f"GET {target} HTTP/1.1\r\nHost: {cloud.balancer}\r\n"
                                       "Connection: close\r\n\r\n")
    assert _raw.status_of(answer) in (307, 400), answer[:300]
    headers = _raw.headers_of(answer)
    assert "set-cookie" not in headers
    if "location" in headers:
        location = headers["location"]
        assert urllib.parse.urlsplit(location).netloc == cloud.frontend, location
        assert "\r" not in location and "\n" not in location
