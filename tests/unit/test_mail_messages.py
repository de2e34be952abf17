"""The mail model's messages (shards.model.mail): arrive, list, read, flag, move, copy, expunge,
the change log and the Trash's expiry, on the real state machine (MemClient).

Every test ends with the mailbox's invariants checked (tests/_mailcheck.py), and
every mutation is checked to fit one Raft entry (under 32 KiB).
"""

from __future__ import annotations

import secrets
import time

import msgpack
import pytest

from shards.model import mail
from shards.model.errors import BadFlag, FolderRefused, MailboxFull, NoSuchFolder
from shards.model.mail import layout, migrate

from .._mailcheck import check_mailbox, message_rows
from .._memstore import MemClient

ENTRY_CAP = 32 * 1024


class CappedClient(MemClient):
    """A MemClient that fails a mutate_row the real cluster would refuse for its size."""

    def mutate_row(self, row, conditions, mutations, *, ttl=None):
        size = len(msgpack.packb({"op": "mutate_row", "row": row, "conditions": conditions,
                                  "mutations": mutations}, use_bin_type=True))
        assert size < ENTRY_CAP, f"a mutation of {size} bytes"
        return super().mutate_row(row, conditions, mutations, ttl=ttl)


@pytest.fixture(autouse=True)
def _fresh_cache():
    migrate.forget()


@pytest.fixture
def client():
    return CappedClient()


@pytest.fixture
def user(client):
    name = f"u{secrets.token_hex(3)}"
    yield name
    check_mailbox(client, name)


def _raw(subject: str, body: bytes = b"hello\r\n", *, message_id: str = "") -> bytes:
    head = f"From: Ann <a@b.test>\r\nTo: bob@c.test\r\nCc: cy@c.test\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: {message_id}\r\nIn-Reply-To: <parent@b.test>\r\n"
    return head.encode() + b"\r\n" + body


def _fill(client, user, fid=mail.INBOX, n=5):
    return [mail.append(client, user, fid, _raw(f"m{i}")) for i in range(n)]


def test_delivery_lists_the_message_with_its_headers_and_counts(client, user):
    raw = _raw("Hi", message_id="<one@b.test>")
    done = mail.deliver(client, user, raw)
    record = done.record
    assert not done.duplicate and record is not None and done.msg_id == record.id
    assert (record.fid, record.uid, record.flags, record.size) == (mail.INBOX, 1, (), len(raw))
    assert (record.sender, record.subject, record.to, record.cc, record.message_id,
            record.in_reply_to) == ("Ann <a@b.test>", "Hi", "bob@c.test", "cy@c.test",
                                    "<one@b.test>", "<parent@b.test>")
    inbox = mail.status(client, user, mail.INBOX)
    assert (inbox.exists, inbox.unseen, inbox.uidnext, inbox.modseq) == (1, 1, 2, record.modseq)
    assert mail.get_record(client, user, mail.INBOX, 1) == record
    assert mail.locate(client, user, record.id) == record
    assert mail.get_raw(client, user, record.id) == raw
    size, chunks = mail.raw_stream(client, user, record.id)
    assert size == len(raw) and b"".join(chunks) == raw
    assert mail.header_blocks(client, user, [record.id]) == {record.id: raw[:raw.index(b"\r\n\r\n") + 4]}
    assert mail.usage(client, user) == len(raw)


def test_deliveries_are_deduplicated_per_folder_even_after_a_move(client, user):
    raw = _raw("Once", message_id="<dup@b.test>")
    first = mail.deliver(client, user, raw)
    again = mail.deliver(client, user, raw)
    assert again.duplicate and again.msg_id == first.msg_id and again.record == first.record
    sent = mail.deliver(client, user, raw, folder=mail.SENT)
    assert not sent.duplicate and sent.msg_id != first.msg_id
    mail.move(client, user, mail.INBOX, [first.record.uid], mail.TRASH)
    late = mail.deliver(client, user, raw)  # the sender's MTA retrying after our 250
    assert late.duplicate and late.record.fid == mail.TRASH
    mail.expunge(client, user, mail.TRASH, [late.record.uid])
    gone = mail.deliver(client, user, raw)
    assert gone.duplicate and gone.record is None and gone.msg_id == first.msg_id
    assert len(message_rows(client, user)) == 1  # the Sent copy: no orphan bytes


