"""The drive's choices without a script (portal.drive, portal.drive_select): a name clash
asks "Replace" or "Keep both" and never overwrites unasked; several items move or go at
once, deleting after a question that lists them; every size is in one style."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import Client as HTTPClient

from portal.drive import DRIVE_CSP, DRIVE_SCRIPT_HASH
from portal.sizes import human_size
from shards.model import accounts, drive

from .._memstore import MemClient
from .._portal import PASSWORD, csrf_of, entries, logged_in, new_folder, notice, post, upload

SCRIPT = Path(__file__).resolve().parents[2] / "portal" / "static" / "drive.js"
_HELD = re.compile(r'name="held" value="([0-9a-f]{24})"')


@pytest.fixture
def store() -> MemClient:
    store = MemClient()
    accounts.create_user(store, "dana", PASSWORD)
    return store


@pytest.fixture
def http(app) -> HTTPClient:
    return logged_in(app, "dana")


def answer(http: HTTPClient, held: str, choice: str):
    return post(http, "/drive/held", {"held": held, f"choice-{held}": choice}, "/drive")


def test_sizes_have_one_style():
    assert [human_size(n) for n in (0, 1, 12, 1023, 1024, 1536, 348_160, 1_258_291, 10_752,
                                    1_048_575, 1 << 30)] == [
        "0 bytes", "1 byte", "12 bytes", "1023 bytes", "1 KB", "1.5 KB", "340 KB", "1.2 MB",
        "11 KB", "1 MB", "1 GB"]


def test_the_drive_pages_show_sizes_in_that_style(http):
    upload(http, "photo.jpg", b"x" * 1_258_291)
    page = http.get("/drive", follow_redirects=True).text
    assert '<td class="num size" title="1,258,291 bytes">1.2 MB</td>' in page
    assert "Using 1.2 MB of 1 GB" in page  # the quota line too
    question = http.get(f"/drive/{entries(http)['photo.jpg']}/delete").text
    assert "1.2 MB, last changed" in question


def test_a_name_clash_asks_and_keep_both_takes_the_next_number(http):
    upload(http, "a.txt", b"first")
    upload(http, "a (1).txt", b"other")
    clash = upload(http, "a.txt", b"second")
    assert clash.status_code == 409
    assert "“a.txt” is already here" in clash.text
    assert 'value="replace"' in clash.text and 'value="keep"' in clash.text
    held = _HELD.findall(clash.text)
    assert len(held) == 1
    assert set(entries(http)) == {"a.txt", "a (1).txt"}  # nothing placed yet
    unanswered = post(http, "/drive/held", {"held": held[0]}, "/drive")
    assert unanswered.status_code == 400 and "for each file" in unanswered.text
    done = answer(http, held[0], "keep")
    assert done.status_code == 303 and done.location.endswith("/drive?done=uploaded")
    ids = entries(http)
    assert set(ids) == {"a.txt", "a (1).txt", "a (2).txt"}
    assert http.get(f"/drive/{ids['a.txt']}").data == b"first"
    assert http.get(f"/drive/{ids['a (2).txt']}").data == b"second"


def test_replace_swaps_the_file_the_user_saw_and_no_other(http, store):
    upload(http, "a.txt", b"first")
    old = entries(http)["a.txt"]
    held = _HELD.findall(upload(http, "a.txt", b"second").text)[0]
    # Changed before the answer: renamed away and back (another version of the file).
    post(http, f"/drive/{old}/rename", {"name": "b.txt"}, "/drive")
    post(http, f"/drive/{old}/rename", {"name": "a.txt"}, "/drive")
    again = answer(http, held, "replace")
    assert again.status_code == 409 and "has changed since you were asked" in again.text
    assert _HELD.findall(again.text) == [held]  # the question again
    assert http.get(f"/drive/{old}").data == b"first"
    done = answer(http, held, "replace")
    assert done.status_code == 303
    ids = entries(http)
    assert set(ids) == {"a.txt"} and ids["a.txt"] == old  # the same file, a new version
    assert http.get(f"/drive/{old}").data == b"second"
    assert b"first" in b"".join(  # the old bytes are its newest earlier version
        drive.open_version(store, "dana", old, drive.list_versions(store, "dana", old)[1][0].content)[2])


def test_a_cancelled_clash_leaves_nothing(http, store):
    upload(http, "a.txt", b"first")
    held = _HELD.findall(upload(http, "a.txt", b"x" * 5000).text)[0]
    done = answer(http, held, "cancel")
    assert done.location.endswith("done=upload-cancelled")
    assert set(entries(http)) == {"a.txt"}
    assert store.get(drive.content_row("dana", held), drive.DATA_COL) is None  # no bytes left
    assert store.get_row(drive.drive_row("dana"), prefix="h:") == {}


def test_the_script_asks_for_json_and_gets_the_clash(http):
    upload(http, "a.txt", b"first")
    answer_ = http.post("/drive/upload", headers={"Accept": "application/json"}, data={
        "csrf": csrf_of(http, "/drive"), "folder": "root",
        "file": FileStorage(io.BytesIO(b"again"), filename="a.txt")})
    assert answer_.status_code == 409
    clash = answer_.json["clashes"][0]
    assert clash["name"] == "a.txt" and clash["replace"] is True
    placed = http.post("/drive/held", headers={"Accept": "application/json"}, data={
        "csrf": csrf_of(http, "/drive"), "folder": "root", "held": clash["held"],
        f"choice-{clash['held']}": "keep"})
    assert placed.json == {"placed": ["a (1).txt"]}


def test_several_move_and_go_at_once_and_delete_asks_first(http):
    target = new_folder(http, "target")
    sub = new_folder(http, "sub")
    for name in ("x.txt", "y.txt", "z.txt"):
        upload(http, name, b"12345")
    ids = entries(http)
    chosen = [f"file:{ids['x.txt']}", f"file:{ids['y.txt']}", f"folder:{sub}"]
    nothing = post(http, "/drive/select", {"action": "move", "folder": "root"}, "/drive")
    assert nothing.status_code == 400 and "Tick the files and folders to move" in nothing.text
    question = post(http, "/drive/select", {"action": "move", "folder": "root", "item": chosen},
                    "/drive")
    assert question.status_code == 200 and "Move 3 items" in question.text
    assert sub not in re.findall(r'name="target" value="([^"]+)"', question.text)
    moved = post(http, "/drive/select", {"action": "move", "folder": "root", "item": chosen,
                                         "target": target}, "/drive")
    assert moved.status_code == 303 and moved.location.endswith(f"/drive/d/{target}?done=moved-n&n=3")
    assert notice(http.get(moved.location).text) == "Moved 3 items."
    assert set(entries(http, target)) == {"x.txt", "y.txt", "sub"}
    inside = entries(http, target)
    chosen = [f"file:{inside['x.txt']}", f"folder:{sub}"]
    ask = post(http, "/drive/select", {"action": "delete", "folder": target, "item": chosen},
               "/drive")
    assert ask.status_code == 200 and "Move 2 items to Trash?" in ask.text
    assert "“x.txt”, 5 bytes" in ask.text and "Folder “sub” and everything inside it" in ask.text
    assert set(entries(http, target)) == {"x.txt", "y.txt", "sub"}  # asked, nothing gone yet
    gone = post(http, "/drive/select", {"action": "delete", "folder": target, "item": chosen,
                                        "confirm": "yes"}, "/drive")
    assert gone.location.endswith(f"done=trashed-n&n=2&undo={chosen[0][5:]},{sub}")
    assert set(entries(http, target)) == {"y.txt"}
    page = http.get(gone.location).text
    assert notice(page) == "Moved 2 items to Trash." and 'action="/drive/trash/restore"' in page
    undone = post(http, "/drive/trash/restore", {"item": [chosen[0][5:], sub]}, "/drive")
    assert undone.location.endswith(f"/drive/d/{target}?done=restored-n&n=2")
    assert set(entries(http, target)) == {"x.txt", "y.txt", "sub"}


def test_the_drive_script_runs_by_its_hash_only(http):
    digest = base64.b64encode(hashlib.sha256(SCRIPT.read_bytes()).digest()).decode()
    assert DRIVE_SCRIPT_HASH == f"sha256-{digest}"
    assert "'self'" not in DRIVE_CSP.split("script-src")[1].split(";")[0]
    page = http.get("/drive")
    assert page.headers["Content-Security-Policy"] == DRIVE_CSP
    assert f'<script src="/static/drive.js" integrity="{DRIVE_SCRIPT_HASH}" defer>' in page.text
