"""The launcher's control API: it kills and starts processes, so only the Bearer token may use it.

Every probe gets a 4xx in HTTP with a JSON error or the server's own error
page, and no process is stopped, started or restarted (the autouse witness
compares every process's pid before and after).
"""

from __future__ import annotations

import pytest

from . import _raw

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def still_answering(cloud):
    yield
    assert all(alive for _, alive in cloud.processes().values())


def _request(cloud, method: str, path: str, auth: str | None, body: bytes = b"",
             extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {cloud.control}\r\nConnection: close\r\n"
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return _raw.http(cloud.control, head + extra + "\r\n", body)


# (method, path, which Authorization header, the status it must get)
PROBES = {
    "no-token-list": ("GET", "/processes", None, 401),
    "no-token-shutdown": ("POST", "/shutdown", None, 401),
    "wrong-token-stop": ("POST", "/processes/web1/stop", "Bearer " + "0" * 64, 401),
    "token-of-another-scheme": ("POST", "/shutdown", "Basic YWRtaW46YWRtaW4=", 401),
    "token-with-non-ascii": ("POST", "/shutdown", "Bearer \u00bf'\"(", 401),
    "token-prefix-only": ("POST", "/shutdown", "Bearer ", 401),
    "unknown-path": ("GET", "/etc/passwd", "valid", 404),
    "traversal-to-shutdown": ("POST", "/processes/../shutdown", "valid", 404),
    "unknown-process": ("POST", "/processes/no-such-thing/stop", "valid", 404),
    "unknown-verb": ("POST", "/processes/web1/exec", "valid", 404),
    "bad-method": ("DELETE", "/processes/web1", "valid", 501),
}


@pytest.mark.parametrize("method, path, auth, status", PROBES.values(), ids=PROBES.keys())
def test_a_request_without_the_right_token_or_target_is_refused(cloud, method, path, auth,
                                                                  status):
    if auth == "valid":
        auth = f"Bearer {cloud.token}"
    answer = _request(cloud, method, path, auth)
    assert _raw.status_of(answer) == status, answer[:300]
    assert b"Traceback" not in answer


def test_a_huge_body_without_the_token_is_refused_unread(cloud):
    with _raw.connect(cloud.control) as sock:
        sock.sendall(b"POST /shutdown HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1073741824\r\n\r\n" + b"x" * 65536)
        answer = _raw.drain(sock, wait=10)
    assert _raw.status_of(answer) in (401, 413), answer[:300]


def test_a_huge_header_is_refused(cloud):
    answer = _request(cloud, "GET", "/processes", f"Bearer {cloud.token}",
                      extra="X-Filler: " + "a" * 70_000 + "\r\n")
    assert 400 <= _raw.status_of(answer) < 500, answer[:300]