def test_append_keeps_flags_and_date_and_has_no_dedup(client, user):
    raw = _raw("Draft", message_id="<d@b.test>")
    one = mail.append(client, user, mail.DRAFTS, raw, flags=["\\draft", "\\SEEN", "$Label1"],
                      date=1_600_000_000.5)
    two = mail.append(client, user, mail.DRAFTS, raw)
    assert one.flags == ("$Label1", "\\Draft", "\\Seen") and one.date == 1_600_000_000.5
    assert two.uid == one.uid + 1 and two.id != one.id
    assert mail.status(client, user, mail.DRAFTS).unseen == 1
    assert mail.append(client, user, mail.TRASH, raw).trashed is not None


@pytest.mark.parametrize("flags", [["\\Recent"], ["\\Bogus"], ["has space"], ["a(b"], ["x" * 65],
                                   ["ünï"], ['quo"te'], [f"k{i}" for i in range(33)], [7]])
def test_flags_that_cannot_be_stored_are_refused_before_anything_is_written(client, user, flags):
    with pytest.raises(BadFlag):
        mail.append(client, user, mail.INBOX, _raw("x"), flags=flags)
    assert message_rows(client, user) == set()
    record = mail.append(client, user, mail.INBOX, _raw("y"))
    with pytest.raises(BadFlag):
        mail.store_flags(client, user, mail.INBOX, [record.uid], flags)


def test_a_full_mailbox_refuses_and_leaves_no_bytes(client, user):
    mail.deliver(client, user, _raw("big", b"b" * 1000))
    with pytest.raises(MailboxFull):
        mail.deliver(client, user, _raw("more", b"m" * 1000), quota=1500)
    with pytest.raises(MailboxFull):
        mail.append(client, user, mail.INBOX, _raw("more", b"m" * 1000), quota=1500)
    assert len(message_rows(client, user)) == 1
    with pytest.raises(NoSuchFolder):
        mail.append(client, user, 77, _raw("nowhere"))
    assert len(message_rows(client, user)) == 1


def test_a_long_header_block_is_not_stored_apart_and_is_read_from_raw(client, user):
    raw = b"Subject: long\r\nX-Pad: " + b"p" * (70 * 1024) + b"\r\n\r\nbody"
    small = mail.append(client, user, mail.INBOX, _raw("small"))
    big = mail.append(client, user, mail.INBOX, raw)
    assert client.get(layout.message_row(user, big.id), layout.HEADER_COL) is None
    client.ops.clear()
    blocks = mail.header_blocks(client, user, [small.id, big.id, "../bad", mail.new_message_id()])
    assert blocks[big.id] == raw[:-4] and set(blocks) == {small.id, big.id}
    # The long one read from its raw cell; the unknown one looked for there too.
    assert [op for op, _ in client.ops] == ["get_cells", "get_stream", "get_stream"]


def test_many_header_blocks_take_one_round_trip_per_256(client, user):
    ids = [r.id for r in _fill(client, user, n=300)]
    client.ops.clear()
    assert len(mail.header_blocks(client, user, ids)) == 300
    assert [op for op, _ in client.ops] == ["get_cells", "get_cells"]


def test_listings_by_uid_range_and_newest_first(client, user):
    records = _fill(client, user, n=10)
    assert [r.uid for r in mail.list_folder(client, user, mail.INBOX)] == list(range(1, 11))
    assert [r.uid for r in mail.list_folder(client, user, mail.INBOX, first=4, last=6)] == [4, 5, 6]
    assert [r.uid for r in mail.list_folder(client, user, mail.INBOX, first=9, limit=5)] == [9, 10]
    assert [r.uid for r in mail.list_newest(client, user, mail.INBOX, limit=3)] == [10, 9, 8]
    assert [r.uid for r in mail.list_newest(client, user, mail.INBOX, before=8, limit=3)] == [7, 6, 5]
    assert mail.list_folder(client, user, mail.SENT) == []
    assert records[0].id < records[-1].id


