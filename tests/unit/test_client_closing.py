"""A client closed while another thread connects leaves no socket behind.

A socket dropped without ``close()`` is only closed by the garbage collector,
with a ResourceWarning (an error under pytest): a cluster test once failed so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import raftkv
import raftkv.client
import shards
from raftkv.cluster import load_cluster
from raftkv.errors import ClientClosed

from ..cluster import write_cluster_file


class RacingConnection:
    """Stands in for the socket: ``close()`` of the client runs while it is made."""

    made: list[RacingConnection] = []
    closing: raftkv.Client

    def __init__(self, addr: str, secret: bytes) -> None:
        self.closed = False
        RacingConnection.closing.close()
        RacingConnection.made.append(self)

    def close(self) -> None:
        self.closed = True


def test_a_connection_made_while_the_client_closes_is_closed(monkeypatch) -> None:
    client = raftkv.Client(["127.0.0.1:9"], b"s" * 32)
    RacingConnection.closing, RacingConnection.made = client, []
    monkeypatch.setattr(raftkv.client, "Connection", RacingConnection)
    with pytest.raises(ClientClosed):
        client.connection("127.0.0.1:9")
    assert [conn.closed for conn in RacingConnection.made] == [True]


def test_a_group_met_after_close_opens_no_connection(tmp_path: Path) -> None:
    client = shards.Client(load_cluster(write_cluster_file(tmp_path, groups=1)))
    client.close()
    late = client.group_client(9, ["127.0.0.1:9"])
    with pytest.raises(ClientClosed):
        late.connection("127.0.0.1:9")
