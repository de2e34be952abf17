"""What a connection may do, and when: pymap's connection state, extended.

pymap's :class:`~pymap.imap.state.ConnectionState` runs each parsed command as
``do_<name>``.  Here it also:

* runs the commands pymap lacks (:mod:`imapd.commands`): ``NAMESPACE``,
  ``ENABLE``, and ``LIST`` with RFC 6154's ``(SPECIAL-USE)`` selection;
* allows LOGIN before STARTTLS only where the settings allow it (a loopback
  peer, by default) and says ``PRIVACYREQUIRED`` elsewhere;
* closes a connection after ``failures_per_connection`` failed logins (the
  shared limiter bounds guesses over time; this bounds one connection's);
* answers a store failure with ``NO`` in IMAP's words (:mod:`imapd.errors`)
  instead of pymap's ``BYE [SERVERBUG]``, and a SELECT served from stale reads
  with an ``[ALERT]`` that the folder is read-only for now;
* counts every command by name and answer (:mod:`imapd.metrics`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from proxyprotocol.sock import SocketInfo
from pymap.context import socket_info
from pymap.exceptions import InvalidAuth, ResponseError
from pymap.imap.state import ConnectionState
from pymap.parsing.commands import InvalidCommand
from pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBad,
    ResponseBye,
    ResponseCode,
    ResponseNo,
    ResponseOk,
    UntaggedResponse,
)
from pymap.parsing.response.code import Capability
from pymap.parsing.response.specials import ListResponse, LSubResponse

from .errors import imap_error
from .login import LoginRefused
from .metrics import CLOSED, COMMAND_SECONDS, COMMANDS

if TYPE_CHECKING:
    from pymap.parsing.command import Command
    from pymap.parsing.command.auth import ListCommand
    from pymap.parsing.command.nonauth import AuthenticateCommand, LoginCommand
    from pymap.selected import SelectedMailbox
    from pysasl.creds.server import ServerCredentials

    from .commands import EnableCommand, NamespaceCommand
    from .config import ImapConfig

log = logging.getLogger(__name__)

_CommandRet = tuple[CommandResponse, "SelectedMailbox | None"]

NAMESPACE = b'NAMESPACE (("" "/")) NIL NIL'  # one personal namespace (RFC 2342 5)
STALE_ALERT = (b"Part of the storage cluster is recovering: this folder is shown as it "
               b"was a moment ago, read-only, until it answers again.")
TLS_FIRST = b"Use STARTTLS (or the TLS port) before logging in."


class TooManyFailures(ResponseError):
    """The last failed login this connection may make: NO, then BYE."""

    def __init__(self, refusal: ResponseError) -> None:
        super().__init__()
        self.refusal = refusal

    def get_response(self, tag: bytes) -> CommandResponse:
        response = self.refusal.get_response(tag)
        if not isinstance(response, CommandResponse):
            response = ResponseNo(tag, b"Login failed.")
        response.add_untagged(ResponseBye(b"Too many failed logins, closing the connection."))
        return response


class ImapState(ConnectionState):
    """One connection's state (see the module docstring).

    :param failures_allowed: failed logins before the connection is closed.
    """

    config: ImapConfig

    def __init__(self, login: Any, config: ImapConfig, *, failures_allowed: int = 3) -> None:
        super().__init__(login, config)
        self._failures_allowed = failures_allowed
        self._failures = 0

    @property
    def logged_in(self) -> bool:
        return self._session is not None

    @property
    def capability(self) -> Capability:
        offered = super().capability
        if self._session is not None:  # STARTTLS is for the not-authenticated state only
            return Capability([c for c in offered.capabilities if c != b"STARTTLS"])
        return offered

    # -- before login ------------------------------------------------------------

    async def do_greeting(self) -> CommandResponse:
        info: SocketInfo = socket_info.get()
        if self.config.plaintext_allowed(info):
            self.auth = self.config.tls_auth
        return ResponseOk(b"*", self.config.greeting, self.capability)

    async def do_login(self, cmd: LoginCommand) -> _CommandRet:
        if b"LOGINDISABLED" in self.capability:
            return ResponseNo(cmd.tag, TLS_FIRST, ResponseCode.of(b"PRIVACYREQUIRED")), None
        return await super().do_login(cmd)

    async def do_authenticate(self, cmd: AuthenticateCommand | LoginCommand,
                              creds: ServerCredentials | None) -> CommandResponse:
        if creds is not None and b"LOGINDISABLED" in self.capability:
            return ResponseNo(cmd.tag, TLS_FIRST, ResponseCode.of(b"PRIVACYREQUIRED"))
        try:
            return await super().do_authenticate(cmd, creds)
        except (InvalidAuth, LoginRefused) as exc:
            self._failures += 1
            if self._failures >= self._failures_allowed:
                CLOSED.labels("login_failures").inc()
                raise TooManyFailures(exc) from None
            raise

    # -- the commands pymap lacks ---------------------------------------------------

    async def do_namespace(self, cmd: NamespaceCommand) -> _CommandRet:
        response = ResponseOk(cmd.tag, b"NAMESPACE completed.")
        response.add_untagged(UntaggedResponse(NAMESPACE))
        return response, None

    async def do_enable(self, cmd: EnableCommand) -> _CommandRet:
        # None of the extensions we offer is enabled by ENABLE (RFC 5161 3.1: the
        # server lists only what it enabled): CONDSTORE and UTF8=ACCEPT are not offered.
        response = ResponseOk(cmd.tag, b"ENABLE completed.")
        response.add_untagged(UntaggedResponse(b"ENABLED"))
        return response, None

    async def do_list(self, cmd: ListCommand) -> _CommandRet:
        selection: frozenset[bytes] = getattr(cmd, "selection", frozenset())
        mailboxes, updates = await self.session.list_mailboxes(
            cmd.ref_name, cmd.filter,
            subscribed=cmd.only_subscribed or b"SUBSCRIBED" in selection,
            selected=self._selected)
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        kind = LSubResponse if cmd.only_subscribed else ListResponse
        for name, delimiter, attributes in mailboxes:
            if b"SPECIAL-USE" in selection and not _special(attributes):
                continue
            response.add_untagged(kind(name, delimiter, attributes))
        return response, updates

    async def do_select(self, cmd: Any) -> _CommandRet:
        response, updates = await super().do_select(cmd)
        if getattr(self.session, "stale", False):
            response.add_untagged_ok(STALE_ALERT, ResponseCode.of(b"ALERT"))
        return response, updates

    # -- every command ---------------------------------------------------------------

    async def do_command(self, cmd: Command) -> CommandResponse:
        started = time.monotonic()
        name = _command_name(cmd)
        try:
            response = await self._answer(cmd)
        except ResponseError as exc:
            _count(name, exc.get_response(cmd.tag))
            raise
        _count(name, response)
        if name != "IDLE":
            COMMAND_SECONDS.observe(time.monotonic() - started)
        return response

    async def _answer(self, cmd: Command) -> CommandResponse:
        try:
            return await super().do_command(cmd)
        except ResponseError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store or model failure is a NO (imapd.errors)
            error = imap_error(exc)
            if error is None:
                raise  # a bug of ours: pymap answers BYE [SERVERBUG] and logs it
            return error.get_response(cmd.tag)


def _special(attributes: Any) -> bool:
    return any(a in (b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive", b"All", b"Flagged")
               for a in attributes)


def _command_name(cmd: Command) -> str:
    if isinstance(cmd, InvalidCommand):
        return "invalid"
    return cmd.command.decode("ascii", "replace")


def _count(name: str, response: Response) -> None:
    if isinstance(response, ResponseOk):
        result = "ok"
    elif isinstance(response, ResponseBad):
        result = "bad"
    else:
        result = "no"
    COMMANDS.labels(name, result).inc()
