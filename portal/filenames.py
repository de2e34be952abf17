"""Rules for user-chosen file names, and their safe use in HTTP headers.

A name never reaches a file system path (files live in the store), but it
does reach HTML pages (escaped by Jinja2), ``Content-Disposition`` headers
(encoded per RFC 6266 / RFC 8187 here) and other people's download folders,
so it is refused when it could be a path, hide its real ending or break a header.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

from raftkv.errors import Refused

MAX_NAME_BYTES = 255  # what common file systems accept as one name
# Bidirectional overrides make "evil\u202etxt.exe" display as "evilexe.txt".
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class BadFileName(Refused):
    """The name is not acceptable; the message says why, for the user."""


def check_filename(name: str) -> str:
    """Return ``name`` (NFC-normalised) if it is acceptable as a file name.

    :raises BadFileName: empty, too long, ``.``/``..``, a path separator
        (``/`` or ``\\``), NUL or another control character, or a
        bidirectional-override character.
    """
    name = unicodedata.normalize("NFC", name)
    if not name.strip():
        raise BadFileName("a file name cannot be empty")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadFileName(f"a file name can be at most {MAX_NAME_BYTES} bytes long")
    # With separators refused below, ".." can only be the whole name.
    if name.strip() in (".", ".."):
        raise BadFileName("'.' and '..' are not file names")
    if "/" in name or "\\" in name:
        raise BadFileName("a file name cannot contain '/' or '\\'")
    for char in name:
        if unicodedata.category(char) == "Cc":
            raise BadFileName("a file name cannot contain control characters (or NUL)")
        if char in _BIDI_CONTROLS:
            raise BadFileName("a file name cannot contain text-direction control characters")
    return name


def plain_filename(name: str | None, default: str) -> str:
    """A name someone else chose (a mail attachment's) made safe to offer for download.

    Unlike :func:`check_filename`, which refuses, this repairs: only the last
    path component is kept, control and text-direction characters are dropped,
    and what cannot be a name (empty, ``.``, ``..``) becomes ``default``.
    """
    if not name:
        return default
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name
                   if unicodedata.category(c) != "Cc" and c not in _BIDI_CONTROLS).strip()
    if name in ("", ".", "..") or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return default
    return name


def content_disposition(name: str, disposition: str = "attachment") -> str:
    """A ``Content-Disposition`` value that names the file safely in any browser.

    RFC 6266 §4.3: an ASCII-only ``filename`` for old clients (non-ASCII
    characters, quotes and backslashes replaced by ``_``), then the exact name
    in ``filename*`` as RFC 8187 UTF-8 percent-encoding, which modern
    browsers prefer.
    """
    fallback = "".join(
        c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in name)
    encoded = quote(name, safe="!#$&+-.^_`|~")  # RFC 8187 attr-char
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
