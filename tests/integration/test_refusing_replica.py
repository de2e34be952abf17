"""A replica that refuses the client's secret is skipped like one that is down; only a
refusal from every replica means the client's secret is wrong (real replicas, and a
stranger's port that speaks the handshake with another secret)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from raftkv import Client, protocol
from raftkv.errors import AuthenticationFailed, ProtocolError

from .._procs import SECRET, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture
def other_cluster_port() -> Iterator[str]:
    """A port whose server knows another secret: another cluster's replica, or one of ours
    restarted with an old secret file."""
    loop = asyncio.new_event_loop()
    addr = f"127.0.0.1:{free_port()}"

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await protocol.server_handshake(reader, writer, b"another-clusters-secret",
                                            sealed=False)
        except (ProtocolError, OSError):
            pass
        writer.close()

    host, port = addr.rsplit(":", 1)
    server = loop.run_until_complete(asyncio.start_server(greet, host, int(port)))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield addr
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_one_refusing_replica_is_passed_over(kv_cluster, other_cluster_port) -> None:
    group = kv_cluster.cluster.groups[0]
    # The refusing port first: the client's first guess at the leader.
    with Client((other_cluster_port, *group.client_addrs), SECRET, timeout=10) as client:
        client.put("{refusing}/row", "c", b"stored")
        assert client.get("{refusing}/row", "c").value == b"stored"
        assert client.get("{refusing}/row", "c", consistency="stale").value == b"stored"


def test_every_replica_refusing_means_a_wrong_secret_at_once(kv_cluster) -> None:
    group = kv_cluster.cluster.groups[0]
    began = time.monotonic()
    with Client(group.client_addrs, b"not-the-secret-not-the-secret", timeout=10) as client:
        with pytest.raises(AuthenticationFailed, match="does not know your secret"):
            client.get("{refusing}/row", "c")
    assert time.monotonic() - began < 3, "told at once, not at the deadline"
