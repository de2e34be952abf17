"""The commands pymap parses, plus ours, and a guard in front of its parser.

pymap registers command classes by name (:class:`pymap.parsing.commands.Commands`)
and its connection state runs ``do_<name>``; so the commands it lacks are
registered here and run by :class:`imapd.state.ImapState`:

* ``NAMESPACE`` (RFC 2342): one personal namespace, no others.
* ``ENABLE`` (RFC 5161): accepted; it enables nothing, because no extension we
  offer needs enabling (CONDSTORE is not offered: docs/imap.md says why).
* ``LIST`` with RFC 5258's selection and return options, as far as RFC 6154
  uses them: ``LIST (SPECIAL-USE) "" "*"`` lists the special folders only.

The guard (:meth:`GuardedCommands.parse`) refuses, with a ``BAD`` that says
why, what would make pymap's parser misbehave: lists nested deeper than
``max_depth`` (its parser recurses once per level), and mailbox names that
are not valid modified UTF-7 (RFC 3501 5.1.3) -- pymap 0.36.7's decoder loops
forever on an ``&`` with no closing ``-`` and raises on bad base64.  Any other
error of the parser becomes a ``BAD`` too, never a dropped connection.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

from pymap.parsing import EndLine, Params, Space
from pymap.parsing.command import Command, CommandAuth, CommandNoArgs
from pymap.parsing.command.auth import ListCommand
from pymap.parsing.commands import Commands, InvalidCommand
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import Atom, List, String
from pymap.parsing.specials import AString, SequenceSet, Tag
from pymap.parsing.state import ParsingInterrupt

log = logging.getLogger(__name__)

# Commands whose arguments hold mailbox names, and where: the index of each
# name among the arguments (``None``: a sequence set comes first, which is skipped).
_NAME_ARGUMENTS: dict[bytes, tuple[Any, ...]] = {
    b"SELECT": (0,), b"EXAMINE": (0,), b"CREATE": (0,), b"DELETE": (0,),
    b"SUBSCRIBE": (0,), b"UNSUBSCRIBE": (0,), b"STATUS": (0,), b"APPEND": (0,),
    b"RENAME": (0, 1), b"COPY": (None, 1), b"MOVE": (None, 1),
    b"UID COPY": (None, 1), b"UID MOVE": (None, 1),
}
# A name is printable US-ASCII, with "&" only as "&-" or a closed modified-base64 run.
_MODUTF7 = re.compile(rb"(?:[\x20-\x25\x27-\x7e]|&-|&[A-Za-z0-9+,]+-)*")
_BASE64_RUN = re.compile(rb"&([A-Za-z0-9+,]+)-")
_LITERAL = re.compile(rb"~?\{(\d+)\+?\}\r?\n")
MAX_SHORT_LITERAL = 4096  # pymap's parser's bound for a literal other than APPEND's message


class Refused(InvalidCommand):
    """A command the guard refused: answered ``BAD`` with our own sentence."""

    def __init__(self, params: Params, message: bytes, command: bytes | None = None) -> None:
        super().__init__(params, None, command)
        self._message = message

    @property
    def message(self) -> bytes:
        return self._message


def valid_modutf7(raw: bytes) -> bool:
    """Whether ``raw`` is a mailbox name in modified UTF-7 (RFC 3501 5.1.3), canonical.

    Each base64 run must decode to whole UTF-16 characters that are not
    printable US-ASCII (those must be sent as themselves) and not ``&``.
    """
    if not _MODUTF7.fullmatch(raw):
        return False
    for match in _BASE64_RUN.finditer(raw):
        run = match.group(1).replace(b",", b"/")
        if len(run) % 4 == 1 or b"=" in run:
            return False
        try:
            data = base64.b64decode(run + b"=" * (-len(run) % 4), validate=True)
            text = data.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not text or any(0x20 <= ord(ch) <= 0x7e for ch in text):
            return False
        if base64.b64encode(data).rstrip(b"=") != run:
            return False  # stray bits after the last character: not canonical
    return True


def nesting_depth(line: bytes) -> int:
    """How deep parenthesised lists nest in a command line (quoted strings and
    literals skipped: their parentheses are data)."""
    depth = deepest = i = 0
    end = len(line)
    while i < end:
        byte = line[i]
        if byte == 0x22:  # a quoted string: skip to its closing quote
            i += 1
            while i < end and line[i] != 0x22:
                i += 2 if line[i] == 0x5c else 1
        elif byte == 0x7b and (match := _LITERAL.match(line, i)):
            i = match.end() + int(match.group(1))
            continue
        elif byte == 0x28:
            depth += 1
            deepest = max(deepest, depth)
        elif byte == 0x29:
            depth -= 1
        i += 1
    return deepest


class NamespaceCommand(CommandNoArgs, CommandAuth):
    """``NAMESPACE`` (RFC 2342)."""

    command = b"NAMESPACE"


class EnableCommand(CommandAuth):
    """``ENABLE`` (RFC 5161): the extensions the client names."""

    command = b"ENABLE"

    def __init__(self, tag: bytes, names: list[bytes]) -> None:
        super().__init__(tag)
        self.names = names

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[EnableCommand, memoryview]:
        names: list[bytes] = []
        while True:
            try:
                _, after = Space.parse(buf, params)
                atom, buf = Atom.parse(after, params)
            except NotParseable:
                break
            names.append(atom.value.upper())
        if not names:
            raise NotParseable(buf)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, names), buf


class ExtendedListCommand(ListCommand):
    """``LIST [(selection options)] ref pattern [RETURN (options)]`` (RFC 5258, 6154).

    Selection ``SPECIAL-USE`` keeps the special folders only, ``SUBSCRIBED`` the
    subscribed ones; the return options are accepted (special-use attributes are
    always returned, as RFC 6154 allows).
    """

    _options = {b"SPECIAL-USE", b"SUBSCRIBED", b"RECURSIVEMATCH", b"REMOTE"}
    _returns = {b"SPECIAL-USE", b"SUBSCRIBED", b"CHILDREN"}

    def __init__(self, tag: bytes, ref_name: str, filter_: str, *,
                 selection: frozenset[bytes] = frozenset()) -> None:
        super().__init__(tag, ref_name, filter_)
        self.selection = selection

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[ExtendedListCommand, memoryview]:
        selection: frozenset[bytes] = frozenset()
        try:
            _, after = Space.parse(buf, params)
            chosen, buf = List.parse(after, params.copy(expected=[Atom]))
        except NotParseable:
            pass
        else:
            selection = frozenset(bytes(option).upper() for option in chosen.value)
            if not selection <= cls._options:
                raise NotParseable(buf)
        plain, buf = ListCommand.parse(cls._without_return(buf, params), params)
        return cls(params.tag, plain.ref_name, plain.filter, selection=selection), buf

    @classmethod
    def _without_return(cls, buf: memoryview, params: Params) -> memoryview:
        """``buf`` with a trailing ``RETURN (...)`` checked and cut off."""
        text = bytes(buf)
        match = re.search(rb" RETURN \(([A-Za-z\- ]*)\)\r?\n\Z", text, re.IGNORECASE)
        if match is None:
            return buf
        if not {o.upper() for o in match.group(1).split()} <= cls._returns:
            raise NotParseable(buf)
        return memoryview(text[:match.start()] + b"\r\n")


class GuardedCommands(Commands):
    """pymap's commands and ours; :meth:`parse` refuses what its parser cannot take."""

    def __init__(self, max_depth: int = 32, max_append: int = 25 * 1024 * 1024) -> None:
        super().__init__()
        self.max_depth = max_depth
        self.max_append = max_append
        for command in (NamespaceCommand, EnableCommand, ExtendedListCommand):
            self.register(command)

    def parse(self, buf: memoryview, params: Params) -> tuple[Command, memoryview]:
        try:
            tag, rest = Tag.parse(buf, params)
        except NotParseable:
            return super().parse(buf, params)  # its own BAD for a line with no tag
        params = params.copy(tag=tag.value)
        if nesting_depth(bytes(buf)) > self.max_depth:
            return Refused(params, b"Lists nested too deeply."), buf[0:0]
        try:
            name, args = self._name(rest, params)
            if not self._names_valid(name, args, params):
                return Refused(params, b"Mailbox name is not valid modified UTF-7 "
                                       b"(RFC 3501 5.1.3).", name), buf[0:0]
            command, rest = super().parse(buf, params)
        except (ParsingInterrupt, NotParseable):
            raise
        except (RecursionError, ValueError, UnicodeError, IndexError, TypeError) as exc:
            # A parser bug, never a reason to drop the connection: say BAD and go on.
            log.info("command refused: the parser failed with %s", type(exc).__name__)
            return Refused(params, b"Command could not be parsed."), buf[0:0]
        if isinstance(command, InvalidCommand) and command.parse_exc is not None \
                and command.parse_exc.code is not None \
                and bytes(command.parse_exc.code) == b"[TOOBIG]":
            # pymap refused a literal's announced size before asking for it: say so.
            limit = self.max_append if name == b"APPEND" else MAX_SHORT_LITERAL
            return Refused(params, b"[TOOBIG] Literal too big (limit %d bytes)." % limit,
                           name), rest
        return command, rest

    def _name(self, buf: memoryview, params: Params) -> tuple[bytes, memoryview]:
        """The command's name (two words for ``UID ...``) and what follows it."""
        _, buf = Space.parse(buf, params)
        atom, buf = Atom.parse(buf, params)
        name = atom.value.upper()
        if name == b"UID":
            _, buf = Space.parse(buf, params)
            atom, buf = Atom.parse(buf, params)
            name += b" " + atom.value.upper()
        return name, buf

    def _names_valid(self, name: bytes, buf: memoryview, params: Params) -> bool:
        """Whether the mailbox names among the arguments are modified UTF-7.

        The names are read with pymap's own ``AString`` (atom, quoted string or
        literal); a literal not yet sent interrupts this as it would the command.
        """
        if name in (b"LIST", b"LSUB"):
            return self._list_names_valid(buf, params)
        wanted = _NAME_ARGUMENTS.get(name)
        if wanted is None:
            return True
        try:
            for index in range(max(i for i in wanted if i is not None) + 1):
                _, buf = Space.parse(buf, params)
                if index in wanted:
                    raw, buf = AString.parse(buf, params)
                    if raw.value.upper() != b"INBOX" and not valid_modutf7(raw.value):
                        return False
                else:
                    _, buf = SequenceSet.parse(buf, params)
        except NotParseable:
            return True  # malformed otherwise: pymap's parser says so
        return True

    def _list_names_valid(self, buf: memoryview, params: Params) -> bool:
        try:
            _, after = Space.parse(buf, params)
            if bytes(after[:1]) == b"(":
                _, buf = List.parse(after, params.copy(expected=[Atom]))
            _, buf = Space.parse(buf, params)
            ref, buf = AString.parse(buf, params)
            _, buf = Space.parse(buf, params)
            match = ListCommand._list_mailbox_pattern.match(buf)
            pattern = match.group(0) if match else String.parse(buf, params)[0].value
        except NotParseable:
            return True
        return valid_modutf7(ref.value) and valid_modutf7(pattern)
