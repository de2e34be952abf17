"""Uploads (multipart/form-data on /drive/upload) that a stranger or a broken client sends.

Each one is refused with a 4xx page, nothing lands in the victim's drive (the
witness compares its row), and an ordinary upload by another account works
afterwards.  A script in a file name is the one hostile upload that is stored:
it must come back escaped.
"""

from __future__ import annotations

import time

import pytest

from . import _raw
from .conftest import new_account, signed_in

pytestmark = pytest.mark.cluster

BOUNDARY = "hostileboundary1234"


@pytest.fixture(scope="module")
def uploader(cloud):
    """Another account, for the ordinary upload that shows the door still works."""
    return signed_in(cloud, new_account(cloud, "uploader"))


@pytest.fixture(autouse=True)
def still_answering(uploader):
    yield
    page = uploader.upload("/drive/upload", {"csrf": uploader.get("/drive").csrf(),
                                             "folder": "root"},
                           "file", f"ok-{time.monotonic_ns()}.txt", b"fine")
    assert page.status == 200 and "ok-" in page.text, page.text[:300]


def _part(name: str, value: bytes, filename: str | None = None, headers: str = "") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{headers}\r\n".encode()
            + value + b"\r\n")


def _fields(csrf: str) -> bytes:
    return _part("csrf", csrf.encode()) + _part("folder", b"root")


def _end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def _upload(cloud, body: bytes, sid: str | None, content_type: str | None = None,
            length: int | None = None) -> bytes:
    content_type = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    head = (f"POST /drive/upload HTTP/1.1\r\nHost: {cloud.frontend}\r\n"
            + (f"Cookie: sid={sid}\r\n" if sid else "")
            + f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n")
    return _raw.http(cloud.frontend, head, body, wait=15)


def _refused(answer: bytes) -> None:
    assert 400 <= _raw.status_of(answer) < 500, answer[:400]
    assert answer.partition(b"\r\n\r\n")[2].strip(), "a refusal with a message"


def _bodies(csrf: str) -> dict[str, tuple[bytes, str | None]]:
    """Probe id -> (body, Content-Type or None for the usual multipart one)."""
    file_part = _part("file", b"x", "x.txt")
    return {
        "missing-boundary": (_fields(csrf) + file_part + _end(), "multipart/form-data"),
        "not-multipart": (b"csrf=" + csrf.encode() + b"&folder=root", "text/plain"),
        "truncated-body": ((_fields(csrf) + _part("file", b"y" * 5000, "t.txt"))[:-2500], None),
        "no-closing-boundary": (_fields(csrf) + file_part, None),
        "part-header-of-2-mib": (_fields(csrf) + _part("file", b"x", "x.txt",
                                                       "X-Filler: " + "a" * 2**21 + "\r\n")
                                 + _end(), None),
        "ten-thousand-parts": (_fields(csrf) + b"".join(
            _part(f"f{i}", b"") for i in range(10_000)) + file_part + _end(), None),
        "filename-traversal": (_fields(csrf) + _part("file", b"x", "../../etc/passwd")
                               + _end(), None),
        "filename-dot-dot": (_fields(csrf) + _part("file", b"x", "..") + _end(), None),
        "filename-nul": (_fields(csrf) + _part("file", b"x", "a\x00b.txt") + _end(), None),
        "filename-control-char": (_fields(csrf) + _part("file", b"x", "a\x07b.txt")
                                  + _end(), None),
        "folder-traversal": (_part("csrf", csrf.encode()) + _part("folder", b"../../root")
                             + file_part + _end(), None),
        "no-csrf": (_part("folder", b"root") + file_part + _end(), None),
        "part-cut-in-its-value": (f'--{BOUNDARY}\r\nContent-Disposition: form-data; '
                                  'name="csrf"\r\n\r\nabc'.encode(), None),
        "garbage-without-boundary": (b"garbage without any boundary at all", None),
        "part-head-never-ends": (f"--{BOUNDARY}\r\nno headers end here\r\n--{BOUNDARY}--\r\n"
                                 .encode(), None),
    }


PROBES = list(_bodies("0" * 64))


@pytest.mark.parametrize("probe", PROBES)
def test_a_broken_or_hostile_upload_is_refused(cloud, victim, probe):
    body, content_type = _bodies(victim.browser.get("/drive").csrf())[probe]
    _refused(_upload(cloud, body, victim.sid, content_type))


def test_an_anonymous_oversized_body_is_refused_before_it_is_read(cloud):
    started = time.monotonic()
    with _raw.connect(cloud.frontend) as sock:
        sock.sendall((f"POST /drive/upload HTTP/1.1\r\nHost: {cloud.frontend}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                      f"Content-Length: {64 * 1024 * 1024}\r\n\r\n").encode()
                     + _part("file", b"z" * 65536, "big.bin"))
        answer = _raw.drain(sock, wait=5)  # 64 MiB announced, 64 KiB sent
    assert _raw.status_of(answer) in (400, 403, 413), answer[:300]
    assert time.monotonic() - started < 5


def test_a_broken_chunked_body_is_refused(cloud, victim):
    head = (f"POST /drive/upload HTTP/1.1\r\nHost: {cloud.frontend}\r\nCookie: sid={victim.sid}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    _refused(_raw.http(cloud.frontend, head, b"zz\r\nnot hex\r\n0\r\n\r\n"))


def test_a_script_in_a_file_name_is_shown_escaped(cloud):
    browser = signed_in(cloud, new_account(cloud, "escaper"))
    name = "<img src=x onerror=alert(1)>.txt"
    page = browser.upload("/drive/upload", {"csrf": browser.get("/drive").csrf(),
                                            "folder": "root"}, "file", name, b"hello")
    assert page.status == 200
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in page.text
