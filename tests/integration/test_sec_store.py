"""The store's ports against strangers, on real replica processes (issue 13).

* Slow and silent sockets on the client port and the Raft port: the group keeps
  serving writes, each socket is closed after its deadline, and the caps hold.
* Frames on the client port are sealed: a plain frame is refused, a wrong secret
  gets nothing, and everything still works (across network namespaces too).
* Nothing a cloud writes to its data directory is open to group or others.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import time

import pytest

import shards
from raftkv import Client, protocol
from raftkv.cluster import load_cluster, split_addr
from raftkv.errors import AuthenticationFailed, ProtocolError
from raftkv.node import MAX_RAFT_UNAUTHENTICATED, RAFT_AUTH_DEADLINE
from raftkv.server import MAX_HANDSHAKING

from .._procs import SECRET, wait_for
from ..cluster import KVCluster, launched, running

pytestmark = pytest.mark.cluster

MAX_CONNECTIONS = 300  # the guarded cluster's [store] max_connections


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """One group whose client ports seal frames even on loopback, with a low connection cap."""
    extra = f'\n[store]\nencryption = "always"\nmax_connections = {MAX_CONNECTIONS}\n'
    with running(KVCluster(tmp_path_factory.mktemp("sec-store"), extra=extra)) as cluster:
        yield cluster


def _open(addr: str) -> socket.socket:
    return socket.create_connection(split_addr(addr), timeout=10)


def _closed(sock: socket.socket) -> bool:
    """Has the peer closed ``sock``?  Reads whatever is waiting, without blocking."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)


def _replica(cluster: KVCluster, name: str):
    return next(r for r in cluster.cluster.groups[0].replicas if r.name == name)


def _term(cluster: KVCluster, name: str) -> int:
    with cluster.client() as client:
        return {s["name"]: s for s in client.status()}[name]["term"]


def _writes_work(cluster: KVCluster, client: shards.Client, tag: str) -> None:
    """A write and a read on an established connection and on a brand-new client."""
    client.put(f"sec-{tag}", "c", b"old connection")
    assert client.get(f"sec-{tag}", "c").value == b"old connection"
    with cluster.client(timeout=10) as fresh:
        fresh.put(f"sec-{tag}", "d", b"new connection")
        assert fresh.get(f"sec-{tag}", "d").value == b"new connection"


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# -- hole 3: slow and silent sockets ------------------------------------------------

def test_slow_and_silent_sockets_on_the_client_port(guarded) -> None:
    leader = _replica(guarded, guarded.leader())
    term = _term(guarded, leader.name)
    socks: list[socket.socket] = []
    with guarded.client() as client:
        client.put("sec-warm", "c", b"x")  # its connections are open before the attack
        try:
            # An idle, authenticated connection: clients keep theirs for hours.
            idle = _open(leader.client)
            socks.append(idle)
            idle_channel = protocol.client_handshake(idle, SECRET)
            # 50 that authenticate, then send a frame's header and a little of its body.
            slow: list[tuple[socket.socket, protocol.Channel]] = []
            for _ in range(50):
                sock = _open(leader.client)
                socks.append(sock)
                slow.append((sock, protocol.client_handshake(sock, SECRET)))
                sock.sendall(struct.pack(">I", 1000) + b"x" * 10)
            slow_since = time.monotonic()
            # 150 that never answer the greeting.
            silent = []
            for _ in range(150):
                sock = _open(leader.client)
                socks.append(sock)
                silent.append(sock)
            silent_since = time.monotonic()
            time.sleep(1.0)
            # The handshake cap holds: the oldest silent ones made room at once.
            still_open = [s for s in silent if not _closed(s)]
            assert len(still_open) == MAX_HANDSHAKING, len(still_open)

            _writes_work(guarded, client, "client-port")

            # Every silent socket is gone once the handshake deadline has passed...
            wait_for(lambda: all(_closed(s) for s in silent),
                     protocol.HANDSHAKE_TIMEOUT + 5 - (time.monotonic() - silent_since),
                     "silent sockets to be closed")
            # ...every slow frame gets a ProtocolError once the frame deadline has,
            # and the idle connection stays, and answers.
            for sock, channel in slow:
                sock.settimeout(max(1.0, protocol.FRAME_TIMEOUT + 5
                                    - (time.monotonic() - slow_since)))
                answer = protocol.read_frame(sock, channel)
                assert answer["error"] == "ProtocolError" and "within" in answer["message"]
                assert sock.recv(1) == b""
            assert time.monotonic() - slow_since >= protocol.FRAME_TIMEOUT - 1
            for part in idle_channel.seal((protocol.encode({"id": 7, "op": "status"}),)):
                idle.sendall(part)
            answer = protocol.read_frame(idle, idle_channel)
            assert answer["id"] == 7 and answer["ok"]["name"] == leader.name
        finally:
            _close_all(socks)
        _writes_work(guarded, client, "client-port-after")
    assert _term(guarded, leader.name) == term  # the leader never lost its role


