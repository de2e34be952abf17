"""The drive's Trash and versions (shards.model.drive.trash, .versions): each change one
mutate_row, restores that say where they went, quota that counts both, clean-up markers."""

from __future__ import annotations

import io

import pytest

from shards.model import drive
from shards.model.drive import FILE, FOLDER, ROOT

from .._drive import stored
from .._memstore import CountingClient, shards_of

USER = "erin"
QUOTA = 1 << 20
DAY = 86400.0


@pytest.fixture
def client() -> CountingClient:
    return CountingClient()


def put(client, parent: str, name: str, content: bytes = b"hello") -> drive.Item:
    return stored(client, USER, parent, name, content, quota=QUOTA)


def names(client, folder: str = ROOT) -> list[str]:
    return sorted(i.name for i in drive.list_folder(client, USER, folder).items)


def content(client, file_id: str) -> bytes:
    return b"".join(drive.open_file(client, USER, file_id)[2])


def bytes_rows(client) -> int:
    """How many file: rows hold bytes."""
    rows = {row for shard in shards_of(client.store).values() for row in shard
            if row.startswith(f"{{{USER}}}/file:")}
    return sum(1 for row in rows if client.get(row, drive.DATA_COL) is not None)


def overwrite(client, file_id: str, data: bytes, **kwargs) -> drive.Item:
    cid, size = drive.put_content(client, USER, io.BytesIO(data), size=len(data), quota=QUOTA)
    return drive.overwrite(client, USER, file_id, drive.Content(cid, size), quota=QUOTA, **kwargs)


def test_trash_is_one_mutation_frees_the_name_and_keeps_the_quota(client):
    docs = drive.create_folder(client, USER, ROOT, "docs")
    item = put(client, docs.id, "a.txt", b"12345")
    before = client.mutations
    drive.trash(client, USER, item.id)
    assert client.mutations - before == 1
    assert names(client, docs.id) == [] and drive.get_file(client, USER, item.id) is None
    assert drive.usage(client, USER) == 5  # trash counts
    (found,) = drive.list_trash(client, USER)
    assert (found.item.name, found.place, found.size) == ("a.txt", "docs", 5)
    put(client, docs.id, "a.txt", b"new")  # the name is free
    restored = drive.restore(client, USER, item.id)
    assert restored.renamed and not restored.to_root
    assert restored.item.name == "a (1).txt" and restored.item.parent == docs.id
    assert content(client, item.id) == b"12345"
    assert drive.list_trash(client, USER) == []
    with pytest.raises(drive.NoSuchItem):
        drive.restore(client, USER, item.id)


def test_a_trashed_folder_keeps_its_tree_and_comes_back_whole(client):
    top = drive.create_folder(client, USER, ROOT, "top")
    sub = drive.create_folder(client, USER, top.id, "sub")
    put(client, sub.id, "deep.txt", b"x" * 10)
    put(client, top.id, "a.txt", b"y" * 7)
    rows = bytes_rows(client)
    drive.trash(client, USER, top.id, kind=FOLDER)
    assert names(client) == [] and bytes_rows(client) == rows  # no byte moved or went
    (found,) = drive.list_trash(client, USER)
    assert found.size == 17 and found.counted and found.item.is_folder
    with pytest.raises(drive.NoSuchItem):  # nothing below it is reachable by path
        drive.folder_path(client, USER, sub.id)
    drive.restore(client, USER, top.id)
    assert names(client) == ["top"] and names(client, sub.id) == ["deep.txt"]
    assert drive.folder_path(client, USER, sub.id)[-1].name == "sub"


def test_restore_with_the_parent_gone_goes_to_the_top_folder(client):
    docs = drive.create_folder(client, USER, ROOT, "docs")
    item = put(client, docs.id, "a.txt")
    drive.trash(client, USER, item.id)
    drive.trash(client, USER, docs.id, kind=FOLDER)  # its folder follows it into the Trash
    restored = drive.restore(client, USER, item.id)
    assert restored.to_root and restored.item.parent == ROOT and names(client) == ["a.txt"]
    drive.delete_forever(client, USER, [docs.id])
    assert drive.purge(client, USER)
    assert names(client) == ["a.txt"] and drive.list_trash(client, USER) == []


