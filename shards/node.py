"""``raftkv-node``: one storage replica, and the reconfigurer that moves its group's shards.

The replica itself is :mod:`raftkv.server`; this layer adds what needs the
shard configurations: with a config group in the cluster file, every storage
replica runs a :class:`~shards.reconfig.Reconfigurer` (it acts while its
replica leads).  Config-group replicas and clusters without a config group run
the plain replica.
"""

from __future__ import annotations

from pathlib import Path

import click

from raftkv.cluster import CONFIG_GROUP_ID, ClusterConfig
from raftkv.server import Companion, NodeServer, node_options, run_node

from .reconfig import Reconfigurer


def companions(cluster: ClusterConfig, server: NodeServer) -> list[Companion]:
    if cluster.config_group is None or server.group_id == CONFIG_GROUP_ID:
        return []
    return [Reconfigurer(cluster, server.group_id, server.replica.is_leader)]


@click.command()
@node_options
def main(config_path: str, name: str, data_dir: Path) -> None:
    """Run one storage replica until SIGTERM or SIGINT."""
    run_node(config_path, name, data_dir, companions)


if __name__ == "__main__":
    main()
