"""Share links: one file or folder of a drive, read-only to anyone who holds the link.

A link is :data:`TOKEN_BYTES` random bytes, URL-safe base64 (256 bits, so
guessing one is hopeless and the lookup needs no key).  The store keeps only
its SHA-256, so a dump or a backup of the store hands out no working link.

Layout (two rows per link, each written by one conditioned ``mutate_row``)::

    row share/<link hash>           the global lookup: anonymous pages read it
        link                        {u: owner, id, k: f|d, c: created, x: expires (0: never),
                                     pw: argon2 hash of the password or ""}
    row {<owner>}/shares            the owner's list (the Shares page), on the owner's shard
        <link hash>                 {id, k, c, x, pw: True|False}

Why a row per link keyed by its hash: the registry's pattern (one global row in
the config group, :mod:`shards.model.registry`) suits a few dozen processes, not
a row that grows with every user's links and is read by every anonymous
visitor.  A row named by the hash falls on a shard by that hash, so links
spread evenly over the storage groups, no row is hot or grows without bound,
and a lookup is one ``get`` on the one group that holds it.

Order.  Create writes the owner's list first, then the lookup; revoke deletes
the lookup first, then the owner's list.  So a lookup row never exists without
the owner seeing it on the Shares page: a crash between the two writes of a
create leaves a listed link that opens nothing (its token was never shown; the
owner may revoke it), and a crash within a revoke leaves a listed link that
already opens nothing (revoking it again finishes).  Both writes are
conditioned on ``absent`` (create) or the version read (revoke), so a retry
or two frontends at once never overwrite a link.

An expiring link's lookup row is written with a time to live a day past its
expiry (the store forgets it by itself); pages check the expiry themselves.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from raftkv.errors import Refused

from ..errors import DriveError, NoSuchItem
from .reads import all_folders, get_file, get_folder
from .records import FILE, FOLDER, MAX_DEPTH, ROOT, Item, drive_row, index_col, is_id, pack, unpack

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["MAX_SHARES", "Share", "TooManyShares", "create_share", "link_hash", "lookup",
           "owned", "resolve", "revoke", "shares_row", "link_row", "valid_token"]

TOKEN_BYTES = 32           # 256 random bits per link
MAX_SHARES = 200           # links per user: the Shares page reads them (and their items) at once
LINK_COL = "link"
EXPIRED_KEPT = 86400.0     # seconds an expired link's lookup row outlives its expiry
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_CODES = {FILE: "f", FOLDER: "d"}
_KINDS = {"f": FILE, "d": FOLDER}
_hasher = PasswordHasher()  # argon2id with the library's defaults, as account passwords


class TooManyShares(DriveError, Refused):
    """The user holds :data:`MAX_SHARES` links already."""


@dataclass(frozen=True)
class Share:
    """One link, as the lookup row or the owner's list holds it."""

    hash: str              # SHA-256 of the token, hex
    owner: str
    item_id: str
    kind: str              # FILE or FOLDER
    created: float
    expires: float = 0.0   # time.time() after which the link opens nothing; 0: never
    password: str = ""     # argon2 hash ("" none); in the owner's list only "yes" or ""
    version: int = 0       # the cell's version when read

    @property
    def has_password(self) -> bool:
        return bool(self.password)

    def expired(self, now: float | None = None) -> bool:
        return bool(self.expires) and (time.time() if now is None else now) >= self.expires

    def check_password(self, password: str) -> bool:
        """Whether ``password`` is this link's (argon2; a link without one takes any)."""
        if not self.password:
            return True
        try:
            return _hasher.verify(self.password, password)
        except (VerificationError, InvalidHashError, UnicodeEncodeError):
            return False


def link_row(hash_: str) -> str:
    return f"share/{hash_}"


def shares_row(user: str) -> str:
    return f"{{{user}}}/shares"


def valid_token(token: str) -> bool:
    """True if ``token`` has the shape of a link's token (anything else is not looked up)."""
    return bool(_TOKEN_RE.fullmatch(token))


def link_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _decode(hash_: str, owner: str, value: bytes, version: int) -> Share | None:
    record = unpack(value)
    if not isinstance(record, dict) or record.get("k") not in _KINDS:
        return None
    password = record.get("pw", "")
    return Share(hash=hash_, owner=str(record.get("u", owner)), item_id=str(record.get("id", "")),
                 kind=_KINDS[record["k"]], created=float(record.get("c", 0.0)),
                 expires=float(record.get("x", 0.0)),
                 password=password if isinstance(password, str) else "yes" if password else "",
                 version=version)


