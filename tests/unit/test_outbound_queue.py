"""The outbound queue's model on the real state machine (tests._memstore)."""

from __future__ import annotations

from shards.model import outbound

from .._memstore import MemClient


def test_finishing_a_delivery_never_deletes_a_resubmissions_bytes() -> None:
    client = MemClient()
    ident = outbound.enqueue(client, "ann@raftcloud.test", ["bob@far.test"], b"first",
                             message_id="<m1@raftcloud.test>")
    (delivered,) = outbound.due(client)
    mine = outbound.claim(client, delivered, "smtpd-1", lease=60)
    assert mine is not None and outbound.raw_message(client, mine) == b"first"
    # The sender retries after a lost answer just as the delivery ends: between
    # finish's two steps, the same message (same id) is queued again.
    original_delete = client.delete

    def delete_after_a_resubmission(row: str, col: str) -> bool:
        outbound.enqueue(client, "ann@raftcloud.test", ["bob@far.test"], b"again",
                         message_id="<m1@raftcloud.test>")
        return original_delete(row, col)
    client.delete = delete_after_a_resubmission  # type: ignore[method-assign]
    assert outbound.finish(client, mine)
    client.delete = original_delete  # type: ignore[method-assign]
    (again,) = outbound.pending(client)
    assert again.id == ident and outbound.raw_message(client, again) == b"again"


def test_a_message_submitted_twice_is_queued_once_with_one_copy_of_its_bytes() -> None:
    client = MemClient()
    for _ in range(2):
        outbound.enqueue(client, "ann@raftcloud.test", ["bob@far.test"], b"body",
                         message_id="<m2@raftcloud.test>")
    (entry,) = outbound.pending(client)
    row = client.get_row(outbound.message_row(entry.id))
    assert list(row) == [entry.raw_column]
