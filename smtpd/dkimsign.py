"""DKIM signatures on the mail the outbound worker hands to remote exchangers (dkimpy).

Each message is signed for the domain of its From address (one of ours: the
submission path makes From the user's own address, shards/model/outbound.py),
with the cluster's key for that domain (:mod:`shards.model.dkimkeys`), so the
signature aligns with From and DMARC passes at the receiver.

Signed header fields: the ones that say who wrote what to whom and how to read
the body (:data:`SIGNED_HEADERS`), each instance present, and From once more
than present ("oversigning", RFC 6376 §8.15): a From added later by someone
else breaks the signature instead of being shown.  Canonicalization is
relaxed/relaxed, which survives the re-folding and whitespace changes of relays.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING

import dkim

from shards.model import dkimkeys

from .authcheck import DKIM_LOG, author_domains

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

log = logging.getLogger(__name__)

SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
                  b"content-type", b"content-transfer-encoding", b"in-reply-to",
                  b"references", b"reply-to")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def header_names(raw: bytes) -> list[bytes]:
    """The lowercase names of the header fields of ``raw``, in order."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    names = []
    for line in head.split(b"\n"):
        match = _FIELD_NAME.match(line)
        if match and line[:1] not in (b" ", b"\t"):
            names.append(match.group(1).lower())
    return names


def headers_to_sign(raw: bytes) -> list[bytes]:
    """``h=`` of our signature: every instance of the fields we sign, and one From more."""
    present = header_names(raw)
    chosen = [name for name in SIGNED_HEADERS for _ in range(present.count(name))]
    return [*chosen, b"from"]


def with_crlf(raw: bytes) -> bytes:
    """``raw`` with every line ending CRLF: what SMTP carries, so what the receiver hashes."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


class Signer:
    """Signs messages from our domains; keys are read (or made) once, then kept in memory.

    :param seal_key: ``cluster.derive_key(dkimkeys.KEY_PURPOSE)``.
    """

    def __init__(self, client: KeyValueStore, seal_key: bytes, domains: tuple[str, ...],
                 selector: str = dkimkeys.DEFAULT_SELECTOR) -> None:
        self._client = client
        self._seal_key = seal_key
        self.domains = domains
        self.selector = selector
        self._keys: dict[str, dkimkeys.DkimKey] = {}
        self._lock = threading.Lock()

    def load_keys(self) -> None:
        """Read every domain's key, making those that are missing.

        :raises RaftKVError: the store cannot answer now (the worker tries again later).
        """
        with self._lock:
            for domain in self.domains:
                if domain not in self._keys:
                    self._keys[domain] = dkimkeys.load_or_create(self._client, self._seal_key,
                                                                 domain, self.selector)

    def signing_domain(self, raw: bytes) -> str | None:
        """Ours among the From domains of ``raw``; None when From names none of ours."""
        ours = sorted(author_domains(re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0])
                      & set(self.domains))
        return ours[0] if ours else None

    def sign(self, raw: bytes) -> bytes | None:
        """``raw`` with CRLF line ends and a DKIM-Signature on top; None when it cannot be
        signed (From is not ours, a key is not loaded, or dkimpy refuses the message)."""
        domain = self.signing_domain(raw)
        key = self._keys.get(domain) if domain is not None else None
        if key is None:
            return None
        raw = with_crlf(raw)
        try:
            signature = dkim.DKIM(raw, logger=DKIM_LOG).sign(
                key.selector.encode(), key.domain.encode(), key.private_pem,
                include_headers=headers_to_sign(raw), canonicalize=(b"relaxed", b"relaxed"))
        except Exception as exc:  # noqa: BLE001 - dkimpy's parser raises assorted errors
            log.warning("could not DKIM-sign a message from %s: %s", domain, type(exc).__name__)
            return None
        return bytes(signature) + raw
