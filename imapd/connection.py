"""One IMAP connection, bounded in time and memory: pymap's connection with guarded reads.

pymap's :class:`~pymap.imap.IMAPConnection` reads a command line with
``StreamReader.readline`` and a literal with ``readexactly``, trusting the
client's numbers and taking all the time the client takes.  Here every read
is bounded, at the stream's edge, so pymap's command loop stays as it is:

* **Before a command**: its first byte within ``login_timeout`` before login,
  ``idle_timeout`` after (RFC 3501 5.4: at least 30 minutes; an IDLE client
  renews within 29).  Then the whole line within ``line_timeout``.
* **A line**: at most ``max_line`` bytes; a longer one is answered ``BAD
  [TOOBIG]`` and the connection closed (the rest of it is still on its way).
* **A literal**: the synchronizing ones are checked by pymap's parser before
  it asks for them (the APPEND message up to ``max_message_size``, anything
  else up to 4 KiB): a literal claiming gigabytes gets ``BAD [TOOBIG]`` and
  no ``+``.  A non-synchronizing one (LITERAL+, ``{n+}``) is sent without
  asking, so its size is checked here before a byte of it is read; too big,
  it gets ``BAD [TOOBIG]`` and the connection is closed (RFC 7888 4).
  A literal's bytes must arrive within ``literal_timeout``.
* **A command**: its line and literals together at most ``max_message_size``
  plus a little, so one command holds a bounded amount of memory.
* **A reply**: written in pieces of 64 KiB (or one message's literal), each
  within ``literal_timeout``; a client that stops reading is disconnected
  instead of holding its reply in memory for ever.

Every expiry writes ``* BYE`` with the reason and closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

from pymap.imap import IMAPConnection
from pymap.parsing.command import Command
from pymap.parsing.response import CommandResponse, Response

from .commands import MAX_SHORT_LITERAL
from .metrics import CLOSED

if TYPE_CHECKING:
    from proxyprotocol.sock import SocketInfo
    from pymap.config import IMAPConfig
    from pymap.imap.state import ConnectionState
    from pymap.parsing.commands import Commands

    from .settings import ImapLimits

log = logging.getLogger(__name__)

_LITERAL_PLUS = re.compile(rb"~?\{(\d+)\+\}\r?\n\Z")
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2C-\x5B\x5D\x5E-\x7A\x7C\x7E]{1,64}")
_APPEND = re.compile(rb"\S+ +(?:UID +)?APPEND\b", re.IGNORECASE)
WRITE_BATCH = 64 * 1024  # reply bytes gathered before they are written and drained


class _Pending:
    """The bytes of a reply not yet handed to the socket (pymap's ``WriteStream``)."""

    __slots__ = ["_data"]

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes) -> None:
        self._data += data

    def take(self) -> bytearray:
        data, self._data = self._data, bytearray()  # handed over, not copied
        return data

    def __len__(self) -> int:
        return len(self._data)


class Hangup(EOFError):
    """The connection was closed by us, for the reason already written to it."""


