"""How every long-running app process (smtpd, balancer) starts, waits and stops."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Protocol

import click

from raftkv.cluster import ClusterConfig, load_cluster
from raftkv.errors import RaftKVError
from raftkv.metrics import serve_from_env

from .client import Client

log = logging.getLogger(__name__)


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def wait_for_shutdown() -> None:
    """Block until SIGTERM (the supervisor's stop) or SIGINT (Ctrl-C) arrives."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda sig, frame: stop.set())
    stop.wait()


def run_service(prog: str, config_path: str | None,
                build: Callable[[ClusterConfig, Client], Service]) -> None:
    """Load the cluster, start the service, serve until signalled, stop it cleanly.

    A bad cluster file or an unusable address is one line on stderr and exit 1.
    """
    try:
        cluster = load_cluster(config_path)
        client = Client(cluster)
        service = build(cluster, client)
        service.start()
        metrics = serve_from_env()  # where the launcher said, if it did (raftkv/metrics.py)
    except (RaftKVError, OSError) as exc:
        click.echo(f"{prog}: {exc}", err=True)
        sys.exit(1)
    try:
        wait_for_shutdown()
        log.info("%s shutting down", prog)
    finally:
        if metrics is not None:
            metrics.shutdown()
        service.stop()
        client.close()
