"""The mailbox model that smtpd delivers into, on the real store: races, flags, deletes."""

from __future__ import annotations

import secrets
import threading

import pytest

from shards.model import mailbox
from shards.model.registry import list_nodes, register, unregister

pytestmark = pytest.mark.cluster


@pytest.fixture
def user():
    return f"u{secrets.token_hex(4)}"  # mailbox functions need no account


def _mail(subject: str, message_id: str | None = None) -> bytes:
    head = f"From: a@example.org\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: {message_id}\r\n"
    return (head + "\r\nbody\r\n").encode()


def test_listing_is_newest_first_per_folder(client, user):
    first = mailbox.deliver(client, user, _mail("one"))
    second = mailbox.deliver(client, user, _mail("two"))
    sent = mailbox.deliver(client, user, _mail("mine"), folder="sent", unread=False)
    assert [m.id for m in mailbox.list_messages(client, user)] == [second, first]
    [summary] = mailbox.list_messages(client, user, folder="sent")
    assert (summary.id, summary.subject, summary.unread) == (sent, "mine", False)
    assert mailbox.list_messages(client, f"{user}x") == []


def test_racing_deliveries_of_one_message_keep_one_copy(client, user):
    raw, ids, errors = _mail("race", "<race@example.org>"), [], []

    def deliver() -> None:
        try:
            ids.append(mailbox.deliver(client, user, raw))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    [listed] = mailbox.list_messages(client, user)
    assert set(ids) == {listed.id}
    assert mailbox.get_message(client, user, listed.id) == raw
    # The same message filed in another folder is a second, separate copy.
    assert mailbox.deliver(client, user, raw, folder="sent") != listed.id


def test_concurrent_flag_changes_lose_nothing(client, user):
    ids = [mailbox.deliver(client, user, _mail(f"m{i}")) for i in range(4)]
    threads = [threading.Thread(target=mailbox.mark_read, args=(client, user, i)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [m.unread for m in mailbox.list_messages(client, user)] == [False] * 4
    assert mailbox.mark_read(client, user, ids[0], read=False)
    assert mailbox.get_summary(client, user, ids[0]).unread


def test_delete_removes_the_message_and_a_late_retry_does_not_resurrect_it(client, user):
    raw = _mail("gone", "<gone@example.org>")
    msg_id = mailbox.deliver(client, user, raw)
    assert mailbox.delete_message(client, user, msg_id)
    assert not mailbox.delete_message(client, user, msg_id)
    assert mailbox.get_message(client, user, msg_id) is None
    assert not mailbox.mark_read(client, user, msg_id)
    mailbox.deliver(client, user, raw)  # the sender's MTA retrying after we had said 250
    assert mailbox.list_messages(client, user) == []


def test_large_messages_round_trip(client, user):
    raw = _mail("big") + b"x" * (3 * 1024 * 1024)
    msg_id = mailbox.deliver(client, user, raw)
    assert mailbox.get_message(client, user, msg_id) == raw
    assert mailbox.get_summary(client, user, msg_id).size == len(raw)


def test_registry_lists_registers_and_forgets(client):
    name = f"f-{secrets.token_hex(3)}"
    register(client, kind="frontend", name=name, addr="127.0.0.1:1", info={"load": 1})
    [node] = [n for n in list_nodes(client, "frontend") if n.name == name]
    assert (node.kind, node.addr, node.info, node.alive) == ("frontend", "127.0.0.1:1",
                                                             {"load": 1}, True)
    assert all(n.kind == "frontend" for n in list_nodes(client, "frontend"))
    assert any(n.name == name for n in list_nodes(client))
    assert unregister(client, kind="frontend", name=name)
    assert not any(n.name == name for n in list_nodes(client, "frontend"))
