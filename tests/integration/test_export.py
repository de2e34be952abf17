"""A user downloads their own data from the Security page: the mail as mbox, the drive as
zip (docs/data-model.md, "Exporting your data"), against the session's real 3-replica
store through werkzeug's test client; the files are parsed and compared with what was
stored."""

from __future__ import annotations

import io
import mailbox as mbox_format
import os
import re
import tracemalloc
import zipfile
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from werkzeug.test import Client as HTTPClient

from shards.model import mailbox

from .._portal import new_folder, signed_up, store_portal, upload

pytestmark = pytest.mark.cluster

MBOX_URL = "/account/export/mail.mbox"


@pytest.fixture(scope="module")
def app(kv_cluster):
    with store_portal(kv_cluster, "fe-export", background=False) as portal:
        yield portal


def message(sender: str, to: str, subject: str, body: str, *, crlf: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    raw = msg.as_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def read_mbox(data: bytes, tmp_path: Path) -> list[mbox_format.mboxMessage]:
    path = tmp_path / "export.mbox"
    path.write_bytes(data)
    box = mbox_format.mbox(path, create=False)
    try:
        return [box[key] for key in box.iterkeys()]
    finally:
        box.close()


def body_of(msg: mbox_format.mboxMessage) -> str:
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(msg.get_content_charset() or "utf-8").replace("\r\n", "\n")


def test_the_mail_downloads_as_one_mbox_of_every_folder(app, client, tmp_path):
    """Each stored message comes back once, oldest first, with its sender on the "From " line
    and its body as sent -- CRLF and 8-bit UTF-8 too, and a message big enough to be a blob --
    but for a body line starting "From ", which mbox quotes as ">From " and no reader
    unquotes (the format's own loss, as every mbox writer's)."""
    http, name = signed_up(app)
    big = "".join(f"line {i:06d} of a long letter\n" for i in range(60_000))  # ~1.7 MB
    sent = [
        ("Bob <bob@example.test>", "Lunch", "Shall we?\nFrom the look of it, yes.\n", False),
        ("carol@example.test", "Grüße", "Schöne Grüße aus Köln\n", True),
        ("dave@example.test", "The report", big, False),
    ]
    ids = [mailbox.deliver(client, name, message(s, f"{name}@raftcloud.test", subj, body,
                                                 crlf=crlf))
           for s, subj, body, crlf in sent]
    ids.append(mailbox.deliver(client, name, message(f"{name}@raftcloud.test", "bob@example.test",
                                                     "Re: Lunch", "Yes!\n"), folder="sent"))
    response = http.get(MBOX_URL)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/mbox"
    assert 'filename="mail.mbox"' in response.headers["Content-Disposition"]
    assert "Content-Length" not in response.headers   # streamed
    got = read_mbox(response.data, tmp_path)
    subjects = [str(make_header(decode_header(m["Subject"]))) for m in got]
    assert subjects == ["Lunch", "Grüße", "The report", "Re: Lunch"]
    assert [m.get_from().split()[0] for m in got] == [
        "bob@example.test", "carol@example.test", "dave@example.test", f"{name}@raftcloud.test"]
    assert body_of(got[0]) == "Shall we?\n>From the look of it, yes.\n"
    assert body_of(got[1]) == "Schöne Grüße aus Köln\n"
    assert body_of(got[2]) == big
    assert body_of(got[3]) == "Yes!\n"
    other, _ = signed_up(app)   # another user's export holds none of it
    assert read_mbox(other.get(MBOX_URL).data, tmp_path) == []
    assert http.head(MBOX_URL).status_code == 200
    assert len(ids) == 4


def test_an_export_holds_one_message_at_a_time(app, client):
    """Thirty 400 KB messages (12 MB): reading the whole export allocates at its peak a few
    messages' worth (each is copied a few times on its way: the store's chunks, the mbox
    file, the answer), never the mailbox's."""
    http, name = signed_up(app)
    for i in range(30):
        body = os.urandom(300_000).hex()[:400_000]
        mailbox.deliver(client, name, message("e@example.test", "x@raftcloud.test", "x", f"{i} {body}\n"))
    tracemalloc.start()   # before the GET: the test client reads the first chunk in it
    response = http.get(MBOX_URL, buffered=False)
    total = 0
    try:
        for chunk in response.response:
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        response.close()
    assert total > 30 * 400_000
    assert peak < 10 * 400_000, f"peak {peak} bytes for an export of {total}"


def test_the_drive_downloads_as_one_zip_from_the_security_page(app):
    http, name = signed_up(app)
    page = http.get("/account").text
    assert re.search(r'<h2 id="export">Download your data</h2>', page)
    assert f'href="{MBOX_URL}"' in page and 'href="/drive/d/root/zip"' in page
    photos = new_folder(http, "photos")
    trip = new_folder(http, "trip", photos)
    files = {"notes.txt": b"hello\n", "photos/cat.jpg": os.urandom(70_000),
             "photos/trip/sea.png": os.urandom(2 * 1024 * 1024 + 5)}
    assert upload(http, "notes.txt", files["notes.txt"]).status_code in (200, 303)
    assert upload(http, "cat.jpg", files["photos/cat.jpg"], folder=photos).status_code in (200, 303)
    assert upload(http, "sea.png", files["photos/trip/sea.png"],
                  folder=trip).status_code in (200, 303)
    response = http.get("/drive/d/root/zip")
    assert response.status_code == 200
    assert 'filename="drive.zip"' in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.testzip() is None
    assert {n: archive.read(n) for n in archive.namelist()} == files


def test_an_export_needs_a_login(app):
    anonymous = HTTPClient(app)
    for url in (MBOX_URL, "/drive/d/root/zip"):
        response = anonymous.get(url)
        assert response.status_code in (302, 303) and "/login" in response.headers["Location"]
