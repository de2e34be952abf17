"""The drive's data model (shards.model.drive) on the real state machine, without sockets."""

from __future__ import annotations

import io
import os
import threading

import pytest

from raftkv.errors import ConditionFailed
from shards.model import drive
from shards.model.drive import FILE, FOLDER, ROOT
from shards.model.drive.records import path_conditions

from .._memstore import MemClient, shards_of

USER = "alice"
QUOTA = 1 << 20


@pytest.fixture
def client() -> MemClient:
    return MemClient()


def put_file(client, parent: str, name: str, content: bytes = b"hello", quota: int = QUOTA):
    return drive.store_file(client, USER, parent, name, io.BytesIO(content), size=len(content),
                            quota=quota, ctype="text/plain")


def names(client, folder: str) -> list[str]:
    return sorted(i.name for i in drive.list_folder(client, USER, folder).items)


def test_nested_folders_list_and_path(client):
    docs = drive.create_folder(client, USER, ROOT, "docs")
    work = drive.create_folder(client, USER, docs.id, "work")
    put_file(client, work.id, "plan.txt")
    assert names(client, ROOT) == ["docs"]
    assert names(client, docs.id) == ["work"]
    assert names(client, work.id) == ["plan.txt"]
    assert [f.name for f in drive.folder_path(client, USER, work.id)] == ["", "docs", "work"]
    with pytest.raises(drive.NoSuchItem):
        drive.folder_path(client, USER, drive.new_id())


def test_every_name_is_unique_per_folder(client):
    docs = drive.create_folder(client, USER, ROOT, "docs")
    put_file(client, ROOT, "a.txt")
    put_file(client, docs.id, "a.txt")  # another folder: fine
    for make in (lambda: drive.create_folder(client, USER, ROOT, "docs"),
                 lambda: drive.create_folder(client, USER, ROOT, "a.txt"),
                 lambda: put_file(client, ROOT, "a.txt"),
                 lambda: put_file(client, ROOT, "docs")):
        with pytest.raises(drive.NameTaken):
            make()
    b = put_file(client, ROOT, "b.txt")
    with pytest.raises(drive.NameTaken):
        drive.rename(client, USER, FILE, b.id, "a.txt")
    [a_root] = [i for i in drive.list_folder(client, USER, ROOT).items if i.name == "a.txt"]
    with pytest.raises(drive.NameTaken):  # docs/a.txt exists
        drive.move(client, USER, FILE, a_root.id, docs.id)
    assert names(client, ROOT) == ["a.txt", "b.txt", "docs"]


def content_rows(client) -> list[str]:
    return [row for shard in shards_of(client.store).values() for row in shard if "/file:" in row]


def test_a_refused_upload_leaves_no_bytes_behind(client):
    put_file(client, ROOT, "a.txt")
    with pytest.raises(drive.NameTaken):
        put_file(client, ROOT, "a.txt")
    writes = [row for m, row in client.ops if m in ("put", "put_stream") and "/file:" in row]
    assert len(writes) == 1  # the second was refused before any byte moved
    assert len(content_rows(client)) == 1


def test_rename_and_move_are_one_mutation_and_never_touch_the_bytes(client):
    src = drive.create_folder(client, USER, ROOT, "src")
    dst = drive.create_folder(client, USER, ROOT, "dst")
    item = put_file(client, src.id, "big.bin", os.urandom(4096))
    client.ops.clear()
    drive.rename(client, USER, FILE, item.id, "renamed.bin")
    drive.move(client, USER, FILE, item.id, dst.id)
    drive.move(client, USER, FOLDER, src.id, dst.id)
    drive.rename(client, USER, FOLDER, src.id, "inner")
    writes = [(m, r) for m, r in client.ops if m not in ("get", "get_row")]
    assert writes == [("mutate_row", drive.drive_row(USER))] * 4
    assert names(client, dst.id) == ["inner", "renamed.bin"]
    assert names(client, ROOT) == ["dst"]
    moved = drive.get_file(client, USER, item.id)
    assert (moved.parent, moved.name) == (dst.id, "renamed.bin")
    _, size, chunks = drive.open_file(client, USER, item.id)
    assert size == 4096 and len(b"".join(chunks)) == 4096


def test_a_folder_cannot_move_into_itself_or_below(client):
    a = drive.create_folder(client, USER, ROOT, "a")
    b = drive.create_folder(client, USER, a.id, "b")
    c = drive.create_folder(client, USER, b.id, "c")
    for target in (a.id, b.id, c.id):
        with pytest.raises(drive.BadMove):
            drive.move(client, USER, FOLDER, a.id, target)
    with pytest.raises(drive.BadMove):
        drive.move(client, USER, FOLDER, ROOT, a.id)
    drive.move(client, USER, FOLDER, c.id, ROOT)  # up is fine
    assert names(client, ROOT) == ["a", "c"]