def test_silent_sockets_on_the_raft_port(guarded) -> None:
    leader = _replica(guarded, guarded.leader())
    term = _term(guarded, leader.name)
    socks: list[socket.socket] = []
    with guarded.client() as client:
        client.put("sec-warm", "c", b"x")
        try:
            started = time.monotonic()
            for _ in range(200):
                socks.append(_open(leader.raft))
            since = time.monotonic()
            assert since - started < 10, "the Raft port accepts connections too slowly"
            time.sleep(1.0)
            # At most the cap wait to authenticate; the oldest made room at once.
            still_open = [s for s in socks if not _closed(s)]
            assert len(still_open) <= MAX_RAFT_UNAUTHENTICATED, len(still_open)

            _writes_work(guarded, client, "raft-port")

            wait_for(lambda: all(_closed(s) for s in socks),
                     RAFT_AUTH_DEADLINE + 5 - (time.monotonic() - since),
                     "silent Raft sockets to be closed")
        finally:
            _close_all(socks)
        _writes_work(guarded, client, "raft-port-after")
    assert _term(guarded, leader.name) == term


def test_the_client_port_holds_at_most_max_connections(guarded) -> None:
    replica = guarded.cluster.groups[0].replicas[0]
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(MAX_CONNECTIONS + 20):
            sock = _open(replica.client)
            try:
                protocol.client_handshake(sock, SECRET)
                held.append(sock)
            except (ConnectionError, ProtocolError):
                refused += 1  # closed at once, before the greeting
                sock.close()
        assert len(held) <= MAX_CONNECTIONS and refused >= 20, (len(held), refused)
        time.sleep(1.0)
        assert not any(_closed(s) for s in held)  # idle connections are kept
    finally:
        _close_all(held)
    # Room again: a client connects and works.
    with Client([replica.client], SECRET, timeout=10) as one:
        assert one.status()[0]["name"] == replica.name


# -- frames on the client port are sealed ----------------------------------------

def _greeting_mode(addr: str) -> int:
    with _open(addr) as sock:
        greeting = protocol._recv_exactly(sock, protocol.GREETING_SIZE)
    assert greeting[:4] == protocol.MAGIC
    return greeting[4]


def test_the_client_port_speaks_only_sealed_frames(guarded) -> None:
    replica = guarded.cluster.groups[0].replicas[0]
    assert _greeting_mode(replica.client) == protocol.SEALED
    with _open(replica.client) as sock:
        channel = protocol.client_handshake(sock, SECRET)
        assert channel.sealed
        for part in channel.seal((protocol.encode({"id": 1, "op": "status"}),)):
            sock.sendall(part)
        assert protocol.read_frame(sock, channel)["ok"]["name"] == replica.name
        # A frame that is not sealed (or was changed on the way) is refused, in the
        # protocol's own words, and the connection ends.
        sock.sendall(protocol.encode({"id": 2, "op": "put", "row": "r", "col": "c",
                                      "value": b"injected" * 8}))
        answer = protocol.read_frame(sock, channel)
        assert answer["error"] == "ProtocolError" and "integrity" in answer["message"]
        sock.settimeout(5)
        assert sock.recv(1) == b""
    with Client(guarded.cluster.groups[0].client_addrs, b"wrong-secret-0123456789abcdef",
                timeout=2) as stranger:
        # Refused at once, and told why: no retry changes a secret.
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed, match="does not know your secret"):
            stranger.put("r", "c", b"nope")
        assert time.monotonic() - started < 1.5
    with guarded.client() as client:
        assert client.get("r", "c") is None  # nothing injected
        big = os.urandom(3 * 2**20 + 7)  # a blob: chunks cross sealed frames too
        client.put("sec-sealed", "small", b"hello")
        client.put("sec-sealed", "big", big)
        assert client.get("sec-sealed", "small").value == b"hello"
        assert client.get("sec-sealed", "big").value == big


def test_frames_between_hosts_are_sealed_by_default(lab_cluster) -> None:
    """Replicas in their own network namespaces (encryption "auto"): every client
    connection crosses a bridge, so every one is sealed, and everything works."""
    for replica in lab_cluster.cluster.groups[0].replicas:
        assert _greeting_mode(replica.client) == protocol.SEALED
    with lab_cluster.client() as client:
        big = os.urandom(2 * 2**20)
        client.put("across", "big", big)
        assert client.get("across", "big").value == big


# -- hole 5: the data directory -------------------------------------------------

def test_nothing_in_the_data_directory_is_open_to_others(tmp_path) -> None:
    """A cloud writes journals, snapshots, blob chunks, logs and keys: all of them,
    and every directory, are its user's alone (no bit for group or others)."""
    old = os.umask(0o022)  # what a login shell usually has
    try:
        with launched(tmp_path, "\n[raft]\nsnapshot_entries = 10\n") as (_, config, data):
            with shards.Client(load_cluster(config)) as client:
                for i in range(40):
                    client.put(f"row{i}", "c", b"v" * 100)
                client.put("blob", "c", os.urandom(100 * 1024))  # > 16 KiB: chunks on disk
            wait_for(lambda: len(list(data.rglob("raft.snapshot"))) == 3, 30,
                     "every replica to write a snapshot")
            found = {p.name for p in data.rglob("*")}
            assert {"raft.journal.d", "raft.snapshot", "admin.password"} <= found
            assert any(p.suffix == ".log" for p in data.rglob("*"))
            assert len([p for p in (data / "g1a" / "blobs").rglob("*") if p.is_file()]) >= 1
            open_to_others = [f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p}"
                              for p in [data, *data.rglob("*")]
                              if stat.S_IMODE(p.lstat().st_mode) & 0o077]
            assert not open_to_others, "\n".join(open_to_others)
    finally:
        os.umask(old)
