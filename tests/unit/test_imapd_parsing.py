"""imapd's guard in front of pymap's parser: what it refuses, what it lets through.

pymap 0.36.7's modified-UTF-7 decoder loops for ever on ``&`` without a closing
``-`` and its list parser recurses once per nesting level; the guard answers both
with a BAD before pymap's parser sees them (imapd/commands.py).
"""

from __future__ import annotations

import pytest
from pymap.parsing import Params
from pymap.parsing.command.auth import CreateCommand
from pymap.parsing.commands import InvalidCommand
from pymap.parsing.modutf7 import modutf7_encode
from pymap.parsing.state import ParsingInterrupt, ParsingState

from imapd.commands import (
    EnableCommand,
    ExtendedListCommand,
    GuardedCommands,
    NamespaceCommand,
    Refused,
    nesting_depth,
    valid_modutf7,
)

pytestmark = pytest.mark.timeout(10)  # a parser that loops fails here, not in CI's hour


def parse(line: bytes, *continuations: bytes):
    state = ParsingState(continuations=[memoryview(c) for c in continuations])
    command, _ = GuardedCommands(max_depth=8, max_append=1000).parse(
        memoryview(line), Params(state, max_append_len=1000))
    return command


@pytest.mark.parametrize("name", ["Entwürfe", "日本語/メモ", "a&b", "&", "Sent Items", "☺"])
def test_names_as_clients_encode_them_are_valid(name):
    assert valid_modutf7(modutf7_encode(name))


@pytest.mark.parametrize("raw", [
    b"&AAA",          # no closing "-": pymap's decoder never returns
    b"x&Jjo",         # the same after some text
    b"&Jj!-",         # not base64
    b"&AGE-",         # "a" encoded: printable ASCII must be itself (RFC 3501 5.1.3)
    b"&-&-&AAA",
    b"&2D8-",         # a lone UTF-16 surrogate
    b"&Jjp-",         # stray bits after the last character: not canonical
    "Entwürfe".encode(),  # 8-bit, not modified UTF-7
    b"a\x01b",
])
def test_broken_names_are_not(raw):
    assert not valid_modutf7(raw)


@pytest.mark.parametrize("line", [
    b"a CREATE &AAA\r\n", b'a SELECT "x&Jjo"\r\n', b"a RENAME INBOX/x &AAA\r\n",
    b"a UID MOVE 1:* &AAA\r\n", b"a COPY 1 \"&AGE-\"\r\n", b'a LIST "&AAA" *\r\n',
    b"a LIST \"\" &AAA*\r\n", b"a LSUB \"\" \"%&Jj\"\r\n", b"a STATUS &AAA (MESSAGES)\r\n",
])
def test_a_command_naming_a_broken_mailbox_is_refused_at_once(line):
    command = parse(line)
    assert isinstance(command, Refused)
    assert b"modified UTF-7" in command.message and command.tag == b"a"


def test_a_broken_name_in_a_literal_is_refused_once_the_literal_arrives():
    with pytest.raises(ParsingInterrupt):  # the literal first: pymap asks for it
        parse(b"a CREATE {4}\r\n")
    assert isinstance(parse(b"a CREATE {4}\r\n", b"&AAA\r\n"), Refused)
    assert isinstance(parse(b"a CREATE {4+}\r\n&AAA\r\n"), Refused)


def test_good_names_and_other_arguments_pass_to_pymap():
    assert isinstance(parse(b"a CREATE Entw&APw-rfe\r\n"), CreateCommand)
    # "&" in a search string or a password is data, not a mailbox name
    assert not isinstance(parse(b'a LOGIN bob "p&ss"\r\n'), InvalidCommand)
    assert not isinstance(parse(b'a UID SEARCH SUBJECT "Tom & Jerry"\r\n'), InvalidCommand)


def test_nesting_counts_parentheses_outside_strings_and_literals():
    assert nesting_depth(b"a FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n") == 2
    assert nesting_depth(b'a SEARCH SUBJECT "((((((((((("\r\n') == 0
    assert nesting_depth(b"a APPEND x {10+}\r\n((((((((((\r\n") == 0
    assert nesting_depth(b"a X " + b"(" * 10000) == 10000


def test_ten_thousand_nested_lists_get_a_bad_not_a_recursion_error():
    command = parse(b"a STATUS INBOX " + b"(" * 10000 + b")" * 10000 + b"\r\n")
    assert isinstance(command, Refused) and b"nested" in command.message


def test_a_literal_announcing_more_than_the_limit_is_refused_before_it_is_asked_for():
    command = parse(b"a APPEND INBOX {4000000000}\r\n")
    assert isinstance(command, Refused) and command.message.startswith(b"[TOOBIG]")
    assert b"1000 bytes" in command.message
    other = parse(b"a SELECT {100000}\r\n")
    assert isinstance(other, Refused) and b"4096 bytes" in other.message


def test_our_commands_parse():
    assert isinstance(parse(b"a NAMESPACE\r\n"), NamespaceCommand)
    enable = parse(b"a ENABLE CONDSTORE utf8=accept\r\n")
    assert isinstance(enable, EnableCommand) and enable.names == [b"CONDSTORE", b"UTF8=ACCEPT"]
    special = parse(b'a LIST (SPECIAL-USE) "" "*"\r\n')
    assert isinstance(special, ExtendedListCommand) and special.selection == {b"SPECIAL-USE"}
    returned = parse(b'a LIST "" "*" RETURN (SPECIAL-USE CHILDREN)\r\n')
    assert isinstance(returned, ExtendedListCommand) and returned.filter == "*"
    plain = parse(b'a LIST "" %\r\n')
    assert isinstance(plain, ExtendedListCommand) and not plain.selection
    assert isinstance(parse(b'a LIST (NONSENSE) "" "*"\r\n'), InvalidCommand)
    assert isinstance(parse(b"a ENABLE\r\n"), InvalidCommand)