def test_flags_add_remove_replace_with_modseqs_and_unseen(client, user):
    records = _fill(client, user, n=4)
    uids = [r.uid for r in records]
    before = mail.status(client, user, mail.INBOX)
    result = mail.store_flags(client, user, mail.INBOX, uids[:3], ["\\Seen", "work"])
    assert [r.uid for r in result.updated] == uids[:3] and result.modified == []
    assert [r.modseq for r in result.updated] == [before.modseq + 1, before.modseq + 2,
                                                  before.modseq + 3]
    assert mail.status(client, user, mail.INBOX).unseen == 1
    again = mail.store_flags(client, user, mail.INBOX, uids, ["\\Seen"])  # only uid 4 changes
    assert [r.uid for r in again.updated] == [uids[3]]
    assert mail.status(client, user, mail.INBOX).modseq == before.modseq + 4
    mail.store_flags(client, user, mail.INBOX, uids[:1], ["work"], "remove")
    assert mail.get_record(client, user, mail.INBOX, uids[0]).flags == ("\\Seen",)
    mail.store_flags(client, user, mail.INBOX, uids[:1], ["\\Flagged"], "replace")
    assert mail.get_record(client, user, mail.INBOX, uids[0]).flags == ("\\Flagged",)
    assert mail.status(client, user, mail.INBOX).unseen == 1
    assert mail.store_flags(client, user, mail.INBOX, [999], ["\\Seen"]).updated == []
    with pytest.raises(NoSuchFolder):
        mail.store_flags(client, user, 999, [1], ["\\Seen"])


def test_unchangedsince_leaves_newer_records_alone_and_reports_them(client, user):
    a, b = _fill(client, user, n=2)
    mail.store_flags(client, user, mail.INBOX, [b.uid], ["\\Flagged"])
    result = mail.store_flags(client, user, mail.INBOX, [a.uid, b.uid], ["\\Seen"],
                              unchanged_since=a.modseq)
    assert [r.uid for r in result.updated] == [a.uid] and result.modified == [b.uid]
    assert mail.get_record(client, user, mail.INBOX, b.uid).flags == ("\\Flagged",)


def test_batches_stay_under_the_entry_cap_with_the_largest_records(client, user):
    subject = "📬" * 600  # cut to 1 KiB of UTF-8
    raws = [f"From: {'👤' * 400} <a@b.test>\r\nTo: {'t' * 700}\r\nCc: {'c' * 700}\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{'m' * 600}@x>\r\nIn-Reply-To: <{'r' * 600}@x>"
            f"\r\n\r\nx".encode() for _ in range(60)]
    records = [mail.append(client, user, mail.INBOX, raw) for raw in raws]
    assert len(layout.pack(records[0].fields())) > 3000
    keywords = [f"kw{i}" for i in range(32)]
    flagged = mail.store_flags(client, user, mail.INBOX, [r.uid for r in records], keywords)
    assert len(flagged.updated) == 60
    moved = mail.move(client, user, mail.INBOX, [r.uid for r in records], mail.JUNK)
    assert len(moved.uids) == 60
    copied = mail.copy(client, user, mail.JUNK, list(moved.uids.values()), mail.INBOX)
    assert len(copied.uids) == 60


def test_move_keeps_ids_and_bytes_and_answers_the_uid_map(client, user):
    records = _fill(client, user, n=4)
    mail.store_flags(client, user, mail.INBOX, [records[0].uid], ["\\Seen"])
    folder = mail.create_folder(client, user, "Keep")
    mail.append(client, user, folder.id, _raw("already there"))
    moved = mail.move(client, user, mail.INBOX, [records[0].uid, records[2].uid, 99], folder.id)
    assert moved.uidvalidity == folder.uidvalidity
    assert moved.uids == {records[0].uid: 2, records[2].uid: 3}
    there = mail.list_folder(client, user, folder.id)
    assert [r.id for r in there[1:]] == [records[0].id, records[2].id]
    assert there[1].flags == ("\\Seen",) and there[1].trashed is None
    assert mail.locate(client, user, records[0].id).fid == folder.id
    assert mail.get_raw(client, user, records[0].id) is not None
    inbox, keep = mail.status(client, user, mail.INBOX), mail.status(client, user, folder.id)
    assert (inbox.exists, inbox.unseen, keep.exists, keep.unseen) == (2, 2, 3, 2)
    with pytest.raises(FolderRefused):
        mail.move(client, user, folder.id, [2], folder.id)
    with pytest.raises(NoSuchFolder):
        mail.move(client, user, folder.id, [2], 4242)