def test_trash_many_is_one_mutation_and_expect_guards_a_single_item(client):
    files = [put(client, ROOT, f"{n}.txt") for n in range(5)]
    before = client.mutations
    drive.trash_many(client, USER, [(FILE, f.id) for f in files])
    assert client.mutations - before == 1 and names(client) == []
    other = put(client, ROOT, "b.txt")
    drive.rename(client, USER, FILE, other.id, "c.txt")
    with pytest.raises(drive.Changed):  # the WebDAV If-Match case
        drive.trash(client, USER, other.id, expect=other.version)
    assert names(client) == ["c.txt"]


def test_delete_forever_and_empty_leave_markers_then_nothing(client):
    top = drive.create_folder(client, USER, ROOT, "top")
    put(client, top.id, "in.txt", b"z" * 30)
    loose = put(client, ROOT, "loose.txt", b"q" * 20)
    overwrite(client, loose.id, b"r" * 25)
    assert drive.usage(client, USER) == 75
    drive.trash_many(client, USER, [(FOLDER, top.id), (FILE, loose.id)])
    assert drive.usage(client, USER) == 75
    # One for good by itself: its bytes and its version go at once.
    (gone,) = drive.delete_forever(client, USER, [loose.id])
    assert gone.item.id == loose.id and drive.usage(client, USER) == 30
    assert client.get_row(drive.drive_row(USER), prefix=f"v:{loose.id}/") == {}
    # The rest by Empty trash: the folder leaves a t: marker for purge.
    assert drive.empty_trash(client, USER) == 1
    assert drive.pending(client, USER) == [(top.id, "d")]
    assert drive.purge(client, USER)
    assert drive.usage(client, USER) == 0 and bytes_rows(client) == 0
    assert drive.pending(client, USER) == [] and drive.list_trash(client, USER) == []


def test_the_sweep_takes_only_what_is_30_days_old_and_a_bounded_number(client):
    now = 1_000_000_000.0
    old = [put(client, ROOT, f"old{n}.txt") for n in range(4)]
    new = put(client, ROOT, "new.txt")
    drive.trash_many(client, USER, [(FILE, f.id) for f in old], now=now - 31 * DAY)
    drive.trash(client, USER, new.id, now=now - 29 * DAY)
    assert drive.sweep(client, USER, now=now, limit=3) == 3
    assert drive.sweep(client, USER, now=now, limit=3) == 1
    assert drive.sweep(client, USER, now=now) == 0
    assert [t.item.name for t in drive.list_trash(client, USER)] == ["new.txt"]
    assert drive.usage(client, USER) == 5


def test_quota_counts_trash_and_versions(client):
    small = 100
    item = drive.store_file(client, USER, ROOT, "a.bin", io.BytesIO(b"a" * 60), size=60,
                            quota=small)
    drive.trash(client, USER, item.id)
    with pytest.raises(drive.QuotaExceeded):  # the trashed 60 bytes still count
        drive.store_file(client, USER, ROOT, "b.bin", io.BytesIO(b"b" * 50), size=50,
                         quota=small)
    drive.restore(client, USER, item.id)
    cid, size = drive.put_content(client, USER, io.BytesIO(b"c" * 30), size=30, quota=small)
    drive.overwrite(client, USER, item.id, drive.Content(cid, size), quota=small)
    assert drive.usage(client, USER) == 90  # current 30 + the version's 60
    cid, size = drive.put_content(client, USER, io.BytesIO(b"d" * 10), size=10, quota=small)
    with pytest.raises(drive.QuotaExceeded):
        drive.overwrite(client, USER, item.id, drive.Content(cid, 20), quota=small)
    assert client.get(drive.content_row(USER, cid), drive.DATA_COL) is None  # dropped


