"""The store's client port: strangers' bytes before the handshake, and malformed frames after it.

Before the HMAC handshake the only answer is a closed connection; after it (a
client that knows the secret but sends garbage) the answer is a ProtocolError
frame in the store's own protocol, then a closed connection.  Nothing is ever
unpickled, no file is written, and the leader keeps its role and term.
"""

from __future__ import annotations

import os
import struct

import msgpack
import pytest

import raftkv
from raftkv import errors, protocol

from . import _raw
from .conftest import CANARY

pytestmark = pytest.mark.cluster


def leader_of(cloud) -> dict:
    return next(s for s in cloud.store.status() if s["group"] == 1 and s["role"] == "leader")


def client_addr(cloud, name: str) -> str:
    return next(r.client for r in cloud.cluster.groups[0].replicas if r.name == name)


@pytest.fixture(autouse=True)
def still_answering(cloud):
    before = leader_of(cloud)
    yield
    after = leader_of(cloud)
    assert (after["name"], after["term"]) == (before["name"], before["term"]), \
        "the leader kept its role and term"
    cloud.store.put("{hostile}/after", "c", b"fine")
    assert cloud.store.get("{hostile}/after", "c").value == b"fine"


def _pickle_that_creates(path) -> bytes:
    return b"\x80\x04\x95" + f"cos\nmkdir\n(S'{path}'\ntR.".encode() * 10


BEFORE_HANDSHAKE = {
    "random-bytes": lambda canary: os.urandom(4096),
    "crafted-pickle": _pickle_that_creates,
    "http-request": lambda canary: (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"User-Agent: curious/1.0\r\nAccept: */*\r\n\r\n"),
    "wrong-hmac": lambda canary: b"\x00" * 32 + os.urandom(16),
}


@pytest.mark.parametrize("payload", BEFORE_HANDSHAKE.values(), ids=BEFORE_HANDSHAKE.keys())
def test_a_stranger_before_the_handshake_is_disconnected(cloud, tmp_path, payload):
    canary = tmp_path / "pwned"
    with _raw.connect(client_addr(cloud, leader_of(cloud)["name"])) as sock:
        greeting = sock.recv(len(protocol.MAGIC))
        assert greeting == protocol.MAGIC
        sock.sendall(payload(canary))
        answer, closed = _raw.drain_until_closed(sock, wait=8)
    assert closed, "the server hung up"
    # The rest of its greeting; then, once a whole answer's worth of bytes failed as a
    # proof, the refusal (protocol.REFUSED, which tells a wrong secret from a dead
    # server); never its own proof or a frame.
    rest = protocol.GREETING_SIZE - len(protocol.MAGIC)
    assert len(answer) >= rest and answer[rest:] in (b"", protocol.REFUSED), \
        "the rest of its greeting and at most the refusal: no proof, no frame"
    assert not canary.exists(), "nothing was unpickled"


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


AFTER_HANDSHAKE = {
    "gigabyte-length": struct.pack(">I", 2**30),
    "length-over-the-cap": struct.pack(">I", protocol.MAX_FRAME + 1),
    "msgpack-reserved-byte": _frame(b"\xc1"),
    "msgpack-array-not-map": _frame(b"\x92\x01\x02"),
    "msgpack-truncated-map": _frame(b"\x82\xa2id"),
    "non-string-map-key": _frame(msgpack.packb({1: 2})),
    "garbage": _frame(b"garbage" * 3),
    "empty-frame": _frame(b""),
}


def _handshaken(cloud):
    """A socket past the handshake, and its channel (plain frames on loopback)."""
    sock = _raw.connect(client_addr(cloud, leader_of(cloud)["name"]))
    return sock, protocol.client_handshake(sock, cloud.cluster.secret)


@pytest.mark.parametrize("payload", AFTER_HANDSHAKE.values(), ids=AFTER_HANDSHAKE.keys())
def test_a_malformed_frame_gets_a_protocol_error_and_a_closed_connection(cloud, payload):
    sock, channel = _handshaken(cloud)
    with sock:
        assert not channel.sealed, "loopback frames travel as they are"
        sock.sendall(payload)
        sock.settimeout(10)
        answer = protocol.read_frame(sock, channel)
        assert answer.get("error") == "ProtocolError", answer
        assert _raw.drain(sock, wait=5) == b"", "the connection is closed after the error"


REQUESTS = {
    "unknown-op": {"op": "os.system", "cmd": "id"},
    "no-op": {"row": "x"},
    "wrong-types": {"op": "put", "row": 5, "col": None, "value": "not bytes"},
    "blob-name-traversal": {"op": "blob_get", "name": "../../secret"},
    "blob-put-traversal": {"op": "blob_put", "name": "../../../hostile-blob", "data": b"x"},
}


@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
def test_a_request_it_cannot_serve_gets_an_error_frame(cloud, request_):
    sock, channel = _handshaken(cloud)
    with sock:
        sock.sendall(b"".join(channel.seal([protocol.encode({"id": 7, **request_})])))
        sock.settimeout(10)
        answer = protocol.read_frame(sock, channel)
    # Refused before the log (top level) or by the state machine (inside the result).
    error = answer.get("error") or (answer.get("ok") or {}).get("error")
    assert answer.get("id") == 7 and error, answer
    assert not list(cloud.data.rglob("hostile-blob")), "no file written outside the chunk store"


def test_a_client_with_the_wrong_secret_gets_nothing(cloud):
    """Nothing but the refusal: no retry changes a secret."""
    with raftkv.Client(cloud.cluster.groups[0].client_addrs, b"wrong-secret-wrong-secret",
                       timeout=2) as stranger:
        with pytest.raises(errors.AuthenticationFailed, match="does not know your secret"):
            stranger.get(*CANARY)