def test_into_trash_and_out_again(client, user):
    record = _fill(client, user, n=1)[0]
    moved = mail.move(client, user, mail.INBOX, [record.uid], mail.TRASH)
    trashed = mail.get_record(client, user, mail.TRASH, moved.uids[record.uid])
    assert trashed.origin == mail.INBOX and trashed.trashed == pytest.approx(time.time(), abs=5)
    back = mail.move(client, user, mail.TRASH, [trashed.uid], trashed.origin)
    restored = mail.get_record(client, user, mail.INBOX, back.uids[trashed.uid])
    assert restored.trashed is None and restored.origin is None and restored.id == record.id


def test_copy_makes_new_messages_counted_in_the_quota(client, user):
    records = _fill(client, user, n=3)
    used = mail.usage(client, user)
    copied = mail.copy(client, user, mail.INBOX, [r.uid for r in records], mail.INBOX)
    assert list(copied.uids) == [1, 2, 3] and list(copied.uids.values()) == [4, 5, 6]
    copies = mail.list_folder(client, user, mail.INBOX, first=4)
    assert {c.id for c in copies}.isdisjoint(r.id for r in records)
    assert [mail.get_raw(client, user, c.id) for c in copies] == \
        [mail.get_raw(client, user, r.id) for r in records]
    assert mail.usage(client, user) == 2 * used
    rows = message_rows(client, user)
    with pytest.raises(MailboxFull):
        mail.copy(client, user, mail.INBOX, [1, 2], mail.SENT, quota=2 * used + 10)
    assert message_rows(client, user) == rows, "no copied bytes left behind"


def test_copying_a_big_message_goes_through_a_file(client, user, monkeypatch):
    monkeypatch.setattr("shards.model.mail.moves._SPOOL", 100)
    record = mail.append(client, user, mail.INBOX, _raw("big", b"z" * 5000))
    copied = mail.copy(client, user, mail.INBOX, [record.uid], mail.DRAFTS)
    copy = mail.get_record(client, user, mail.DRAFTS, copied.uids[record.uid])
    assert mail.get_raw(client, user, copy.id) == mail.get_raw(client, user, record.id)
    assert mail.header_blocks(client, user, [copy.id])[copy.id].startswith(b"From: Ann")


def test_expunge_removes_records_pointers_bytes_and_usage(client, user):
    records = _fill(client, user, n=3)
    assert mail.expunge(client, user, mail.INBOX, [records[1].uid, 42]) == [records[1].uid]
    assert mail.locate(client, user, records[1].id) is None
    assert records[1].id not in message_rows(client, user)
    assert mail.usage(client, user) == records[0].size + records[2].size
    assert mail.status(client, user, mail.INBOX).exists == 2
    assert mail.expunge(client, user, mail.INBOX, [records[1].uid]) == []


