"""The Raft port: pysyncobj's own framing, reached by a stranger who lacks the cluster secret.

Its protocol has no error message, so the refusal is a closed connection: an
impossible length at once, and a frame that does not decrypt with the
cluster's key as soon as it is whole.  Nothing is unpickled, nothing is
buffered beyond one frame, and the leader keeps its role and term.
"""

from __future__ import annotations

import random
import struct

import pytest

from . import _raw
from .test_store_client_port import leader_of, still_answering  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.cluster


def raft_addr(cloud, name: str) -> str:
    return next(r.raft for r in cloud.cluster.groups[0].replicas if r.name == name)


def _pickle(canary) -> bytes:
    return b"\x80\x04\x95" + f"cos\nmkdir\n(S'{canary}'\ntR.".encode() * 10


def _framed(body: bytes) -> bytes:
    return struct.pack("i", len(body)) + body  # pysyncobj's native-order signed length


PROBES = {
    "random-bytes": lambda canary: random.Random(13).randbytes(4096),
    "crafted-pickle": _pickle,
    "crafted-pickle-in-a-frame": lambda canary: _framed(_pickle(canary)),
    "negative-length": lambda canary: struct.pack("i", -1) + b"x" * 64,
    "zero-length": lambda canary: struct.pack("i", 0) + b"x" * 64,
    "fernet-token-with-a-wrong-key": lambda canary: _framed(
        b"gAAAAAB" + b"A" * 200 + b"=="),
}


@pytest.mark.parametrize("payload", PROBES.values(), ids=PROBES.keys())
def test_a_stranger_on_the_raft_port_is_disconnected(cloud, tmp_path, payload):
    canary = tmp_path / "pwned"
    with _raw.connect(raft_addr(cloud, leader_of(cloud)["name"])) as sock:
        sock.sendall(payload(canary))
        _, closed = _raw.drain_until_closed(sock, wait=8)
    assert closed, "the replica hung up"
    assert not canary.exists(), "nothing was unpickled"


def test_a_gigabyte_header_then_a_flood_is_cut_off_early(cloud):
    with _raw.connect(raft_addr(cloud, leader_of(cloud)["name"])) as sock:
        sock.sendall(struct.pack("i", 2**30))
        sent, closed = _raw.stream_until_closed(sock, limit=256 * 2**20)
    assert closed and sent < 16 * 2**20, f"the Raft port buffered {sent} bytes"
