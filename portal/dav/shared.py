"""Folders shared with the signed-in user, at ``/dav/Shared with me/`` (issue 20).

The grants are :mod:`shards.model.drive.grants`.  ``/dav/Shared with me/`` is a
virtual collection of the door's own, read-only itself, with one member per folder
shared with the user (``grants.shared_with``: each pointer checked against its
owner's grant cell, read by every request, never cached), named
``<folder> (<owner>)``; the owner's whole drive, shared, is ``Drive (<owner>)``.
Two shares of one owner with the same name (two folders called Photos) do not
clash: the one granted first keeps the plain name, every later one is
``<folder> (<owner>, <folder id>)``.  Since a user name holds no comma or space,
the two forms never meet either.

Below a shared folder a path is walked down by names in the *owner's* drive row
(:func:`.paths.descend`), so nothing above the shared folder is reachable; every
change re-reads the grant (``grants.granted``) just before it is made, so a revoke
or a turn to read-only stops the next write on any frontend.

A user's own top-level item called "Shared with me" (made on the web page, which
knows no such rule) is not hidden: it is listed and reached as
``Shared with me (mine)`` -- unless a real item of that name exists too, which then
wins and the other is reachable from the web page only.  Over WebDAV, nothing new
can be made under the name "Shared with me" at the top: the virtual entry is there.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote

from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_NOT_FOUND, DAVError

from raftkv.interface import Cell
from shards.model import drive
from shards.model.drive import ROOT, grants
from shards.model.drive.records import entry_col, root_item

from .locks import Mount
from .paths import USER_KEY, Found, descend, found_entry, segments, store_errors

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

SHARED = "Shared with me"        # the virtual collection at the top of every user's /dav/
MINE = "Shared with me (mine)"   # how a user's own top-level "Shared with me" is reached
_TREES = "raftcloud.dav.shared.trees"  # environ: this request's shared folders by name
_ALIAS = "raftcloud.dav.shared.alias"  # environ: the item MINE names, or None
_OWNER_PATHS = "raftcloud.dav.shared.owner-paths"  # environ: tree -> its owner's path


@dataclass(frozen=True)
class Tree:
    """A folder shared with the signed-in user, as a member of ``/Shared with me/``."""

    owner: str          # whose drive row it lives in (and whose quota it fills)
    folder: Found       # the shared folder in the owner's drive
    name: str           # its name below /Shared with me/
    writable: bool      # the grant's mode as this request read it

    @property
    def key(self) -> tuple[str, str]:
        return self.owner, self.folder.item.id

    def check(self, client: KeyValueStore, recipient: str, *, write: bool) -> None:
        """The grant, read now: 404 once revoked, 403 for a write on a read-only one."""
        with store_errors():
            try:
                grants.granted(client, recipient, self.owner, self.folder.item.id, write=write)
            except grants.NotAllowed as exc:
                raise DAVError(HTTP_FORBIDDEN, str(exc)) from None
            except drive.NoSuchItem as exc:
                raise DAVError(HTTP_NOT_FOUND, str(exc)) from None


@dataclass(frozen=True)
class Located:
    """What a path of the signed-in user's /dav/ names."""

    owner: str                # the drive row the item is in
    found: Found | None       # None: the virtual /Shared with me/ itself
    tree: Tree | None = None  # set: in (or at) a folder shared with the user


def tree_names(shared: list[tuple[grants.Grant, drive.Item]]) -> dict[str, tuple[grants.Grant,
                                                                              drive.Item]]:
    """Each shared folder's name below /Shared with me/ (see the module for the rule)."""
    named: dict[str, tuple[grants.Grant, drive.Item]] = {}
    for grant, item in sorted(shared, key=lambda gi: (gi[0].created, gi[1].id)):
        plain = f"{item.name or 'Drive'} ({grant.owner})"
        name = plain if plain not in named else f"{item.name or 'Drive'} ({grant.owner}, {item.id})"
        named[name] = (grant, item)
    return named


