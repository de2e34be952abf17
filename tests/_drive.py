"""Drive contents for the model's unit tests: a file from bytes, the usual small tree."""

from __future__ import annotations

import io

from shards.model import drive
from shards.model.drive import ROOT


def stored(client, user: str, parent: str, name: str, content: bytes = b"hello", *,
           quota: int = 1 << 20, ctype: str = "application/octet-stream") -> drive.Item:
    """``content`` stored as the file ``name`` in ``user``'s folder ``parent``."""
    return drive.store_file(client, user, parent, name, io.BytesIO(content), size=len(content),
                            quota=quota, ctype=ctype)


def small_tree(client, user: str) -> dict[str, drive.Item]:
    """docs/{a.txt, work/{plan.txt}} and private/secret.txt (text files saying "hello")."""
    docs = drive.create_folder(client, user, ROOT, "docs")
    work = drive.create_folder(client, user, docs.id, "work")
    private = drive.create_folder(client, user, ROOT, "private")
    files = {key: stored(client, user, folder.id, name, ctype="text/plain")
             for key, folder, name in (("a", docs, "a.txt"), ("plan", work, "plan.txt"),
                                       ("secret", private, "secret.txt"))}
    return {"docs": docs, "work": work, "private": private, **files}
