"""The drive's Trash and Versions pages (portal.drive_trash) over the in-memory store: a
delete goes to Trash with an Undo, restores say where they went, deleting for good asks."""

from __future__ import annotations

import io
import re
import time

import pytest
from werkzeug.test import Client as HTTPClient

from shards.model import accounts, drive

from .._memstore import MemClient
from .._portal import PASSWORD, entries, logged_in, new_folder, notice, post, upload

_ID = "[0-9a-f]{24}"
DAY = 86400.0


@pytest.fixture
def store() -> MemClient:
    store = MemClient()
    accounts.create_user(store, "fred", PASSWORD)
    return store


@pytest.fixture
def http(app) -> HTTPClient:
    return logged_in(app, "fred")


def test_delete_goes_to_trash_with_an_undo_and_the_undo_puts_it_back(http):
    docs = new_folder(http, "docs")
    upload(http, "a.txt", b"hello", folder=docs)
    file_id = entries(http, docs)["a.txt"]
    gone = post(http, f"/drive/{file_id}/delete", {"confirm": "yes"}, f"/drive/d/{docs}")
    assert gone.status_code == 303
    assert gone.location.endswith(f"/drive/d/{docs}?done=trashed&undo={file_id}")
    page = http.get(gone.location).text
    assert notice(page) == "Moved to Trash." and entries(http, docs) == {}
    assert f'name="item" value="{file_id}"' in page and ">Undo</button>" in page
    trash = http.get("/drive/trash").text
    assert "a.txt" in trash and "Drive / docs" in trash and "5 bytes" in trash
    undone = post(http, "/drive/trash/restore", {"item": file_id}, f"/drive/d/{docs}")
    assert undone.location.endswith(f"/drive/d/{docs}?done=restored")
    assert entries(http, docs) == {"a.txt": file_id}
    again = post(http, "/drive/trash/restore", {"item": file_id}, "/drive")  # Undo twice
    assert again.location.endswith("/drive/trash?done=trash-none")


def test_restore_says_when_it_renamed_or_used_the_top_folder(http):
    docs = new_folder(http, "docs")
    upload(http, "a.txt", b"one", folder=docs)
    first = entries(http, docs)["a.txt"]
    post(http, f"/drive/{first}/delete", {"confirm": "yes"}, "/drive")
    upload(http, "a.txt", b"two", folder=docs)
    renamed = post(http, "/drive/trash/restore", {"item": first}, "/drive/trash")
    assert renamed.location.endswith("done=restored-renamed")
    assert "Restored under a new name" in http.get(renamed.location).text
    assert set(entries(http, docs)) == {"a.txt", "a (1).txt"}
    post(http, f"/drive/{first}/delete", {"confirm": "yes"}, "/drive")
    post(http, f"/drive/d/{docs}/delete", {"confirm": "yes"}, "/drive")
    to_root = post(http, "/drive/trash/restore", {"item": first}, "/drive/trash")
    assert to_root.location.endswith("/drive?done=restored-root")
    assert entries(http)["a (1).txt"] == first


def test_delete_forever_and_empty_trash_ask_first(http, store):
    upload(http, "a.txt", b"aaa")
    upload(http, "b.txt", b"bbbb")
    ids = entries(http)
    for file_id in ids.values():
        post(http, f"/drive/{file_id}/delete", {"confirm": "yes"}, "/drive")
    assert drive.usage(store, "fred") == 7  # the Trash counts
    ask = http.get(f"/drive/trash/delete?item={ids['a.txt']}")
    assert ask.status_code == 200 and "Delete “a.txt” forever?" in ask.text
    unasked = post(http, "/drive/trash/delete", {"item": ids["a.txt"]}, "/drive/trash")
    assert unasked.status_code == 200 and len(drive.list_trash(store, "fred")) == 2
    done = post(http, "/drive/trash/delete", {"item": ids["a.txt"], "confirm": "yes"},
                "/drive/trash")
    assert done.location.endswith("/drive/trash?done=trash-deleted")
    assert drive.usage(store, "fred") == 4
    question = http.get("/drive/trash/empty")
    assert "Empty the Trash?" in question.text and "b.txt" in question.text
    emptied = post(http, "/drive/trash/empty", {"confirm": "yes"}, "/drive/trash")
    assert emptied.location.endswith("done=trash-emptied")
    assert "The Trash is empty." in http.get("/drive/trash").text
    assert drive.usage(store, "fred") == 0 and drive.pending(store, "fred") == []


def test_another_users_ids_and_junk_are_not_found(http, store, app):
    accounts.create_user(store, "gina", PASSWORD)
    other = logged_in(app, "gina")
    upload(other, "secret.txt", b"s")
    secret = entries(other)["secret.txt"]
    post(other, f"/drive/{secret}/delete", {"confirm": "yes"}, "/drive")
    assert post(http, "/drive/trash/restore", {"item": secret}, "/drive").location.endswith(
        "done=trash-none")
    assert http.get(f"/drive/trash/delete?item={secret}").status_code == 404
    assert http.get("/drive/trash/delete?item=../etc").status_code == 404
    assert http.get(f"/drive/{secret}/versions").status_code == 404
    assert len(drive.list_trash(store, "gina")) == 1


