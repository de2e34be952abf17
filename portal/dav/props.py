"""WsgiDAV's property manager on the store: dead properties set through one frontend
are seen through every other.

WsgiDAV names a resource by its URL path; :mod:`shards.model.davprops` keeps the
properties by drive item id, so a rename or a move takes them along with no copy.  A
*resolver* turns a URL path into ``(owner, item id)``: the WebDAV provider's own
mapping when it has one (it knows which drive a ``/dav/`` path is in), else
:class:`DriveResolver`, which walks the authenticated user's drive from the root, one
cell per folder level.

Each request keeps what it read in its WSGI environ (PROPFIND asks for names, then each
value: one ``get_row`` per resource answers all of it) and what its PROPPATCH dry run
would change (WsgiDAV checks every property before writing any, so the caps are checked
for the request as a whole).

Plugged in with WsgiDAV's config::

    "property_manager": StorePropertyManager(client),            # or (client, resolve)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)

from raftkv.errors import ConditionFailed
from shards.model import davprops
from shards.model.drive.records import MAX_DEPTH

from .paths import resolve, segments

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

AUTH_USER = "wsgidav.auth.user_name"
# What one request has read, and its PROPPATCH's pending changes, in its environ.
_READ = "raftcloud.davprops.read"
_PENDING = "raftcloud.davprops.pending"

Item = tuple[str, str]                       # (owner of the drive, item id)
Resolve = Callable[[str, dict[str, Any]], Item | None]


class DriveResolver:
    """Maps ``<share>/<path>`` (a WsgiDAV ref URL, percent-encoded) to an item of the
    authenticated user's own drive, by the door's walk (:func:`.paths.resolve`: one
    ``get`` of the entry cell per level).  The door itself resolves with its provider's
    ``item_at``, which keeps what the request found; this is for other WsgiDAV apps."""

    def __init__(self, client: KeyValueStore, share: str = "/dav") -> None:
        self._client = client
        self._share = "/" + share.strip("/") if share.strip("/") else ""

    def __call__(self, norm_url: str, environ: dict[str, Any]) -> Item | None:
        user = environ.get(AUTH_USER)
        try:
            path = unquote(norm_url, errors="strict") if isinstance(norm_url, str) else ""
        except UnicodeDecodeError:
            return None
        if not user or not (path == self._share or path.startswith(self._share + "/")):
            return None
        names = segments(path[len(self._share):])
        if len(names) > MAX_DEPTH + 1:
            return None
        found = resolve(self._client, str(user), "/".join(names))
        return None if found is None else (str(user), found.item.id)


class StorePropertyManager:
    """WsgiDAV's PropertyManager interface (``wsgidav.prop_man.property_manager``) on the
    store.  Values are the property elements as XML bytes, as WsgiDAV hands them over."""

    def __init__(self, client: KeyValueStore, resolve: Resolve | None = None, *,
                 share: str = "/dav") -> None:
        self._client = client
        self._resolve = resolve or DriveResolver(client, share)

    def __repr__(self) -> str:
        return "StorePropertyManager"

    def get_properties(self, norm_url: str, environ: dict[str, Any] | None = None) -> list[str]:
        """The names of the resource's dead properties."""
        return list(self._all(norm_url, environ or {}))

    def get_property(self, norm_url: str, name: str,
                     environ: dict[str, Any] | None = None) -> bytes | None:
        """One property's value (XML bytes), or None."""
        return self._all(norm_url, environ or {}).get(name)

    def write_property(self, norm_url: str, name: str, property_value: bytes,
                       dry_run: bool = False, environ: dict[str, Any] | None = None) -> None:
        """Set a property; with ``dry_run``, only check that it would be accepted."""
        environ = {} if environ is None else environ
        item = self._item(norm_url, environ)
        if item is None:
            raise DAVError(HTTP_NOT_FOUND, "No such resource.")
        pending = environ.setdefault(_PENDING, {}).setdefault(item, {})
        with _mapped():
            davprops.write(self._client, item[0], item[1], name, property_value,
                           dry_run=dry_run, pending=pending if dry_run else None)
        if dry_run:
            pending[name] = len(property_value)
        else:
            environ.get(_READ, {}).pop(item, None)

    def remove_property(self, norm_url: str, name: str, dry_run: bool = False,
                        environ: dict[str, Any] | None = None) -> None:
        """Remove a property (one that does not exist is no error)."""
        environ = {} if environ is None else environ
        item = self._item(norm_url, environ)
        if item is None:
            return
        with _mapped():
            davprops.remove(self._client, item[0], item[1], name, dry_run=dry_run)
        if dry_run:
            environ.setdefault(_PENDING, {}).setdefault(item, {})[name] = None
        else:
            environ.get(_READ, {}).pop(item, None)

    def remove_properties(self, norm_url: str, environ: dict[str, Any] | None = None) -> None:
        """Remove all of a resource's properties: call it *before* the item is deleted
        (afterwards its path names nothing; ``davprops.purge_orphans`` finds the rest)."""
        environ = {} if environ is None else environ
        item = self._item(norm_url, environ)
        if item is not None:
            with _mapped():
                davprops.remove_all(self._client, item[0], item[1])
            environ.get(_READ, {}).pop(item, None)

    def copy_properties(self, src_url: str, dest_url: str,
                        environ: dict[str, Any] | None = None) -> None:
        """Give the copy (which must exist by now) the source's properties."""
        environ = {} if environ is None else environ
        src, dest = self._item(src_url, environ), self._item(dest_url, environ)
        if src is None or dest is None or src == dest:
            return
        with _mapped():
            davprops.copy_all(self._client, src[0], src[1], dest[0], dest[1])
        environ.get(_READ, {}).pop(dest, None)

    def move_properties(self, src_url: str, dest_url: str, with_children: bool,
                        environ: dict[str, Any] | None = None) -> None:
        """Nothing to do: a moved item keeps its id, and its properties are keyed by it."""

    def _item(self, norm_url: str, environ: dict[str, Any]) -> Item | None:
        return self._resolve(norm_url, environ)

    def _all(self, norm_url: str, environ: dict[str, Any]) -> dict[str, bytes]:
        item = self._item(norm_url, environ)
        if item is None:
            return {}
        seen = environ.setdefault(_READ, {})
        if item not in seen:
            with _mapped():
                seen[item] = davprops.read_all(self._client, item[0], item[1])
        found: dict[str, bytes] = seen[item]
        return found


@contextmanager
def _mapped() -> Iterator[None]:
    """The model's refusals as WebDAV answers (RFC 4918, 9.2.1: 403 and 507)."""
    try:
        yield
    except davprops.BadProperty as e:
        raise DAVError(HTTP_FORBIDDEN, str(e)) from e
    except (davprops.PropertyTooLarge, davprops.TooManyProperties) as e:
        raise DAVError(HTTP_INSUFFICIENT_STORAGE, str(e)) from e
    except ConditionFailed as e:
        raise DAVError(HTTP_SERVICE_UNAVAILABLE, "The properties are busy: try again.") from e
