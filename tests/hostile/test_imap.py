"""The IMAP door (raftcloud-imapd): what a stranger or a broken client sends.

Each probe gets IMAP's own refusal -- a tagged ``BAD`` or ``NO`` that says why,
or ``* BYE`` with the reason and a closed connection where the stream cannot be
trusted any more (a non-synchronizing literal too big, an overlong line, a
client too slow) -- and afterwards the same door logs in and selects the inbox
(``still_answering``); the suite's witness checks that the victim's mailbox is
untouched and no process restarted.  Bytes go out raw (``_raw``): no client
library tidies them up.
"""

from __future__ import annotations

import imaplib
import socket
import time

import pytest

from shards.model import mail

from . import _raw
from .conftest import PASSWORD, new_account

pytestmark = pytest.mark.cluster

GIGABYTES = 4 * 1024 ** 3


@pytest.fixture(scope="module")
def prober(cloud):
    return new_account(cloud, "imapper")


@pytest.fixture(autouse=True)
def still_answering(cloud, prober):
    yield
    host, port = cloud.imap.rsplit(":", 1)
    with imaplib.IMAP4(host, int(port), timeout=30) as client:
        assert client.login(prober, PASSWORD)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"


def logged_in(cloud, prober, source: str = "") -> tuple[socket.socket, object]:
    """A raw connection past LOGIN, and its line reader."""
    sock = _raw.connect(cloud.imap, timeout=15, source=source)
    lines = sock.makefile("rb")
    assert lines.readline().startswith(b"* OK")
    sock.sendall(f'L LOGIN {prober} "{PASSWORD}"\r\n'.encode())
    assert lines.readline().startswith(b"L OK")
    return sock, lines


def skip_to(lines, prefix: bytes) -> None:
    """Read past the untagged lines up to the answer starting with ``prefix``."""
    for _ in range(100):
        if lines.readline().startswith(prefix):
            return
    raise AssertionError(f"no answer {prefix!r}")


def test_a_literal_claiming_gigabytes_is_refused_before_a_byte_is_read(cloud, prober):
    sock, lines = logged_in(cloud, prober)
    with sock:
        sock.sendall(b"a APPEND INBOX {%d}\r\n" % GIGABYTES)
        refusal = lines.readline()
        assert refusal.startswith(b"a BAD [TOOBIG]"), refusal  # and no "+ " to go on
        sock.sendall(b"b NOOP\r\n")
        assert lines.readline().startswith(b"b OK")


def test_a_non_synchronizing_literal_of_gigabytes_closes_the_connection(cloud, prober):
    sock, _lines = logged_in(cloud, prober)
    with sock:
        sock.sendall(b"a APPEND INBOX {%d+}\r\nFrom: x\r\n" % GIGABYTES)
        received, closed = _raw.drain_until_closed(sock)
        assert b"a BAD [TOOBIG]" in received and b"* BYE" in received and closed


def test_a_literal_in_any_other_command_is_bounded_too(cloud, prober):
    sock, lines = logged_in(cloud, prober)
    with sock:
        sock.sendall(b"a SELECT {100000}\r\nb SEARCH SUBJECT {99999999+}\r\n")
        first = lines.readline()
        assert first.startswith(b"a BAD [TOOBIG]"), first
        assert lines.readline().startswith(b"b BAD [TOOBIG]")
        assert lines.readline().startswith(b"* BYE")


@pytest.mark.parametrize("command", [
    b"FETCH 1 (FLAGS", b"FETCH 1 FLAGS)", b"STATUS INBOX (MESSAGES", b"SEARCH ((ALL)",
    b"APPEND INBOX (\\Seen", b"LIST (SPECIAL-USE \"\" *", b'SELECT "INBOX', b"STORE 1 +FLAGS ((",
])
def test_unbalanced_parentheses_and_quotes_get_a_bad(cloud, prober, command):
    sock, lines = logged_in(cloud, prober)
    with sock:
        sock.sendall(b"s SELECT INBOX\r\na " + command + b"\r\nb NOOP\r\n")
        skip_to(lines, b"s ")
        bad = lines.readline()
        assert bad.startswith(b"a BAD"), bad
        assert lines.readline().startswith(b"b OK")


@pytest.mark.parametrize("command", [b"STATUS INBOX ", b"FETCH 1 ", b"SEARCH "])
def test_ten_thousand_nested_lists_get_a_bad(cloud, prober, command):
    sock, lines = logged_in(cloud, prober)
    with sock:
        sock.sendall(b"s SELECT INBOX\r\na " + command + b"(" * 10000 + b"ALL" + b")" * 10000
                     + b"\r\nb NOOP\r\n")
        skip_to(lines, b"s ")
        bad = lines.readline()
        assert bad.startswith(b"a BAD") and b"nested" in bad, bad
        assert lines.readline().startswith(b"b OK")


def test_deep_search_keys_without_parentheses_get_a_bad(cloud, prober):
    sock, lines = logged_in(cloud, prober)
    with sock:
        sock.sendall(b"s SELECT INBOX\r\na SEARCH " + b"NOT " * 5000 + b"ALL\r\nb NOOP\r\n")
        skip_to(lines, b"s ")
        assert lines.readline().startswith(b"a BAD")
        assert lines.readline().startswith(b"b OK")