def test_depth_is_bounded(client):
    parent = ROOT
    for level in range(drive.MAX_DEPTH):
        parent = drive.create_folder(client, USER, parent, f"l{level}").id
    with pytest.raises(drive.TooDeep):
        drive.create_folder(client, USER, parent, "one-too-many")
    side = drive.create_folder(client, USER, ROOT, "side")
    drive.create_folder(client, USER, side.id, "child")
    with pytest.raises(drive.TooDeep):
        drive.move(client, USER, FOLDER, side.id, parent)


def test_quota_is_checked_before_and_while_storing(client):
    put_file(client, ROOT, "half", b"x" * 600, quota=1000)
    assert drive.usage(client, USER) == 600
    with pytest.raises(drive.QuotaExceeded):
        put_file(client, ROOT, "declared", b"y" * 500, quota=1000)
    # A stream of unknown size is cut off once it passes the quota.
    with pytest.raises(drive.QuotaExceeded):
        drive.store_file(client, USER, ROOT, "streamed", io.BytesIO(b"z" * 5000), quota=1000)
    assert names(client, ROOT) == ["half"]
    assert drive.usage(client, USER) == 600
    assert len(content_rows(client)) == 1


def test_deleting_a_file_frees_its_bytes_and_quota(client):
    item = put_file(client, ROOT, "a.txt", b"x" * 100)
    drive.delete_file(client, USER, item.id)
    assert names(client, ROOT) == []
    assert drive.usage(client, USER) == 0
    assert client.get(drive.content_row(USER, item.id), "data") is None
    assert drive.pending(client, USER) == []
    with pytest.raises(drive.NoSuchItem):
        drive.delete_file(client, USER, item.id)


def _tree(client):
    top = drive.create_folder(client, USER, ROOT, "top")
    files = [put_file(client, top.id, f"f{i}", b"x" * 10) for i in range(30)]
    sub = drive.create_folder(client, USER, top.id, "sub")
    deeper = drive.create_folder(client, USER, sub.id, "deeper")
    files += [put_file(client, deeper.id, "leaf", b"y" * 7)]
    return top, sub, deeper, files


def test_deleting_a_tree_is_one_step_then_a_clean_up(client):
    keep = put_file(client, ROOT, "keep", b"k")
    top, sub, deeper, files = _tree(client)
    assert drive.usage(client, USER) == 1 + 30 * 10 + 7
    client.ops.clear()
    drive.delete_folder(client, USER, top.id)
    assert [m for m, _ in client.ops if m != "get"] == ["mutate_row"]
    assert names(client, ROOT) == ["keep"]
    for gone in (top, sub, deeper):  # unreachable at once, subfolders included
        with pytest.raises(drive.NoSuchItem):
            drive.folder_path(client, USER, gone.id)
    assert drive.purge(client, USER)
    assert drive.usage(client, USER) == 1
    row = client.get_row(drive.drive_row(USER))
    assert not [c for c in row if top.id in c or sub.id in c or deeper.id in c]
    assert all(client.get(drive.content_row(USER, f.id), "data") is None for f in files)
    assert drive.get_file(client, USER, keep.id) is not None


def test_an_interrupted_clean_up_is_resumed(client):
    top, _, _, files = _tree(client)
    drive.delete_folder(client, USER, top.id)
    assert drive.purge(client, USER, deadline=0) is False  # stops at once
    assert drive.pending(client, USER) == [(top.id, "d")]
    assert drive.purge(client, USER) is True
    assert drive.pending(client, USER) == []
    assert drive.usage(client, USER) == 0


def test_a_file_landing_in_a_tree_being_cleaned_is_cleaned_too(client):
    top, sub, _, _ = _tree(client)
    path = drive.folder_path(client, USER, sub.id)  # read before the delete
    drive.delete_folder(client, USER, top.id)
    with pytest.raises(drive.NoSuchItem):  # a new upload cannot reach the deleted tree
        put_file(client, sub.id, "late")
    # Even a mutation prepared from the earlier read fails: the path changed.
    with pytest.raises(ConditionFailed):
        client.mutate_row(drive.drive_row(USER), path_conditions(path), [])
    drive.purge(client, USER)
    assert drive.usage(client, USER) == 0


def test_walk_files_gives_relative_paths(client):
    top, _, _, _ = _tree(client)
    paths = [p for p, _ in drive.walk_files(client, USER, top.id)]
    assert paths[:2] == ["f0", "f1"] and paths[-1] == "sub/deeper/leaf" and len(paths) == 31


def test_names_that_cannot_be_keys_are_refused(client):
    for bad in ("", "a/b", "x" * 256):
        with pytest.raises(drive.BadName):
            drive.create_folder(client, USER, ROOT, bad)


def test_racing_creates_and_renames_in_one_folder_all_land(client):
    folder = drive.create_folder(client, USER, ROOT, "shared")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                item = put_file(client, folder.id, f"w{n}-{i}")
                drive.rename(client, USER, FILE, item.id, f"w{n}-{i}-renamed")
                drive.create_folder(client, USER, folder.id, f"d{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    listing = names(client, folder.id)
    assert len(listing) == 80
    assert drive.usage(client, USER) == 40 * 5
