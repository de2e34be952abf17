"""``raftcloud-smtpd``: the SMTP process (inbound delivery now; submission later).

Runs an aiosmtpd :class:`~aiosmtpd.controller.Controller` (its own event loop
in its own thread) per listening port, registers itself in the node registry
and heartbeats, and stops cleanly on SIGTERM or SIGINT.

The submission port (``cluster.smtpd.submission``, AUTH against accounts) and
the outbound delivery worker come in a later issue: each becomes one more
entry in :meth:`SmtpServer.start` -- a handler in its own module and a second
Controller, or a worker thread -- sharing this process's store client and
thread pool.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import click
from aiosmtpd.controller import Controller

from raftkv.cluster import CONFIG_ENV, split_addr
from raftkv.errors import ConfigError
from shards import Client
from shards.model.registry import Heartbeat
from shards.service import run_service

from .handler import InboundConfig, InboundHandler

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

log = logging.getLogger("smtpd.server")  # also under "python -m"

STORE_THREADS = 8  # concurrent store calls; each SMTP session needs one only briefly


class SmtpServer:
    """Every listener and background thread of one smtpd process.

    :param client: the store client; owned by the caller, not closed by :meth:`stop`.
    :param hostname: our name in the SMTP greeting and in Received headers.
    :raises ConfigError: the cluster file has no ``[smtpd]`` section.
    """

    def __init__(self, cluster: ClusterConfig, client: Client, *,
                 hostname: str | None = None) -> None:
        if cluster.smtpd is None:
            raise ConfigError("the cluster file has no [smtpd] section")
        self.settings = cluster.smtpd
        self.hostname = hostname or socket.getfqdn()
        self.inbound_config = InboundConfig.from_cluster(cluster, self.hostname)
        self._executor = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="smtpd-store")
        host, port = split_addr(self.settings.inbound)
        self.inbound = Controller(
            InboundHandler(self.inbound_config, client, executor=self._executor),
            hostname=host, port=port, server_hostname=self.hostname, ident="raftcloud-smtpd",
            data_size_limit=self.inbound_config.max_message_size,
            # 8BITMIME and SMTPUTF8 cost nothing here: we store bytes as received.
            enable_SMTPUTF8=True,
        )
        self._heartbeat = Heartbeat(client, kind="smtpd", name=self.settings.name,
                                    addr=self.settings.inbound,
                                    info={"inbound": self.settings.inbound, "pid": os.getpid(),
                                          "host": socket.gethostname()})

    def start(self) -> None:
        """Start listening (raises OSError if the port is taken) and heartbeating."""
        self.inbound.start()
        self._heartbeat.start()
        log.info("smtpd %s listening on %s for %s", self.settings.name, self.settings.inbound,
                 ", ".join(self.inbound_config.domains))

    def stop(self) -> None:
        """Close the listeners, abort open sessions, stop the heartbeat."""
        self.inbound.stop(no_assert=True)
        self._heartbeat.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("smtpd %s stopped", self.settings.name)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              default=lambda: os.environ.get(CONFIG_ENV), show_default=f"${CONFIG_ENV}",
              help="The cluster file.")
@click.option("--hostname", default=None, help="Our name in greetings and Received headers "
              "(default: this machine's FQDN).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(config_path: str | None, hostname: str | None, log_level: str) -> None:
    """Run the cluster's SMTP server: inbound mail for local accounts."""
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        # aiosmtpd logs every command, addresses included, at INFO: keep that for debugging.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    run_service("raftcloud-smtpd", config_path,
                lambda cluster, client: SmtpServer(cluster, client, hostname=hostname))


if __name__ == "__main__":
    main()
