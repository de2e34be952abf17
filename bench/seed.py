"""A signed-up user's mail and files for bench.portal, written through the data model.

The inbox is filled with :func:`shards.model.mailbox.deliver`, message by message,
as smtpd delivers.  A folder of thousands of files is filled faster than uploads
could: the bytes of every file first, many puts in flight, then the names in
batches of :data:`LINK_BATCH` files per ``mutate_row`` built from the drive's own
record functions (:func:`shards.model.drive.records.link`, conditioned on the
quota cell's version as :func:`shards.model.drive.changes.store_file` links one
file), so the rows look exactly as if each file had been uploaded.  Everything
here is bounded in count and by a deadline.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from shards.model import drive, mailbox
from shards.model.drive.reads import usage_cell
from shards.model.drive.records import (
    DATA_COL,
    FILE,
    USAGE_COL,
    Item,
    content_row,
    drive_row,
    link,
    new_id,
    pack,
)

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

# Files linked per mutate_row: a file's three cells take about 280 bytes, and one request
# must fit a Raft entry (raftkv.node.ENTRY_CAP, 32 KiB).
LINK_BATCH = 64
PUTS_IN_FLIGHT = 32  # content puts at once while filling a folder
_WORDS = ("meeting notes budget review draft invoice travel schedule report quarter team "
          "project update call agenda summary figures plan deadline offer contract").split()


class SeedTimeout(RuntimeError):
    """Seeding ran past its deadline."""


def _check(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise SeedTimeout(f"{what} ran past its deadline")


def message(rng: random.Random, to: str, number: int) -> bytes:
    """A plain-text message of 1 to 4 KB, as a person writes one."""
    msg = EmailMessage()
    sender = rng.choice(("alice", "bob", "carol", "dave", "erin", "frank"))
    msg["From"] = f"{sender.title()} Example <{sender}@example.org>"
    msg["To"] = to
    msg["Subject"] = f"{' '.join(rng.choices(_WORDS, k=4)).capitalize()} ({number})"
    msg["Date"] = format_datetime(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=number))
    msg["Message-ID"] = make_msgid(domain="example.org")
    paragraphs = ["\n".join(" ".join(rng.choices(_WORDS, k=12)) for _ in range(rng.randint(2, 6)))
                  for _ in range(rng.randint(2, 5))]
    msg.set_content("Hello,\n\n" + "\n\n".join(paragraphs) + f"\n\n-- \n{sender}\n")
    return msg.as_bytes()


def fill_inbox(client: KeyValueStore, user: str, address: str, count: int,
               deadline: float, seed: int = 16) -> list[str]:
    """Deliver ``count`` messages to ``user``'s inbox; their ids, oldest first."""
    rng = random.Random(seed)
    ids = []
    for number in range(count):
        _check(deadline, f"delivering {count} messages")
        ids.append(mailbox.deliver(client, user, message(rng, address, number)))
    return ids


def fill_folder(client: KeyValueStore, user: str, name: str, files: int,
                deadline: float) -> str:
    """A new folder ``name`` in ``user``'s root holding ``files`` small text files; its id."""
    folder = drive.create_folder(client, user, drive.ROOT, name)
    now = time.time()
    contents = [f"file {i} of {name}\n".encode() * (1 + i % 40) for i in range(files)]
    items = [Item(id=new_id(), kind=FILE, name=f"file {i:05}.txt", parent=folder.id,
                  size=len(content), ctype="text/plain", created=now - i, modified=now - i)
             for i, content in enumerate(contents)]
    # The bytes first, as store_file stores them: once a name is visible, its file is readable.
    with ThreadPoolExecutor(PUTS_IN_FLIGHT) as pool:
        _check(deadline, f"filling {name}")
        list(pool.map(lambda pair: client.put(content_row(user, pair[0].id), DATA_COL, pair[1]),
                      zip(items, contents, strict=True),
                      timeout=max(0.0, deadline - time.monotonic())))
    for start in range(0, files, LINK_BATCH):
        _check(deadline, f"filling {name}")
        batch = items[start:start + LINK_BATCH]
        used, version = usage_cell(client, user)
        # link() bumps the folder's header for every file: one put of it per batch will do.
        mutations: dict[Any, tuple[Any, ...]] = {m[1]: m for item in batch
                                                 for m in link(item, now)}
        mutations[USAGE_COL] = ("put", USAGE_COL, pack(used + sum(i.size for i in batch)))
        client.mutate_row(drive_row(user), [("version", USAGE_COL, version)],
                          list(mutations.values()))
    return folder.id
