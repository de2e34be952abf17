"""A worker's parsed and sanitised messages, each used only while its raw cell's version holds.

Parsing a stored message (RFC 5322, the ``email`` package's ``default``
policy) and cleaning its HTML cost the mail view most of its time -- several
times a page's store reads and its rendering together (README, "bench.portal").
A delivered message's bytes never change, so what the page shows of them (the
decoded headers, the plain part escaped and the HTML part sanitised for its
sandboxed frame, the attachments' names and sizes) is kept here, per (user,
message id), under the version of the message's raw cell.

Nothing here is shown unconfirmed: the page names the raw cell in its store
read with the version kept here as ``known`` (:mod:`.pagestore`), and uses the
kept view only when the store answers ``Unchanged`` at that very version.
Versions grow strictly across deletes and re-creates (``docs/store-promises.md``,
"The interface"), so a different message under the same id could never match.  The
user is part of the key as it is of the cell's row: a view is only ever found
by the user whose row the store just confirmed.

Bounded twice: in entries, and in the characters kept (a message's text may be
up to :data:`portal.mail.BODY_CHARS`); a view larger than a tenth of the budget
is not kept at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from markupsafe import Markup

from .cache import VersionedCache

VIEWS = 512                    # messages each worker keeps at most
VIEW_CHARS = 16 * 1024 * 1024  # and characters of their text in all


@dataclass(frozen=True)
class MessageView:
    """What the mail view shows of a message: never changed once made (it is shared)."""

    text: Markup | None                      # the plain part, escaped; None if it has none
    html: Markup | None                      # the HTML part, sanitised for its frame (.mailhtml)
    remote_images: bool                      # the HTML names images on other sites
    headers: tuple[tuple[str, str], ...]     # (name, decoded text) of the shown headers
    attachments: tuple[tuple[str, int], ...]  # (display name, size in bytes), in order

    @cached_property
    def chars(self) -> int:
        """Its size in the cache's budget (text only: the rest is small and bounded)."""
        return (len(self.text or "") + len(self.html or "")
                + sum(len(text) for _, text in self.headers)
                + sum(len(name) for name, _ in self.attachments))

    def context(self) -> dict[str, Any]:
        """The template's variables (message.html)."""
        return {"text": self.text, "has_html": self.html is not None,
                "remote_images": self.remote_images, "headers": dict(self.headers),
                "attachments": [{"name": name, "size": size}
                                for name, size in self.attachments]}


class MessageViewCache(VersionedCache):
    """Message views of this process, each under its raw cell's version."""

    def __init__(self, size: int = VIEWS, chars: int = VIEW_CHARS) -> None:
        super().__init__(size, chars)

    def version(self, user: str, msg_id: str) -> int:
        """The raw cell's version a view is kept under (0: none): what to ask the store."""
        return self.kept_version((user, msg_id))

    def get(self, user: str, msg_id: str, version: int) -> MessageView | None:
        """The view kept for ``version`` (the raw cell's, just confirmed), or None."""
        view: MessageView | None = self.lookup((user, msg_id), version)
        return view

    def put(self, user: str, msg_id: str, version: int, view: MessageView) -> None:
        """Keep ``view`` as the message's at ``version`` (replacing an older one)."""
        self.keep((user, msg_id), version, view, view.chars)

    def forget(self, user: str, msg_id: str) -> None:
        self.discard((user, msg_id))
