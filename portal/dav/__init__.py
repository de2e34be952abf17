"""WebDAV at ``/dav/`` (portal layer): the signed-in user's drive for file managers,
sync tools and phones, served by WsgiDAV on :mod:`shards.model.drive`.

Modules: :mod:`.door` (sign-in, bounds, refusals; mounts WsgiDAV),
:mod:`.credentials` (HTTP Basic with app passwords, remembered per worker),
:mod:`.paths` (paths to items, errors to DAV answers), :mod:`.resources` (the
provider: folders and files), :mod:`.writing` (PUT and COPY of bytes),
:mod:`.locks` and :mod:`.props` (WsgiDAV's lock storage and property manager, kept in
the store), :mod:`.shared` (the folders shared with the user, under "Shared with me").
docs/dav.md describes the door.
"""

from .door import DavDoor as DavDoor
from .paths import MOUNT as MOUNT

__all__ = ["MOUNT", "DavDoor"]
