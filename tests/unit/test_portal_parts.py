"""Portal parts that need no cluster: the shared load, the data browser's
display of values, the supervisor token, drive sorting and content types."""

from __future__ import annotations

import os
import struct

import msgpack
import pytest

from deploy.launcher import control_token as launcher_token
from portal.admin import show_value
from portal.drive import download_type, sorted_items
from portal.filenames import plain_filename
from portal.load import LoadCounter
from shards.control import control_token
from shards.model.drive import FILE, FOLDER, Item


def test_the_supervisor_token_is_the_launchers():
    assert launcher_token is control_token  # one definition, both ends of the control API
    assert control_token(b"s" * 32) == launcher_token(b"s" * 32)
    assert control_token(b"s" * 32) != control_token(b"t" * 32)


def test_load_is_summed_over_the_live_workers_of_a_frontend(tmp_path):
    counter = LoadCounter(str(tmp_path))
    sibling = os.getppid()  # a live process standing in for another worker
    (tmp_path / str(sibling)).write_bytes(struct.pack("<q", 3))
    dead = tmp_path / "999999999"
    dead.write_bytes(struct.pack("<q", 50))
    (tmp_path / "junk").write_bytes(b"x")
    counter.enter()
    counter.enter()
    counter.leave()
    assert counter.workers() == {os.getpid(): 1, sibling: 3}
    assert counter.total() == 4
    assert not dead.exists()  # a dead worker's count is dropped
    assert struct.unpack("<q", (tmp_path / str(os.getpid())).read_bytes()) == (1,)


def test_without_a_shared_directory_the_load_is_this_process():
    counter = LoadCounter(None)
    counter.enter()
    assert counter.workers() == {os.getpid(): 1} and counter.total() == 1


@pytest.mark.parametrize("value, kind, shown", [
    (b"hello <b>", "text", "hello <b>"),
    (b"\x00\x01\xff" * 40, "hex", "00 01 ff 00"),
    (msgpack.packb({"n": "a.txt", "size": 3}), "msgpack", "{'n': 'a.txt', 'size': 3}"),
    (msgpack.packb({"v": 1, "size": 5_000_000, "chunks": [b"x" * 32] * 5}), "blob",
     "large value: 5,000,000 bytes in 5 chunk(s)"),
    (b"x" * 5000, "text", "… (5,000 bytes)"),
    (msgpack.packb({"v": 1, "name": "ann", "hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"}),
     "msgpack", "'hash': '(hidden)'"),
])
def test_the_data_browser_shows_values_safely_and_briefly(value, kind, shown):
    result = show_value(value)
    assert result["kind"] == kind and shown in result["text"]
    assert "argon2" not in result["text"]  # a password hash is never on a page
    assert len(result["text"]) < 400 and result["size"] == len(value)


def _item(name: str, kind: str = FILE, size: int = 0, modified: float = 0.0) -> Item:
    return Item(id=name, kind=kind, name=name, parent="root", size=size, modified=modified)


def test_folders_come_first_whatever_the_order():
    items = [_item("b", size=1, modified=3), _item("A", size=9, modified=1),
             _item("z", FOLDER, modified=2), _item("c", FOLDER, modified=0)]
    assert [i.name for i in sorted_items(items, "name", "asc")] == ["c", "z", "A", "b"]
    assert [i.name for i in sorted_items(items, "name", "desc")] == ["z", "c", "b", "A"]
    assert [i.name for i in sorted_items(items, "size", "desc")] == ["z", "c", "A", "b"]
    assert [i.name for i in sorted_items(items, "date", "asc")] == ["c", "z", "A", "b"]
    assert [i.name for i in sorted_items(items, "bogus", "asc")] == ["c", "z", "A", "b"]


def test_download_types_come_from_the_upload_or_the_name():
    assert download_type(Item("1", FILE, "x.bin", "root", ctype="image/png")) == "image/png"
    assert download_type(Item("1", FILE, "notes.txt", "root")) == "text/plain"
    assert download_type(Item("1", FILE, "a.tar.gz", "root")) == "application/octet-stream"
    assert download_type(Item("1", FILE, "noext", "root")) == "application/octet-stream"


@pytest.mark.parametrize(("given", "offered"), [
    ("../../\r\n x.html", "x.html"),
    ("..\\..\\evil.exe", "evil.exe"),
    ("report.pdf", "report.pdf"),
    ("a/..", "(unnamed)"),
    ("\u202etxt.exe", "txt.exe"),
    (None, "(unnamed)"),
    ("", "(unnamed)"),
])
def test_an_attachment_name_is_offered_as_a_plain_name(given, offered):
    assert plain_filename(given, "(unnamed)") == offered
