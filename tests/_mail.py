"""smtpd in the test process, for tests of what arrives by SMTP."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from raftkv.cluster import ClusterConfig, SmtpdConfig
from smtpd.server import SmtpServer

from ._procs import NO_DNS, free_port


@contextmanager
def inprocess_smtpd(cluster: ClusterConfig, client: Any, **settings: Any) -> Iterator[SmtpdConfig]:
    """smtpd's inbound port (and whatever ``settings`` add) in this process, on fresh ports."""
    config = SmtpdConfig(**{"name": f"smtpd-{secrets.token_hex(3)}", "resolver": NO_DNS,
                            "inbound": f"127.0.0.1:{free_port()}", **settings})
    server = SmtpServer(dataclasses.replace(cluster, smtpd=config), client,
                        hostname="mx.raftcloud.test")
    server.start()
    try:
        yield config
    finally:
        server.stop()