@pytest.mark.parametrize("command", [
    b"CREATE &AAA",                 # an "&" never closed: pymap's decoder would loop for ever
    b'CREATE "x&Jjo"',
    b'CREATE "&Jj!-"',              # not base64
    b"CREATE &AGE-",                # printable ASCII encoded
    b"CREATE {4+}\r\n&AAA",         # the same name as a literal
    b"SELECT &AAA",
    b'LIST "&AAA" *',
    b'LIST "" &AAA*',
    b"RENAME INBOX/x &AAA",
    b"STATUS &AAA (MESSAGES)",
    b"UID MOVE 1 &AAA",
    b"CREATE Entw\xc3\xbcrfe",      # raw UTF-8 is not modified UTF-7
    b'CREATE "a\x00b"',
])
def test_invalid_modified_utf7_names_get_a_bad_and_make_nothing(cloud, prober, command):
    before = [f.name for f in mail.list_folders(cloud.store, prober)]
    sock, lines = logged_in(cloud, prober)
    with sock:
        sock.settimeout(10)  # a decoder that loops would leave us waiting here
        sock.sendall(b"a " + command + b"\r\nb NOOP\r\n")
        bad = lines.readline()
        assert bad.startswith(b"a BAD"), bad
        assert lines.readline().startswith(b"b OK")
    assert [f.name for f in mail.list_folders(cloud.store, prober)] == before


def test_an_overlong_line_gets_toobig_and_the_connection_closes(cloud):
    with _raw.connect(cloud.imap) as sock:
        sock.recv(1000)
        sock.sendall(b"a NOOP " + b"x" * 300_000 + b"\r\n")
        received, closed = _raw.drain_until_closed(sock, wait=10)
    assert b"BAD [TOOBIG]" in received and b"* BYE" in received and closed


def test_an_endless_line_is_cut_off_and_bounded(cloud):
    with _raw.connect(cloud.imap) as sock:
        sock.recv(1000)
        sent, closed = _raw.stream_until_closed(sock, limit=64 * 1024 * 1024, seconds=20)
    assert closed and sent < 8 * 1024 * 1024, sent


def test_a_client_dripping_a_line_is_closed_after_the_line_timeout(cloud):
    with _raw.connect(cloud.imap) as sock:
        sock.recv(1000)
        started = time.monotonic()
        closed = False
        for byte in b"a NOOP and more and more":
            try:
                sock.sendall(bytes([byte]))
            except ConnectionError:
                closed = True
                break
            time.sleep(1)
            if time.monotonic() - started > 15:
                break
        received, gone = _raw.drain_until_closed(sock, wait=10)
    assert (closed or gone) and time.monotonic() - started < 20
    assert b"* BYE Line not completed in time" in received or closed


def test_a_silent_client_is_closed_before_login_after_the_login_timeout(cloud):
    with _raw.connect(cloud.imap) as sock:
        assert sock.recv(1000).startswith(b"* OK")
        started = time.monotonic()
        received, closed = _raw.drain_until_closed(sock, wait=20)
    assert closed and b"* BYE Autologout" in received and time.monotonic() - started < 15


def test_more_connections_from_one_address_than_allowed_are_refused(cloud):
    source = f"127.88.{time.time_ns() % 200 + 1}.9"
    held = []
    try:
        for _ in range(20):
            sock = _raw.connect(cloud.imap, source=source)
            assert sock.recv(1000).startswith(b"* OK")
            held.append(sock)
        with _raw.connect(cloud.imap, source=source) as extra:
            received, closed = _raw.drain_until_closed(extra, wait=5)
        assert received.startswith(b"* BYE [UNAVAILABLE] Too many connections") and closed
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("lines_sent", [
    [b"a AUTHENTICATE PLAIN", b"!!!not base64!!!"],
    [b"a AUTHENTICATE PLAIN", b"AGFsaWNl"],                 # no password part
    [b"a AUTHENTICATE NONSENSE"],
    [b'a LOGIN "" ""'],
    [b"a LOGIN"],
    [b"a LOGIN x\x00y pass"],
    [b"a SELECT INBOX"],                                    # before login
    [b"a FROBNICATE"],
    [b"\x00\x01\x02"],
])
def test_garbage_before_login_gets_bad_or_no(cloud, lines_sent):
    with _raw.connect(cloud.imap, source=f"127.77.{time.time_ns() % 250}.3") as sock:
        lines = sock.makefile("rb")
        lines.readline()
        for line in lines_sent:
            sock.sendall(line + b"\r\n")
            if line.startswith(b"a AUTHENTICATE") and len(lines_sent) > 1:
                assert lines.readline().startswith(b"+")
        answer = lines.readline()
        assert answer.split(b" ")[1] in (b"BAD", b"NO"), answer
        sock.sendall(b"z NOOP\r\n")
        assert lines.readline().startswith(b"z OK")
