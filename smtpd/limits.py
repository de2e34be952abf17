"""What one SMTP client may hold: connections, and time for a line, a command, a session.

aiosmtpd serves every session of a listener as a coroutine on one event loop,
so a slow client costs a socket and a little memory, never a thread; what is
left to bound is how many sockets a stranger may hold and for how long.

* **Connections**: at most ``max_connections_per_address`` per client address
  (an IPv6 /56, a typical end site's allocation, counts as one address: a
  stranger has 256 /64s to spread over).  One more from that address gets
  ``421 4.7.0`` and is closed before any greeting.  At ``max_connections`` per
  listener the oldest *idle* session (not logged in, no MAIL accepted) is told
  ``421 4.7.0`` and closed to make room, as the web listeners do; a newcomer is
  refused only when every session is busy.  So strangers holding sessions open
  cannot lock everyone else out.
* **Idleness**: a session must complete a message (DATA after accepted
  recipients) within ``idle_timeout`` of connecting and of its last message;
  NOOP, RSET, HELP and refused transactions do not restart that clock.
* **A line**: once the first byte of a line (a command, or a line of DATA)
  has arrived, the whole line must arrive within ``line_timeout``.  A client
  dripping one byte every few seconds is cut off there, whatever the other
  timers say.
* **A command**: aiosmtpd's own ``timeout`` restarts only when a valid command
  arrives (not on every byte), so it bounds the time from one command to the
  next: ``command_timeout``.  DATA gets ``data_timeout`` for the whole message.
* **A session**: ``session_timeout`` from accept to close, however busy.

Every expiry sends ``421 4.4.2`` and closes the connection.  The settings are
extra keys of the cluster file's ``[smtpd]`` table, parsed here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

from aiosmtpd.smtp import SMTP, syntax

from raftkv.errors import ConfigError
from shards.peers import ConnectionGate, address_key

from .metrics import SESSIONS

log = logging.getLogger(__name__)

TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
LINE_TIMEOUT = b"421 4.4.2 Line not completed in time, closing connection\r\n"
COMMAND_TIMEOUT = b"421 4.4.2 Timeout, closing connection\r\n"
SESSION_TIMEOUT = b"421 4.4.2 Session too long, closing connection\r\n"
IDLE_TIMEOUT = b"421 4.4.2 No mail sent in time, closing connection\r\n"
EVICTED = b"421 4.7.0 Too many connections, closing this idle one\r\n"


@dataclass(frozen=True)
class SessionLimits:
    """The bounds above; the defaults suit a public MX."""

    line_timeout: float = 10.0          # first byte of a line -> its end
    command_timeout: float = 120.0      # one valid command -> the next
    data_timeout: float = 600.0         # DATA -> the final dot (25 MiB at ~45 KB/s)
    session_timeout: float = 1800.0     # accept -> close
    idle_timeout: float = 240.0         # accept, or the last message -> the next message
    max_connections: int = 400          # per listener
    max_connections_per_address: int = 20

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SessionLimits:
        """Our keys of the ``[smtpd]`` table (others belong to other parts of smtpd)."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name not in table:
                continue
            value = table[field.name]
            kind = int if field.type == "int" else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    kind is int and not isinstance(value, int)):
                raise ConfigError(f"smtpd.{field.name} must be a number")
            values[field.name] = kind(value)
        limits = cls(**values)
        if min(limits.line_timeout, limits.command_timeout, limits.data_timeout,
               limits.session_timeout, limits.idle_timeout) <= 0:
            raise ConfigError("smtpd timeouts must be positive")
        if limits.max_connections < 1 or limits.max_connections_per_address < 1:
            raise ConfigError("smtpd connection limits must be at least 1")
        return limits






# The mixin's methods extend SMTP's through super(): mypy checks them against SMTP.
if TYPE_CHECKING:
    _SessionBase = SMTP
else:
    _SessionBase = object


class BoundedSession(_SessionBase):
    """Mixin for aiosmtpd's ``SMTP`` protocol class: the caps and deadlines above.

    Put it before ``SMTP`` in the bases and pass the listener's ``gate=`` to
    the constructor (without one, a session counts against a gate of its own:
    only the deadlines hold).  It works at the transport's edge
    (``connection_made``, ``data_received``) so that aiosmtpd's command loop
    stays as it is.
    """

    def __init__(self, *args: Any, gate: ConnectionGate[SessionLimits] | None = None, **kwargs: Any) -> None:
        gate = gate or ConnectionGate(SessionLimits())
        kwargs.setdefault("timeout", gate.limits.command_timeout)
        super().__init__(*args, **kwargs)
        self._gate = gate
        self._counted = False   # while the gate counts this session
        self._gate_key: str | None = None
        self._refused = False
        self._line_timer: asyncio.TimerHandle | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if getattr(self, "_original_transport", None) is not None:
            super().connection_made(transport)  # the same session after STARTTLS
            return
        key = address_key(transport.get_extra_info("peername"))
        if not self._gate.enter(key, self):
            log.warning("refusing a connection from %s: too many connections", key)
            SESSIONS.labels("refused").inc()
            self._refused = True
            # asyncio's annotation is the base class; a stream server's transport writes.
            cast(asyncio.WriteTransport, transport).write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._counted, self._gate_key = True, key
        SESSIONS.labels("accepted").inc()
        self._session_timer = self.loop.call_later(
            self._gate.limits.session_timeout, self._expire, SESSION_TIMEOUT)
        self._restart_idle_timer()
        super().connection_made(transport)

    def evictable(self) -> bool:
        """Whether this session may be closed to make room: not logged in, no transaction."""
        session = getattr(self, "session", None)
        envelope = getattr(self, "envelope", None)
        return (session is not None and not session.authenticated
                and (envelope is None or envelope.mail_from is None))

    def evict(self) -> None:
        """Closed by the gate for a newcomer; the gate has stopped counting it already."""
        self._counted = False
        self._expire(EVICTED)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never saw this connection
        for timer in (self._line_timer, self._session_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        if self._counted:
            self._gate.leave(self)
            self._counted = False
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\n"):
            self._stop_line_timer()     # no line left half-sent
        elif b"\n" in data or self._line_timer is None:
            # A new line has begun (after this chunk's last newline): its clock starts now.
            self._stop_line_timer()
            self._line_timer = self.loop.call_later(
                self._gate.limits.line_timeout, self._expire, LINE_TIMEOUT)
        super().data_received(data)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command method
        # aiosmtpd restarted its timer for this command; the message gets longer than one.
        self._reset_timeout(self._gate.limits.data_timeout)
        envelope = getattr(self, "envelope", None)
        if envelope is None or not envelope.rcpt_tos:
            await super().smtp_DATA(arg)  # refused at once: the idle clock runs on
            return
        # A real message: data_timeout bounds it, and once it is over the session
        # has done its work and gets a fresh idle clock.
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            await super().smtp_DATA(arg)
        finally:
            self._restart_idle_timer()

    def _timeout_cb(self) -> None:
        # aiosmtpd's timer: close as it does, but say why first.
        self._expire(COMMAND_TIMEOUT)

    def _restart_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.loop.call_later(
            self._gate.limits.idle_timeout, self._expire, IDLE_TIMEOUT)

    def _stop_line_timer(self) -> None:
        if self._line_timer is not None:
            self._line_timer.cancel()
            self._line_timer = None

    def _expire(self, reply: bytes) -> None:
        transport = getattr(self, "transport", None)
        if transport is None or transport.is_closing():
            return
        log.info("closing the session of %s: %s", self._gate_key, reply.decode().strip())
        transport.write(reply)
        transport.close()
