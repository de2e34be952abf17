"""raftkv -- the lowest layer: one Raft-replicated group of the key-value store.

Public API: :class:`Client` (talks to one group), :class:`Cell`, :class:`StaleCell`, and the error
hierarchy in :mod:`raftkv.errors`.  Only :mod:`raftkv.node` imports pysyncobj;
importing this package does not.
"""

from .client import Cell as Cell
from .client import Client as Client
from .client import StaleCell as StaleCell
from .errors import *  # noqa: F403 - the error hierarchy is part of the public API