def test_replace_keeps_versions_listed_downloadable_and_restorable(http):
    upload(http, "a.txt", b"first")
    file_id = entries(http)["a.txt"]
    held = re.findall(r'name="held" value="([0-9a-f]{24})"', upload(http, "a.txt", b"second!").text)
    post(http, "/drive/held", {"held": held[0], f"choice-{held[0]}": "replace"}, "/drive")
    assert http.get(f"/drive/{file_id}").data == b"second!"
    page = http.get(f"/drive/{file_id}/versions").text
    (old,) = re.findall(rf'href="/drive/{file_id}/versions/({_ID})"', page)
    assert http.get(f"/drive/{file_id}/versions/{old}").data == b"first"
    assert "attachment" in http.get(f"/drive/{file_id}/versions/{old}").headers[
        "Content-Disposition"]
    expect = re.search(r'name="expect" value="(\d+)"', page).group(1)
    stale = post(http, f"/drive/{file_id}/versions/{old}/restore",
                 {"expect": str(int(expect) - 1)}, f"/drive/{file_id}/versions")
    assert stale.status_code == 409 and "changed since you saw it" in stale.text
    done = post(http, f"/drive/{file_id}/versions/{old}/restore", {"expect": expect},
                f"/drive/{file_id}/versions")
    assert done.location.endswith(f"/drive/{file_id}/versions?done=version-restored")
    assert http.get(f"/drive/{file_id}").data == b"first"
    page = http.get(f"/drive/{file_id}/versions").text
    (older,) = re.findall(rf'href="/drive/{file_id}/versions/({_ID})"', page)
    assert http.get(f"/drive/{file_id}/versions/{older}").data == b"second!"


def test_the_frontends_sweep_empties_the_drives_old_trash_a_bounded_bit_a_visit(store):
    from types import SimpleNamespace

    from portal.heartbeat import TrashSweeper

    folder = drive.create_folder(store, "fred", drive.ROOT, "old")
    old = [drive.store_file(store, "fred", folder.id, f"{n}.txt", io.BytesIO(b"x"), size=1,
                            quota=1 << 20) for n in range(30)]
    recent = drive.store_file(store, "fred", drive.ROOT, "new.txt", io.BytesIO(b"yy"), size=2,
                              quota=1 << 20)
    now = time.time()
    drive.trash_many(store, "fred", [(drive.FILE, f.id) for f in old[:20]], now=now - 40 * DAY)
    drive.trash(store, "fred", folder.id, kind=drive.FOLDER, now=now - 31 * DAY)
    drive.trash(store, "fred", recent.id, now=now - 20 * DAY)
    portal = SimpleNamespace(client=lambda: store, config=SimpleNamespace(
        cluster=SimpleNamespace(shards=store.store.shard_count)))
    sweeper = TrashSweeper(portal, interval=3600)  # type: ignore[arg-type]
    sweeper.clock = lambda: now
    sweeper.sweep_drive(store, "fred")  # one visit: the 21 due (at most 25 a visit)
    assert [t.item.name for t in drive.list_trash(store, "fred")] == ["new.txt"]
    assert drive.pending(store, "fred") == [] and drive.usage(store, "fred") == 2
    seen: set[str] = set()
    for _ in range(2 * store.store.shard_count + 2):  # the walk reaches fred
        sweeper.step()
        seen.update(sweeper.last_step)
    assert "fred" in seen and len(drive.list_trash(store, "fred")) == 1


def test_empty_trash_is_bounded_per_request_and_says_so(http, store, monkeypatch):
    import portal.drive_trash

    monkeypatch.setattr(portal.drive_trash, "EMPTY_IN_REQUEST", 2)
    for n in range(3):
        upload(http, f"{n}.txt", b"x")
    for file_id in entries(http).values():
        post(http, f"/drive/{file_id}/delete", {"confirm": "yes"}, "/drive")
    part = post(http, "/drive/trash/empty", {"confirm": "yes"}, "/drive/trash")
    assert part.location.endswith("done=trash-emptied-part&n=2")
    assert len(drive.list_trash(store, "fred")) == 1
    rest = post(http, "/drive/trash/empty", {"confirm": "yes"}, "/drive/trash")
    assert rest.location.endswith("done=trash-emptied") and drive.list_trash(store, "fred") == []


def test_a_file_below_a_trashed_folder_is_not_served(http):
    docs = new_folder(http, "docs")
    deep = new_folder(http, "deep", docs)
    upload(http, "in.txt", b"inside", folder=deep)
    file_id = entries(http, deep)["in.txt"]
    assert http.get(f"/drive/{file_id}").data == b"inside"
    post(http, f"/drive/d/{docs}/delete", {"confirm": "yes"}, "/drive")
    for path in (f"/drive/{file_id}", f"/drive/{file_id}/versions"):
        assert http.get(path).status_code == 404 and http.head(path).status_code == 404
    post(http, "/drive/trash/restore", {"item": docs}, "/drive/trash")
    assert http.get(f"/drive/{file_id}").data == b"inside"