def trees(client: KeyValueStore, user: str, environ: dict[str, Any]) -> dict[str, Tree]:
    """The folders shared with ``user`` by name, read once per request: the pointers and
    grants (``grants.shared_with``), then every shared folder's entry in one read."""
    if _TREES in environ:
        return cast("dict[str, Tree]", environ[_TREES])
    with store_errors():
        named = tree_names(grants.shared_with(client, user))
        keys = [(drive.drive_row(g.owner), entry_col(i.parent, i.name))
                for g, i in named.values() if i.id != ROOT]
        cells = iter(client.get_cells(keys) if keys else [])
    found: dict[str, Tree] = {}
    for name, (grant, item) in named.items():
        if item.id == ROOT:
            folder: Found | None = Found(root_item(), 0)
        else:
            cell = next(cells)
            folder = found_entry(item.parent, item.name, cell) if isinstance(cell, Cell) else None
        if folder is not None and folder.item.id == item.id:
            found[name] = Tree(grant.owner, folder, name, grant.writable)
    environ[_TREES] = found
    return found


def _alias_top(client: KeyValueStore, user: str, environ: dict[str, Any]) -> Found | None:
    """The own item that :data:`MINE` names: a real one of that name, else the user's
    own top-level "Shared with me"."""
    if _ALIAS not in environ:
        row = drive.drive_row(user)
        with store_errors():
            mine, shared = client.get_cells([(row, entry_col(ROOT, MINE)),
                                             (row, entry_col(ROOT, SHARED))])
        cell, name = (mine, MINE) if isinstance(mine, Cell) else (shared, SHARED)
        environ[_ALIAS] = found_entry(ROOT, name, cell) if isinstance(cell, Cell) else None
    return cast("Found | None", environ[_ALIAS])


def locate(client: KeyValueStore, user: str, path: str,
           environ: dict[str, Any]) -> Located | None:
    """What ``path`` (below the mount) names for ``user``, or None (nothing there)."""
    names = tuple(segments(path))
    with store_errors():
        if names[:1] == (SHARED,):
            if len(names) == 1:
                return Located(user, None)
            tree = trees(client, user, environ).get(names[1])
            if tree is None:
                return None
            found = descend(client, tree.owner, tree.folder, names[2:], environ,
                            known=names[:2])
            return None if found is None else Located(tree.owner, found, tree)
        if names[:1] == (MINE,):
            top = _alias_top(client, user, environ)
            found = None if top is None else descend(client, user, top, names[1:], environ,
                                                      known=names[:1])
        else:
            found = descend(client, user, Found(root_item(), 0), names, environ)
    return None if found is None else Located(user, found)


def owner_path(client: KeyValueStore, tree: Tree, environ: dict[str, Any]) -> str:
    """The shared folder's path in its owner's own /dav/ ("" for the owner's root), as
    WsgiDAV's lock roots are written (percent-encoded): the owner's and the recipient's
    locks on one item are kept under one key (portal.dav.locks)."""
    memo = environ.setdefault(_OWNER_PATHS, {})
    if tree.key not in memo:
        with store_errors():  # one read of the owner's folder index, whatever the depth
            try:
                crumbs = drive.folder_path(client, tree.owner, tree.folder.item.id)
            except drive.NoSuchItem:
                raise DAVError(HTTP_NOT_FOUND, "The shared folder is not there any more.") from None
        names = [item.name for item in crumbs[1:]]
        if names and names[0] == SHARED:
            names[0] = MINE  # the owner reaches her own "Shared with me" by its alias
        memo[tree.key] = quote("/" + "/".join(names)) if names else ""
    return cast("str", memo[tree.key])


def owner_at(client: KeyValueStore, user: str, path: str, environ: dict[str, Any]) -> str:
    """Whose drive (and quota) a PUT to ``path`` fills: the user's, or a sharing owner's."""
    names = segments(path)
    tree = trees(client, user, environ).get(names[1]) if names[:1] == [SHARED] and len(
        names) > 1 else None
    return user if tree is None else tree.owner


class RequestMounts:
    """The lock storage's view of the folders shared with a request's user
    (:class:`.locks.Mounts`): which prefix of WsgiDAV's lock roots is whose folder."""

    def __init__(self, client: KeyValueStore, environ: dict[str, Any]) -> None:
        self._client, self._environ = client, environ

    def mount(self, path: str) -> Mount | None:
        parts = path.split("/")  # a lock root: percent-encoded, so names hold no "/"
        if len(parts) < 3 or unquote(parts[1]) != SHARED:
            return None
        name = unicodedata.normalize("NFC", unquote(parts[2]))
        tree = trees(self._client, self._environ[USER_KEY], self._environ).get(name)
        if tree is None:
            return None
        return Mount(tree.owner, "/".join(parts[:3]),
                     owner_path(self._client, tree, self._environ))

    def request_mounts(self) -> list[Mount]:
        found = self.mount(quote(self._environ.get("PATH_INFO", "")))
        return [] if found is None else [found]
