"""Moves and deletes of several items (shards.model.drive.many) and uploads held on a name
clash (shards.model.drive.held): each answer one mutate_row, nothing overwritten unseen."""

from __future__ import annotations

import io

import pytest

from shards.model import drive
from shards.model.drive import FILE, FOLDER, ROOT

from .._drive import stored
from .._memstore import CountingClient

USER = "alice"
QUOTA = 1 << 20


@pytest.fixture
def client() -> CountingClient:
    return CountingClient()


def put(client, parent: str, name: str, content: bytes = b"hello") -> drive.Item:
    return stored(client, USER, parent, name, content, quota=QUOTA)


def hold(client, parent: str, name: str, content: bytes) -> drive.Held:
    return drive.hold_file(client, USER, parent, name, io.BytesIO(content), size=len(content),
                           quota=QUOTA)


def names(client, folder: str) -> list[str]:
    return sorted(i.name for i in drive.list_folder(client, USER, folder).items)


def content(client, item_id: str) -> bytes:
    return b"".join(drive.open_file(client, USER, item_id)[2])


def test_copy_names():
    assert drive.copy_name("report.pdf", 1) == "report (1).pdf"
    assert drive.copy_name("archive.tar.gz", 2) == "archive.tar (2).gz"
    assert drive.copy_name("README", 3) == "README (3)"
    assert drive.copy_name(".bashrc", 1) == ".bashrc (1)"


def test_keep_both_takes_the_next_free_name(client):
    put(client, ROOT, "a.txt")
    put(client, ROOT, "a (1).txt")
    held = hold(client, ROOT, "a.txt", b"second")
    assert held.other_id and not held.other_is_folder
    assert names(client, ROOT) == ["a (1).txt", "a.txt"]  # held: not linked yet
    assert drive.usage(client, USER) == 10  # held bytes count once linked
    placed = drive.keep_both(client, USER, held.item.id, quota=QUOTA)
    assert placed.name == "a (2).txt"
    assert names(client, ROOT) == ["a (1).txt", "a (2).txt", "a.txt"]
    assert content(client, placed.id) == b"second"
    assert drive.usage(client, USER) == 16
    with pytest.raises(drive.NoSuchItem):  # answered: no longer held
        drive.keep_both(client, USER, held.item.id, quota=QUOTA)


def test_replace_is_one_mutation_and_keeps_the_old_bytes_as_a_version(client):
    old = put(client, ROOT, "a.txt", b"old old old")
    held = hold(client, ROOT, "a.txt", b"new")
    before = client.mutations
    placed = drive.replace_file(client, USER, held.item.id, quota=QUOTA)
    assert client.mutations - before == 1  # the swap, nothing else
    assert names(client, ROOT) == ["a.txt"]
    assert placed.id == old.id and content(client, placed.id) == b"new"
    _, versions = drive.list_versions(client, USER, old.id)
    assert [v.size for v in versions] == [11]
    assert client.get(drive.content_row(USER, old.id), drive.DATA_COL) is not None
    assert drive.usage(client, USER) == 14  # versions count
    assert drive.pending(client, USER) == []
    assert client.get(drive.drive_row(USER), f"h:{held.item.id}") is None


def test_replace_refuses_a_file_changed_since_the_question(client):
    old = put(client, ROOT, "a.txt", b"old")
    held = hold(client, ROOT, "a.txt", b"new")
    drive.rename(client, USER, FILE, old.id, "b.txt")
    drive.rename(client, USER, FILE, old.id, "a.txt")  # same name, another version
    with pytest.raises(drive.Changed):
        drive.replace_file(client, USER, held.item.id, quota=QUOTA)
    assert content(client, old.id) == b"old"
    assert drive.get_held(client, USER, held.item.id)  # still waiting for an answer
    # Asked again (the question now shows the file as it is), Replace holds.
    placed = drive.replace_file(client, USER, held.item.id, quota=QUOTA)
    assert content(client, placed.id) == b"new" and placed.id == old.id


def test_a_folder_is_never_replaced(client):
    drive.create_folder(client, USER, ROOT, "a.txt")
    held = hold(client, ROOT, "a.txt", b"new")
    assert held.other_is_folder
    with pytest.raises(drive.Changed):
        drive.replace_file(client, USER, held.item.id, quota=QUOTA)
    assert drive.keep_both(client, USER, held.item.id, quota=QUOTA).name == "a (1).txt"


def test_a_dropped_or_stale_hold_leaves_nothing(client):
    put(client, ROOT, "a.txt")
    held = hold(client, ROOT, "a.txt", b"x" * 100)
    drive.drop_held(client, USER, held.item.id)
    assert client.get(drive.content_row(USER, held.item.id), drive.DATA_COL) is None
    # A linked file's id is no hold: its bytes stay.
    linked = drive.list_folder(client, USER, ROOT).items[0]
    with pytest.raises(drive.NoSuchItem):
        drive.drop_held(client, USER, linked.id)
    assert content(client, linked.id) == b"hello"
    stale = drive.hold_file(client, USER, ROOT, "a.txt", io.BytesIO(b"y"), size=1, quota=QUOTA,
                            now=1.0)
    drive.purge(client, USER)
    assert client.get(drive.content_row(USER, stale.item.id), drive.DATA_COL) is None
    with pytest.raises(drive.NoSuchItem):
        drive.get_held(client, USER, stale.item.id)


def test_move_many_is_one_mutation_or_nothing(client):
    target = drive.create_folder(client, USER, ROOT, "target")
    sub = drive.create_folder(client, USER, ROOT, "sub")
    files = [put(client, ROOT, f"f{i}.txt") for i in range(5)]
    refs = [(FILE, f.id) for f in files] + [(FOLDER, sub.id)]
    before = client.mutations
    moved = drive.move_many(client, USER, refs, target.id)
    assert client.mutations - before == 1
    assert len(moved) == 6
    assert names(client, target.id) == ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt", "sub"]
    assert names(client, ROOT) == ["target"]
    # A clash in the target: nothing moves, and the refusal names it.
    put(client, ROOT, "f0.txt")
    clash = put(client, ROOT, "g.txt")
    lone = [(FILE, clash.id), (FILE, drive.list_folder(client, USER, ROOT).items[0].id)]
    with pytest.raises(drive.NameTaken, match="f0.txt"):
        drive.move_many(client, USER, lone, target.id)
    assert names(client, ROOT) == ["f0.txt", "g.txt", "target"]
    with pytest.raises(drive.BadMove):
        drive.move_many(client, USER, [(FOLDER, target.id)], sub.id)


def test_delete_many_is_one_mutation_and_frees_the_quota(client):
    sub = drive.create_folder(client, USER, ROOT, "sub")
    put(client, sub.id, "inner.txt", b"12345")
    files = [put(client, ROOT, f"f{i}.txt", b"abc") for i in range(3)]
    assert drive.usage(client, USER) == 14
    before = client.mutations
    gone = drive.delete_many(client, USER, [(FILE, f.id) for f in files] + [(FOLDER, sub.id)])
    assert client.mutations - before == 1
    assert len(gone) == 4 and names(client, ROOT) == []
    assert drive.usage(client, USER) == 5  # the folder's contents go with the clean-up
    assert drive.purge(client, USER)
    assert drive.usage(client, USER) == 0
    assert all(client.get(drive.content_row(USER, f.id), drive.DATA_COL) is None for f in files)
