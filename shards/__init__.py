"""shards -- the routing layer: one client for every group of the cluster.

Rows map to shards (:func:`raftkv.keys.shard_of`, with ``{hash tags}``), shards
to groups (:class:`ShardMap`).  Portal, smtpd and the balancer use
:class:`Client`; like :class:`raftkv.Client` it implements the store interface
(:mod:`raftkv.interface`).
"""

from raftkv.interface import Cell as Cell

from .client import Client as Client
from .shardmap import ShardMap as ShardMap
