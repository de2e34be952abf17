"""WebDAV while the user's group has lost its majority: reads answer (stale), writes get
a 503 that says why, and all works again once the group is back (shards.readonly).

The portal runs in-process (werkzeug's test client) on a 3-replica group of the
test's own; replicas are killed with SIGKILL and restarted from their data dirs.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from portal.app import Portal
from shards.model import accounts

from .._procs import wait_for
from ..cluster import KVCluster, running
from ..conftest import SHARED_AUTH

pytestmark = pytest.mark.cluster

PASSWORD = "password-123"
BUDGET = 3.0  # seconds a request may take with the majority lost


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[KVCluster, Portal]]:
    with running(KVCluster(tmp_path / "kv", extra=SHARED_AUTH)) as cluster:
        config = PortalConfig(cluster=cluster.cluster, frontend="fe-dav-ro",
                              addr="127.0.0.1:9", background=False)
        portal = create_app(config, client_factory=cluster.client)
        try:
            yield cluster, portal
        finally:
            portal.close()


def test_dav_reads_answer_and_writes_are_refused_without_a_majority(cloud) -> None:
    cluster, portal = cloud
    with cluster.client() as client:
        accounts.create_user(client, "rouser", PASSWORD)
        accounts.create_user(client, "rolater", PASSWORD)
    http = HTTPClient(portal)

    def dav(method: str, path: str, user: str = "rouser", **kwargs):
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", **kwargs.pop("headers", {})}
        began = time.monotonic()
        response = http.open(path, method=method, headers=headers, **kwargs)
        return response, time.monotonic() - began

    content = os.urandom(300_000)  # a blob: its chunks live beside Raft on every replica
    assert dav("PUT", "/dav/report.bin", data=content)[0].status_code == 201
    leader = cluster.leader(1)
    for name in [n for n in cluster.procs if n != leader]:
        cluster.kill(name)

    listing, took = dav("PROPFIND", "/dav/", headers={"Depth": "1"})
    assert listing.status_code == 207 and b"report.bin" in listing.data and took < BUDGET, took
    got, took = dav("GET", "/dav/report.bin")
    assert got.status_code == 200 and got.data == content and took < BUDGET, took
    for method, path, kwargs in (("PUT", "/dav/new.bin", {"data": b"new"}),
                                 ("DELETE", "/dav/report.bin", {}),
                                 ("MKCOL", "/dav/folder", {})):
        refused, took = dav(method, path, **kwargs)
        assert refused.status_code == 503 and took < BUDGET, (method, refused.status_code, took)
        assert b"read-only" in refused.data and refused.headers.get("Retry-After")
    # A sign-in not remembered yet cannot count its attempt: refused, saying why.
    refused, took = dav("PROPFIND", "/dav/", user="rolater", headers={"Depth": "0"})
    assert refused.status_code == 503 and took < BUDGET, (refused.status_code, took)

    for name in cluster.procs:
        cluster.start(name)
    cluster.leader(1)
    wait_for(lambda: dav("PUT", "/dav/after.bin", data=b"after")[0].status_code == 201, 20,
             "writes to work again", interval=0.3)
    assert dav("GET", "/dav/report.bin")[0].data == content
