"""pymap's settings object for one listener: what it offers, before and after login.

pymap reads its settings from an :class:`~pymap.config.IMAPConfig`, built here
from our :class:`~imapd.settings.ImapdSettings` (never from pymap's command
line).  One per listener: the plain port offers STARTTLS (when there is a
certificate) and refuses logins before it (``LOGINDISABLED``) except from a
loopback peer when ``plaintext_login_on_loopback``; the TLS port is encrypted
from the first byte and offers every login mechanism at once.

Capabilities: before login ``IMAP4rev1 LITERAL+ ID`` (+ ``STARTTLS``,
``LOGINDISABLED``, ``AUTH=PLAIN AUTH=LOGIN`` as the port and peer allow); after
login pymap's ``BINARY UIDPLUS MOVE CHILDREN APPENDLIMIT=...`` and ours,
``IDLE NAMESPACE SPECIAL-USE ENABLE``.
"""

from __future__ import annotations

import socket
import ssl
from argparse import Namespace
from collections.abc import Mapping, Sequence

from proxyprotocol.sock import SocketInfo
from pymap.concurrent import Subsystem
from pymap.config import BackendCapability, IMAPConfig
from pysasl import SASLAuth
from pysasl.hashing import BuiltinHash

from .commands import GuardedCommands
from .settings import ImapdSettings

OUR_CAPABILITIES = (b"NAMESPACE", b"SPECIAL-USE", b"ENABLE")


class ImapConfig(IMAPConfig):
    """The settings of one listener.

    :param tls: the server's certificate context (None: no TLS at all).
    :param implicit_tls: this listener is the TLS port (encrypted from the start).
    """

    def __init__(self, settings: ImapdSettings, *, tls: ssl.SSLContext | None,
                 implicit_tls: bool = False) -> None:
        limits = settings.limits
        super().__init__(
            Namespace(passlib_cfg=None, proxy_protocol=None), host=None, port=0,
            subsystem=Subsystem.for_asyncio(), cpu_subsystem=Subsystem.for_asyncio(),
            ssl_context=tls or ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
            tls_enabled=tls is not None and not implicit_tls, reject_dnsbl=False,
            # Our passwords are checked by the shared model, never by pymap's hashes.
            hash_context=BuiltinHash(), invalid_user_sleep=0.0,
            max_append_len=limits.max_message_size,
            bad_command_limit=limits.max_bad_commands)
        self.settings = settings
        self.implicit_tls = implicit_tls
        self._has_tls = tls is not None
        self._commands = GuardedCommands(limits.max_depth, limits.max_message_size)
        self._hostname = settings.hostname or socket.getfqdn()

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=True, object_id=False, multi_append=False,
                                 custom=OUR_CAPABILITIES)

    @property
    def commands(self) -> GuardedCommands:
        return self._commands

    @property
    def initial_auth(self) -> SASLAuth:
        return self.tls_auth if self.implicit_tls else SASLAuth([])

    @property
    def initial_capability(self) -> Sequence[bytes]:
        offered = [b"LITERAL+", b"ID"]
        if self._has_tls and not self.implicit_tls:
            offered.append(b"STARTTLS")
        return offered

    @property
    def greeting(self) -> bytes:
        return f"raftcloud IMAP ready on {self._hostname}".encode("ascii", "replace")

    @property
    def id_response(self) -> Mapping[bytes, bytes]:
        return {b"name": b"raftcloud-imapd"}

    def plaintext_allowed(self, info: SocketInfo) -> bool:
        """Whether a login may come before TLS on this connection: the TLS port, or
        a loopback peer when the settings allow it (its traffic never leaves the host)."""
        if self.implicit_tls:
            return True
        return self.settings.plaintext_login_on_loopback and bool(info.from_localhost)
