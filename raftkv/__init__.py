"""raftkv -- the lowest layer: one Raft-replicated group of the key-value store.

Public API: :class:`Client` (talks to one group), :class:`Cell`, :class:`StaleCell`,
:class:`Unchanged`, the store
interface every client implements (:class:`KeyValueStore`, :mod:`raftkv.interface`), and the error
hierarchy in :mod:`raftkv.errors`.  Only :mod:`raftkv.node` imports pysyncobj;
importing this package does not.
"""

from .client import Client as Client
from .errors import *  # noqa: F403 - the error hierarchy is part of the public API
from .interface import Cell as Cell
from .interface import KeyValueStore as KeyValueStore
from .interface import ShardedStore as ShardedStore
from .interface import StaleCell as StaleCell
from .interface import Unchanged as Unchanged