def create_share(client: KeyValueStore, user: str, kind: str, item_id: str, *,
                 expires: float = 0.0, password: str = "",
                 now: float | None = None) -> tuple[str, Share]:
    """Make a link to ``user``'s file or folder; returns ``(token, share)``.

    The token is returned once and never stored: only its hash is.

    :raises NoSuchItem: no such item in ``user``'s drive.
    :raises TooManyShares: the user holds :data:`MAX_SHARES` links.
    """
    now = time.time() if now is None else now
    item = get_file(client, user, item_id) if kind == FILE else get_folder(client, user, item_id)
    if item is None:
        raise NoSuchItem("There is no such item in your drive.")
    if len(client.get_row(shares_row(user), limit=MAX_SHARES)) >= MAX_SHARES:
        raise TooManyShares(f"You can have at most {MAX_SHARES} share links; "
                            "revoke some to make new ones.")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    hash_ = link_hash(token)
    common: dict[str, Any] = {"id": item.id, "k": _CODES[item.kind], "c": now,
                              "x": float(expires)}
    hashed = _hasher.hash(password) if password else ""
    client.mutate_row(shares_row(user), [("absent", hash_)],
                      [("put", hash_, pack({**common, "pw": bool(hashed)}))])
    ttl = expires - now + EXPIRED_KEPT if expires else None
    client.mutate_row(link_row(hash_), [("absent", LINK_COL)],
                      [("put", LINK_COL, pack({**common, "u": user, "pw": hashed}))], ttl=ttl)
    return token, Share(hash_, user, item.id, item.kind, now, float(expires), hashed)


def lookup(client: KeyValueStore, token: str) -> Share | None:
    """The link ``token`` opens, or None (a malformed token is not looked up)."""
    if not valid_token(token):
        return None
    hash_ = link_hash(token)
    cell = client.get(link_row(hash_), LINK_COL)
    return None if cell is None else _decode(hash_, "", cell.value, cell.version)


def owned(client: KeyValueStore, user: str) -> list[Share]:
    """``user``'s links, newest first (passwords only as "yes" or "")."""
    shares = [share for hash_, cell in client.get_row(shares_row(user), limit=MAX_SHARES).items()
              if (share := _decode(hash_, user, cell.value, cell.version)) is not None]
    return sorted(shares, key=lambda s: s.created, reverse=True)


def shared_items(client: KeyValueStore, user: str, shares: list[Share]) -> dict[str, Item]:
    """The items ``shares`` point at that still exist, by id: one ``get_cells``."""
    keys = [(drive_row(user), index_col(s.kind, s.item_id)) for s in shares if s.item_id != ROOT]
    found = {s.item_id: Item(id=ROOT, kind=FOLDER, name="", parent="")
             for s in shares if s.item_id == ROOT}
    for (_, column), cell in zip(keys, client.get_cells(keys) if keys else [], strict=True):
        value = getattr(cell, "value", None)  # None: the item is gone
        record = unpack(value) if value is not None else None
        if isinstance(record, dict):
            kind = FOLDER if column.startswith("d:") else FILE
            found[column[2:]] = Item(id=column[2:], kind=kind, name=str(record.get("n", "")),
                                     parent=str(record.get("p", "")),
                                     size=int(record.get("size", 0)))
    return found


def revoke(client: KeyValueStore, user: str, hash_: str) -> bool:
    """End ``user``'s link ``hash_``: lookup first, then the list (see the module).

    Returns whether the user had such a link.  Another user's hash is left alone.
    """
    if not _HASH_RE.fullmatch(hash_):
        return False
    cell = client.get(link_row(hash_), LINK_COL)
    if cell is not None:
        share = _decode(hash_, "", cell.value, cell.version)
        if share is None or share.owner != user:
            return False
        client.mutate_row(link_row(hash_), [("version", LINK_COL, cell.version)],
                          [("delete", LINK_COL)])
    return client.delete(shares_row(user), hash_) or cell is not None


def resolve(client: KeyValueStore, share: Share, kind: str, item_id: str) -> tuple[Item, list[Item]]:
    """An item reached through ``share`` and the folders from the shared one down to it
    (its parent for a file, itself for a folder).

    The item's parents are walked up, at most :data:`MAX_DEPTH` steps, until the
    shared folder: an item anywhere else in the owner's drive is not found.

    :raises NoSuchItem: the item is not within what was shared, or is gone.
    """
    gone = NoSuchItem("There is no such item in this share.")
    if share.kind == FILE:
        item = get_file(client, share.owner, item_id) if kind == FILE else None
        if item is None or item.id != share.item_id:
            raise gone
        return item, []
    folders = all_folders(client, share.owner)  # one read of every folder's parent
    item = folders.get(item_id) if kind == FOLDER else get_file(client, share.owner, item_id)
    if item is None or (kind == FOLDER and item_id != ROOT and not is_id(item_id)):
        raise gone
    path: list[Item] = []
    current = item.id if kind == FOLDER else item.parent
    for _ in range(MAX_DEPTH + 2):
        folder = folders.get(current)
        if folder is None:
            raise gone
        path.append(folder)
        if current == share.item_id:
            path.reverse()
            return item, path
        if current == ROOT:
            raise gone
        current = folder.parent
    raise gone