def test_changes_since_reports_flags_moves_and_expunges(client, user):
    records = _fill(client, user, n=3)
    start = mail.status(client, user, mail.INBOX).modseq
    assert mail.changes_since(client, user, mail.INBOX, start) == mail.Changes(start, [], [])
    mail.store_flags(client, user, mail.INBOX, [records[0].uid], ["\\Answered"])
    mail.move(client, user, mail.INBOX, [records[1].uid], mail.SENT)
    mail.store_flags(client, user, mail.INBOX, [records[2].uid], ["\\Seen"])
    mail.expunge(client, user, mail.INBOX, [records[2].uid])
    changes = mail.changes_since(client, user, mail.INBOX, start)
    assert changes.modseq == mail.status(client, user, mail.INBOX).modseq == start + 4
    assert [(r.uid, r.flags) for r in changes.updated] == [(records[0].uid, ("\\Answered",))]
    assert changes.expunged == [records[1].uid, records[2].uid]
    everything = mail.changes_since(client, user, mail.INBOX, 0)
    assert [r.uid for r in everything.updated] == [records[0].uid]
    arrived = mail.changes_since(client, user, mail.SENT, 1)
    assert [r.id for r in arrived.updated] == [records[1].id] and arrived.expunged == []
    with pytest.raises(NoSuchFolder):
        mail.changes_since(client, user, 4242, 0)


def test_the_change_log_is_bounded_and_says_when_it_no_longer_reaches_back(
        client, user, monkeypatch):
    monkeypatch.setattr(layout, "KEEP", 10)
    [record] = _fill(client, user, n=1)
    start = mail.status(client, user, mail.INBOX).modseq
    for n in range(12):
        mail.store_flags(client, user, mail.INBOX, [record.uid], ["\\Seen"],
                         "add" if n % 2 == 0 else "remove")
    now = mail.status(client, user, mail.INBOX).modseq
    log = client.get_row(layout.mailbox_row(user), prefix=layout.change_prefix(mail.INBOX))
    assert len(log) == 10 and now == start + 12
    assert mail.changes_since(client, user, mail.INBOX, start) is None
    assert mail.changes_since(client, user, mail.INBOX, now - 11) is None
    recent = mail.changes_since(client, user, mail.INBOX, now - 10)
    assert recent is not None and [r.uid for r in recent.updated] == [record.uid]


def test_expire_trash_takes_only_what_is_old_enough_a_bounded_batch_a_call(
        client, user, monkeypatch):
    records = _fill(client, user, n=120)
    fresh = mail.append(client, user, mail.INBOX, _raw("fresh"))
    now = time.time()
    mail.move(client, user, mail.INBOX, [r.uid for r in records], mail.TRASH)
    assert not mail.expire_trash(client, user, now=now + 86400)  # nothing 30 days old
    with monkeypatch.context() as patch:  # the fresh one is trashed ten days later
        patch.setattr(time, "time", lambda: now + 10 * 86400)
        mail.move(client, user, mail.INBOX, [fresh.uid], mail.TRASH)
    month = now + 31 * 86400
    assert mail.expire_trash(client, user, now=month) is True   # 100 read, all due: maybe more
    assert mail.status(client, user, mail.TRASH).exists == 21
    assert mail.expire_trash(client, user, now=month) is False  # the last 20; fresh stays
    assert [r.id for r in mail.list_folder(client, user, mail.TRASH)] == [fresh.id]
    assert message_rows(client, user) == {fresh.id}
    assert mail.expire_trash(client, f"{user}x") is False  # nobody's mailbox: nothing written


def test_a_message_without_a_header_cell_has_its_header_read_from_the_start_of_raw(
        client, user):
    """Messages stored before layout 2 have no hdr cell: the header is read chunk by chunk
    (MemClient streams 4 KiB chunks), and a blank line across two chunks is found."""
    head = b"Subject: old\r\nX-Pad: " + b"p" * (4096 - 24) + b"\r\n\r\n"
    assert head.index(b"\r\n\r\n") < 4096 < len(head)  # the blank line straddles a chunk
    record = mail.append(client, user, mail.INBOX, head + b"b" * 100_000)
    client.delete(layout.message_row(user, record.id), layout.HEADER_COL)
    client.ops.clear()
    assert mail.header_blocks(client, user, [record.id]) == {record.id: head}
    assert [op for op, _ in client.ops] == ["get_cells", "get_stream"]
    bodiless = mail.append(client, user, mail.INBOX, b"Subject: no body")
    client.delete(layout.message_row(user, bodiless.id), layout.HEADER_COL)
    assert mail.header_blocks(client, user, [bodiless.id]) == {bodiless.id: b"Subject: no body"}
