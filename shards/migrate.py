"""Changing the configuration from outside: publish it, then watch the groups move.

``raftkv-ctl join|leave|move`` computes the next configuration
(:mod:`shards.config`) and stores it in the config group.  From there the
storage groups take over (:mod:`shards.reconfig`): each learns it, freezes what
it gives away, pulls what it receives and drops what its new owners have
adopted.  :meth:`Migrator.reconfigure` then waits, reporting progress, until
every group involved has settled the new configuration.  Nothing depends on
this process staying alive: interrupting the wait leaves the move running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from raftkv.errors import ConfigError, UnavailableError

from .config import Config, ConfigStore
from .reconfig import adopted, first_config, settled

if TYPE_CHECKING:
    from .client import Client

Progress = Callable[[int, int], None]  # (shards moved so far, shards moving)
WAIT = 600.0  # seconds a change may take before reconfigure gives up waiting (it goes on)
POLL = 0.1


class Migrator:
    """Configuration changes for one cluster, through a :class:`shards.Client`."""

    def __init__(self, client: Client, progress: Progress | None = None, *,
                 wait: float = WAIT) -> None:
        config_group = client.config_group()
        if config_group is None:
            raise ConfigError("the cluster file has no [config_group]: shards cannot move")
        self.client = client
        self.store = ConfigStore(config_group, client.cluster.shards)
        self.progress = progress or (lambda done, total: None)
        self.wait = wait

    def current(self) -> Config:
        """The latest configuration, storing configuration 1 when there is none."""
        config = self.store.query()
        return config if config.num > 0 else self.store.bootstrap(first_config(self.client.cluster))

    def reconfigure(self, step: Callable[[Config], Config]) -> Config:
        """Store ``step(latest)`` as the next configuration; return once the groups have moved."""
        self.current()
        target = self.store.change(step)
        self.wait_for(target)
        self.client.use_config(target)
        return target

    def wait_for(self, target: Config) -> None:
        """Until every group of ``target`` and of the one before has settled ``target``."""
        previous = self.store.query(target.num - 1)
        moving = [s for s, owner in enumerate(target.owners) if previous.owners[s] != owner]
        groups = {**previous.groups, **target.groups}
        deadline = time.monotonic() + self.wait
        reported = -1
        while True:
            states = {}
            for gid, addrs in groups.items():
                try:
                    states[gid] = self.client.group_client(gid, addrs).shard_state()
                except UnavailableError:
                    pass  # a group that is down is waited for like one that is slow
            done = sum(1 for s in moving if target.owners[s] in states
                       and adopted(states[target.owners[s]], target.num, s))
            if done != reported:
                self.progress(done, len(moving))
                reported = done
            if len(states) == len(groups) and all(settled(st, target.num)
                                                  for st in states.values()):
                return
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"configuration {target.num} is stored and moving ({done}/{len(moving)} "
                    f"shards so far), but not settled after {self.wait:.0f} s; "
                    "`raftkv-ctl status` shows where each group is")
            time.sleep(POLL)