class BoundedConnection(IMAPConnection):
    """pymap's connection with every read and write bounded (see the module docstring).

    :param limits: the listener's bounds.
    :param logged_in: whether the session has logged in (it decides the patience).
    """

    def __init__(self, commands: Commands, config: IMAPConfig, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, sock_info: SocketInfo, *, limits: ImapLimits,
                 logged_in: Callable[[], bool]) -> None:
        super().__init__(commands, config, reader, writer, sock_info)
        self.limits = limits
        self._logged_in = logged_in
        self._budget = 0  # bytes the current command may still read

    # -- reading ---------------------------------------------------------------

    async def read_command(self, state: ConnectionState) -> Command:
        self._budget = self.limits.max_message_size + 4 * self.limits.max_line
        return await super().read_command(state)

    async def readline(self) -> memoryview:
        patience = self.limits.idle_timeout if self._logged_in() else self.limits.login_timeout
        buf = bytearray(await self._first_byte(patience))
        if buf != b"\n":
            buf += await self._rest_of_line(buf)
        while (literal := _LITERAL_PLUS.search(buf)) is not None:
            length = int(literal.group(1))
            limit = (self.limits.max_message_size if _APPEND.match(buf)
                     else MAX_SHORT_LITERAL)
            if length > limit or length > self._budget:
                await self._refuse(buf, b"BAD [TOOBIG] Literal too big (limit %d bytes)" % limit)
            buf += await self._timed(self.reader.readexactly(length),
                                     self.limits.literal_timeout, b"Literal not sent in time")
            self._budget -= length
            buf += await self._rest_of_line(buf)
        return memoryview(buf)

    async def read_continuation(self, literal_length: int) -> memoryview:
        if literal_length > self._budget:
            await self._refuse(b"", b"BAD [TOOBIG] Command too big")
        self._budget -= literal_length
        literal = await self._timed(self.reader.readexactly(literal_length),
                                    self.limits.literal_timeout, b"Literal not sent in time")
        return memoryview(literal + bytes(await self.readline()))

    async def _first_byte(self, patience: float) -> bytes:
        return await self._timed(self.reader.readexactly(1), patience,
                                 b"Autologout: idle for too long")

    async def _rest_of_line(self, head: bytearray) -> bytes:
        """The line after the bytes read so far, up to its newline.  The stream's own
        limit (``max_line``, given to ``asyncio.start_server``) bounds each piece."""
        try:
            rest = await self._timed(self.reader.readuntil(b"\n"), self.limits.line_timeout,
                                     b"Line not completed in time")
        except asyncio.LimitOverrunError:
            await self._refuse(head, b"BAD [TOOBIG] Command line too long (limit %d bytes)"
                               % self.limits.max_line)
        self._budget -= len(rest)
        if self._budget < 0:
            await self._refuse(head, b"BAD [TOOBIG] Command too big")
        return rest

    async def _timed[T](self, read: Awaitable[T], seconds: float, reason: bytes) -> T:
        try:
            async with asyncio.timeout(seconds):
                return await read
        except TimeoutError:
            CLOSED.labels("timeout").inc()
            await self._hang_up(b"* BYE " + reason + b"\r\n")
        except asyncio.IncompleteReadError as exc:
            raise EOFError() from exc

    async def _refuse(self, head: bytes | bytearray, answer: bytes) -> NoReturn:
        """Answer the command being read (tagged, if its tag is readable) and close."""
        CLOSED.labels("too_big").inc()
        match = _TAG.match(bytes(head[:65]))
        tag = match.group(0) if match and head[len(match.group(0)):][:1] == b" " else b"*"
        await self._hang_up(tag + b" " + answer + b"\r\n* BYE Closing the connection\r\n")

    async def _hang_up(self, farewell: bytes) -> NoReturn:
        log.info("closing a connection: %s", farewell.strip().decode("ascii", "replace"))
        try:
            self.writer.write(farewell)
            async with asyncio.timeout(5):
                await self.writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        self.writer.close()
        raise Hangup()

    # -- writing ---------------------------------------------------------------

    async def write_response(self, resp: Response) -> None:
        """Write ``resp`` in pieces of about :data:`WRITE_BATCH` bytes, draining after each:
        a FETCH of 10,000 bodies holds one body and one piece, not the whole answer, in
        memory.  pymap writes a FETCH response in several small writes, each of which
        asyncio sends at once when the socket is drained: a system call per few bytes
        (a third of a header FETCH's time) without the batching."""
        parts: list[Response] = list(getattr(resp, "_untagged", []))  # pymap's own list
        pending = _Pending()
        patience = self.limits.literal_timeout
        try:
            # Each piece (the parts in it, with the content they load) within the patience.
            async with asyncio.timeout(patience) as piece:
                for part in parts:
                    await part.async_write(pending)
                    if len(pending) >= WRITE_BATCH:
                        await self._flush(pending)
                        piece.reschedule(asyncio.get_running_loop().time() + patience)
                if parts and isinstance(resp, CommandResponse):
                    Response.write(resp, pending)  # the tagged line alone
                else:
                    await resp.async_write(pending)
                await self._flush(pending)
        except ConnectionError:
            pass
        except TimeoutError:
            CLOSED.labels("timeout").inc()
            log.info("closing a connection: the client stopped reading")
            self.writer.transport.abort()

    async def _flush(self, pending: _Pending) -> None:
        self.writer.write(pending.take())
        await self.writer.drain()

    async def send_error_disconnect(self) -> None:
        if self.writer.is_closing():
            return  # closed by us, for a reason already written (Hangup)
        await super().send_error_disconnect()
