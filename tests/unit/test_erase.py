"""Deleting an account on the in-process store: every tagged row goes, neighbours stay."""

from __future__ import annotations

import pytest

from shards.model import accounts, erase, mailbox, outbound

from .._memstore import MemClient

PASSWORD = "correct horse battery"


def _filled(client: MemClient, user: str) -> None:
    accounts.create_user(client, user, PASSWORD)
    mailbox.deliver(client, user, b"Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n")
    client.put(f"{{{user}}}/drive", "e:root/a.txt", b"x")
    client.put(f"{{{user}}}/file:0123", "data", b"bytes")
    client.put(f"{{{user}}}/sessions", "s:abc", b"1")


def test_erase_removes_every_row_of_the_user_and_nothing_else():
    client = MemClient()
    # "bob" and "bob.x" sort next to each other's tagged rows: the scan must stop at bob's.
    for user in ("bob", "bob.x", "bo"):
        _filled(client, user)
    outbound.enqueue(client, "bob@raftcloud.test", ["x@remote.example"],
                     b"Subject: out\r\nMessage-ID: <2@x>\r\n\r\nbye\r\n")
    ended = []
    erase.erase_account(client, "bob", domains=["raftcloud.test"],
                        end_sessions=lambda: ended.append(True), keep_rows=["{bob}/sessions"])
    assert ended == [True]
    assert erase.user_rows(client, "bob") == []
    assert client.get_row("user/bob") == {}
    assert outbound.pending(client) == []
    assert not accounts.verify_password(client, "bob", PASSWORD)
    for other in ("bob.x", "bo"):
        assert len(erase.user_rows(client, other)) == 6  # drive, file, mail, mailidx, msg, sessions
        assert accounts.verify_password(client, other, PASSWORD)


def test_an_interrupted_erase_is_finished_by_a_retry():
    client = MemClient()
    _filled(client, "carol")

    def crash() -> None:
        raise RuntimeError("frontend died")

    with pytest.raises(RuntimeError):
        erase.erase_account(client, "carol", domains=[], end_sessions=crash)
    assert erase.is_deleting(client, "carol")
    assert not accounts.verify_password(client, "carol", PASSWORD)  # no login meanwhile
    with pytest.raises(accounts.UserExists):
        accounts.create_user(client, "carol", PASSWORD)  # nor can the name be taken
    erase.erase_account(client, "carol", domains=[], end_sessions=lambda: None)
    assert erase.user_rows(client, "carol") == [] and client.get_row("user/carol") == {}


def test_the_admin_cannot_be_erased():
    client = MemClient()
    accounts.create_user(client, "root1", PASSWORD, admin=True)
    with pytest.raises(erase.CannotDelete):
        erase.erase_account(client, "root1", domains=[], end_sessions=lambda: None)
    assert accounts.verify_password(client, "root1", PASSWORD)
