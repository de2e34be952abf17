"""The cluster's DKIM signing keys: one RSA key per mail domain and selector, made once.

Every smtpd of the cluster, on whatever host, signs a domain's mail with the
same key, and there is one DNS record to publish for it, so the key lives in
the store rather than in one host's data directory.  The first process that
needs it (an smtpd's outbound worker, or ``raftkv-ctl dkim-record``) makes it
and stores it with a CPUT on absence; a process that loses that race reads the
winner's.

The store never holds the key in clear: it is sealed with AES-GCM under
``cluster.derive_key(KEY_PURPOSE)``, so the replicas' disks and a backup hold a
key that only the cluster secret opens, like every other secret the cluster
keeps.  A cluster given a new secret (``raftcloud restore --new-secret``)
cannot open the old key: the first process to need it makes a new one in its
place and logs that the DNS record must be published again.

Layout: row :data:`KEYS_ROW` in the config group (else the storage groups, as
the node registry), column ``<domain>/<selector>``, msgpack
``{"v": 1, "alg": "rsa-sha256", "created": time, "sealed": nonce + ciphertext}``.
The column name is the sealed data's associated data: a key moved to another
column does not open.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from raftkv.errors import ConditionFailed, ConfigError, OutcomeUnknown, UnavailableError

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["DEFAULT_SELECTOR", "KEY_PURPOSE", "KEYS_ROW", "DkimKey", "dns_record",
           "load_or_create", "selector_setting", "zone_line"]

log = logging.getLogger(__name__)

KEY_PURPOSE = "dkim-keys"     # cluster.derive_key(KEY_PURPOSE) seals the private keys
KEYS_ROW = "_dkim"
DEFAULT_SELECTOR = "raftcloud"
KEY_BITS = 2048               # RFC 8301 §3.2: at least 1024, and 2048 is what receivers expect
TXT_STRING = 255              # bytes of one character-string of a TXT record (RFC 1035 §3.3)
_ALGORITHM = "rsa-sha256"
_ATTEMPTS = 5
# RFC 6376 §3.1: a selector is dot-separated labels; we keep to letters, digits and '-'.
_SELECTOR = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class DkimKey:
    """One domain's signing key, opened."""

    domain: str        # d= of the signatures
    selector: str      # s= of the signatures; the record is at <selector>._domainkey.<domain>
    private_pem: bytes  # PKCS#1 PEM, the form dkimpy signs with; never logged
    created: float

    def __repr__(self) -> str:  # a key printed by accident (a log line, a traceback) shows no secret
        return f"DkimKey({self.domain!r}, {self.selector!r})"

    def public_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo, the ``p=`` of the record (RFC 6376 §3.6.1)."""
        private = serialization.load_pem_private_key(self.private_pem, password=None)
        return private.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def selector_setting(smtpd_table: Mapping[str, Any]) -> str:
    """``[smtpd] dkim_selector`` (default :data:`DEFAULT_SELECTOR`), checked.

    Read here as well as by smtpd's settings so that ``raftkv-ctl dkim-record``,
    which imports no app, prints the record smtpd signs for.

    :raises ConfigError: not a valid DNS label sequence.
    """
    value = smtpd_table.get("dkim_selector", DEFAULT_SELECTOR)
    if not isinstance(value, str) or len(value) > 63 or not _SELECTOR.fullmatch(value):
        raise ConfigError(f"smtpd.dkim_selector must be DNS labels (letters, digits, '-'), "
                          f"got {value!r}")
    return value


def _column(domain: str, selector: str) -> str:
    return f"{domain.lower().rstrip('.')}/{selector}"


def _store(client: KeyValueStore) -> KeyValueStore:
    """The config group when the cluster has one (it holds the cluster's own rows)."""
    config_group = getattr(client, "config_group", None)
    found = config_group() if callable(config_group) else None
    return found if found is not None else client


def _seal(key: bytes, column: str, pem: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, pem, column.encode())


def _open(key: bytes, column: str, sealed: bytes) -> bytes | None:
    """The PEM, or None when ``sealed`` was not made with this key (another secret)."""
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], column.encode())
    except (InvalidTag, ValueError):
        return None


def _new_pem() -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return private.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())


def _decode(value: bytes) -> tuple[bytes, float] | None:
    try:
        record = msgpack.unpackb(value, raw=False)
        if record.get("v") != 1 or record.get("alg") != _ALGORITHM:
            return None
        return bytes(record["sealed"]), float(record["created"])
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException):
        return None


def load_or_create(client: KeyValueStore, seal_key: bytes, domain: str,
                   selector: str = DEFAULT_SELECTOR) -> DkimKey:
    """The signing key of ``domain`` under ``selector``, made and stored if there is none.

    :param seal_key: ``cluster.derive_key(KEY_PURPOSE)``.
    :raises UnavailableError: the store cannot answer, or the key kept changing under us.
    """
    store = _store(client)
    column = _column(domain, selector)
    for _ in range(_ATTEMPTS):
        cell = store.get(KEYS_ROW, column)
        if cell is not None:
            decoded = _decode(cell.value)
            pem = _open(seal_key, column, decoded[0]) if decoded is not None else None
            if decoded is not None and pem is not None:
                return DkimKey(domain.lower().rstrip("."), selector, pem, decoded[1])
            log.warning("the DKIM key of %s (selector %s) cannot be opened with this cluster's "
                        "secret: making a new one; publish its record again "
                        "(raftkv-ctl dkim-record)", domain, selector)
        pem, now = _new_pem(), time.time()
        value = msgpack.packb({"v": 1, "alg": _ALGORITHM, "created": now,
                               "sealed": _seal(seal_key, column, pem)}, use_bin_type=True)
        try:
            # On absence, or on the version of the key that did not open: never over a good one.
            store.cput(KEYS_ROW, column, value,
                       if_version=cell.version if cell is not None else None)
        except (ConditionFailed, OutcomeUnknown):
            continue  # another process made one (or ours landed): read what is there
        log.info("made the DKIM key of %s (selector %s)", domain, selector)
        return DkimKey(domain.lower().rstrip("."), selector, pem, now)
    raise UnavailableError(f"the DKIM key of {domain} kept changing; try again")


def dns_record(key: DkimKey) -> tuple[str, str]:
    """``(name, text)`` of the TXT record that publishes ``key`` (RFC 6376 §3.6.2.2)."""
    return (f"{key.selector}._domainkey.{key.domain}.",
            f"v=DKIM1; k=rsa; p={base64.b64encode(key.public_der()).decode()}")


def zone_line(name: str, text: str) -> str:
    """``text`` as one zone-file TXT line, cut into strings of at most 255 bytes
    (a 2048-bit key is longer than one; resolvers join them again)."""
    parts = [text[i:i + TXT_STRING] for i in range(0, len(text), TXT_STRING)]
    return f"{name} IN TXT " + " ".join(f'"{part}"' for part in parts)