def test_versions_keep_ten_and_mark_the_eleventh_for_clean_up(client):
    item = put(client, ROOT, "a.txt", b"v0")
    for n in range(1, 12):
        before = client.mutations
        overwrite(client, item.id, f"v{n}".encode())
        assert client.mutations - before == 1  # the step; the dropped bytes' deletes follow
    assert content(client, item.id) == b"v11"
    current, versions = drive.list_versions(client, USER, item.id)
    assert len(versions) == drive.MAX_VERSIONS
    kept = [b"".join(drive.open_version(client, USER, item.id, v.content)[2]) for v in versions]
    assert kept == [f"v{n}".encode() for n in range(10, 0, -1)]  # v0 dropped, newest first
    assert client.get(drive.content_row(USER, item.id), drive.DATA_COL) is None  # v0's bytes
    assert drive.pending(client, USER) == []
    assert bytes_rows(client) == 11
    assert drive.usage(client, USER) == 3 + 9 * 2 + 3  # "v11", and "v1".."v9" and "v10"
    assert current.id == item.id and current.name == "a.txt"


def test_a_dropped_versions_marker_is_finished_by_purge(client):
    """A crash between the step and the bytes' delete: purge drops only those bytes."""
    item = put(client, ROOT, "a.txt", b"v0")
    for n in range(1, 11):
        overwrite(client, item.id, f"v{n}".encode())
    row = drive.drive_row(USER)
    original = client.delete
    skipped: list[str] = []

    def crash_on_bytes(r, column):  # type: ignore[no-untyped-def]
        if r.startswith(f"{{{USER}}}/file:") and not skipped:
            skipped.append(r)
            raise RuntimeError("crash")
        return original(r, column)

    client.delete = crash_on_bytes  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        overwrite(client, item.id, b"v11")
    client.delete = original  # type: ignore[method-assign]
    assert drive.pending(client, USER) == [(item.id, "c")]  # v0 was in the file's own row
    assert drive.purge(client, USER)
    assert content(client, item.id) == b"v11"  # the live file is untouched
    assert len(drive.list_versions(client, USER, item.id)[1]) == 10
    assert client.get(row, f"t:{item.id}") is None


def test_restore_a_version_is_one_mutation_and_keeps_the_quota(client):
    item = put(client, ROOT, "a.txt", b"first")
    now = overwrite(client, item.id, b"second!")
    used = drive.usage(client, USER)
    _, (old,) = drive.list_versions(client, USER, item.id)
    with pytest.raises(drive.Changed):  # a page showing the file before the overwrite
        drive.restore_version(client, USER, item.id, old.content, expect=item.version)
    before = client.mutations
    back = drive.restore_version(client, USER, item.id, old.content, expect=now.version)
    assert client.mutations - before == 1
    assert content(client, item.id) == b"first" and back.size == 5
    _, versions = drive.list_versions(client, USER, item.id)
    assert [b"".join(drive.open_version(client, USER, item.id, v.content)[2])
            for v in versions] == [b"second!"]
    assert drive.usage(client, USER) == used
    with pytest.raises(drive.NoSuchItem):
        drive.open_version(client, USER, item.id, old.content)  # current now, not a version


def test_overwrite_with_expect_refuses_a_newer_file(client):
    item = put(client, ROOT, "a.txt", b"one")
    overwrite(client, item.id, b"two")
    with pytest.raises(drive.Changed):
        overwrite(client, item.id, b"three", expect=item.version)
    assert content(client, item.id) == b"two" and bytes_rows(client) == 2


def test_a_file_in_a_trashed_folder_with_versions_is_cleaned_whole(client):
    top = drive.create_folder(client, USER, ROOT, "top")
    item = put(client, top.id, "a.txt", b"aaaa")
    overwrite(client, item.id, b"bb")
    drive.trash(client, USER, top.id, kind=FOLDER)
    drive.empty_trash(client, USER)
    assert drive.purge(client, USER)
    assert bytes_rows(client) == 0 and drive.usage(client, USER) == 0
    assert client.get_row(drive.drive_row(USER), prefix="v:") == {}
