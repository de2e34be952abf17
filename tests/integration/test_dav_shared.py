"""Folders shared with named users over WebDAV, on two real gunicorn frontends and the real
store: the owner shares on the web page of one frontend, the recipient works through
``/dav/Shared with me/`` of the other with curl and rclone.  Read-only: listing,
download and ranges, every write a 403; read-write: PUT, MKCOL, MOVE, COPY and DELETE
land in the owner's drive (her own WebDAV path and web page show them, her quota pays,
her Trash gets the deleted); a lock by the recipient keeps the owner from writing
(423); a revoke on one frontend stops the next request on the other; no path from inside
a shared folder reaches the owner's other folders."""

from __future__ import annotations

import io
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from bench.dav import Rclone, StepError
from bench.dav_servers import Server
from shards.model import drive

from .test_drive_sharedwith import _frontend, owner_tree, person, share

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"  # test_drive_sharedwith's people
TOP = "Shared%20with%20me"
LOCKINFO = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            '</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>bob</D:owner>'
            '</D:lockinfo>')


@pytest.fixture(scope="module")
def fe1(kv_cluster, tmp_path_factory) -> Iterator[str]:
    yield from _frontend(kv_cluster, tmp_path_factory, "fe-davshared-1")


@pytest.fixture(scope="module")
def fe2(kv_cluster, tmp_path_factory) -> Iterator[str]:
    yield from _frontend(kv_cluster, tmp_path_factory, "fe-davshared-2")


def curl(*args: str, user: str) -> tuple[int, str, bytes]:
    """One curl call (bounded in time): (status, response headers, body)."""
    done = subprocess.run(["curl", "-sS", "--max-time", "30", "-D", "-", "-o", "/dev/stdout",
                           "-u", f"{user}:{PASSWORD}", *args], capture_output=True,
                          timeout=60, check=True)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # curl's Expect: 100-continue
        head, _, body = body.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body


def hrefs(body: bytes) -> set[str]:
    return {unquote(h) for h in re.findall(r"<(?:\w+:)?href>([^<]*)</", body.decode())}


@pytest.fixture
def shared(client, fe1, fe2):
    """alice (web on fe1) shares docs read-write and photos read-only with bob (fe2)."""
    alice, alice_name = person(client, fe1)
    _, bob_name = person(client, fe2)
    ids = owner_tree(client, alice_name)
    ids["photos"] = drive.create_folder(client, alice_name, drive.ROOT, "photos").id
    drive.store_file(client, alice_name, ids["photos"], "p.bin", io.BytesIO(bytes(range(256)) * 64),
                     size=256 * 64, quota=1 << 20)
    share(alice, ids["docs"], bob_name, "write")
    share(alice, ids["photos"], bob_name, "read")
    return {"client": client, "alice": alice, "alice_name": alice_name, "bob": bob_name, "ids": ids,
            "docs": f"http://{fe2}/dav/{TOP}/{quote(f'docs ({alice_name})')}",
            "photos": f"http://{fe2}/dav/{TOP}/{quote(f'photos ({alice_name})')}",
            "mine": f"http://{fe1}/dav"}


def test_listed_read_only_and_read_write(client, shared, fe2):
    bob, alice_name, ids = shared["bob"], shared["alice_name"], shared["ids"]
    status, _, body = curl("-X", "PROPFIND", "-H", "Depth: 1", f"http://{fe2}/dav/{TOP}/",
                           user=bob)
    assert status == 207
    assert hrefs(body) == {"/dav/Shared with me/", f"/dav/Shared with me/docs ({alice_name})/",
                           f"/dav/Shared with me/photos ({alice_name})/"}
    assert curl(f"{shared['docs']}/work/plan.txt", user=bob)[2] == b"the plan"
    status, _, body = curl("-r", "256-259", f"{shared['photos']}/p.bin", user=bob)
    assert status == 206 and body == bytes(range(4))
    # Read-only: every write is a 403, and nothing changed.
    photos = shared["photos"]
    for args in (("-X", "PUT", "--data-binary", "x", f"{photos}/p.bin"),
                 ("-X", "PUT", "--data-binary", "x", f"{photos}/new.bin"),
                 ("-X", "MKCOL", f"{photos}/sub"), ("-X", "DELETE", f"{photos}/p.bin"),
                 ("-X", "MOVE", "-H", f"Destination: {photos}/q.bin", f"{photos}/p.bin"),
                 ("-X", "LOCK", "--data-binary", LOCKINFO, f"{photos}/p.bin")):
        assert curl(*args, user=bob)[0] == 403, args
    assert [i.name for i in drive.list_folder(client, alice_name, ids["photos"]).items] == [
        "p.bin"]
    # The collection itself: 403 too.
    for args in (("-X", "MKCOL", f"http://{fe2}/dav/{TOP}"),
                 ("-X", "PUT", "--data-binary", "x", f"http://{fe2}/dav/{TOP}"),
                 ("-X", "DELETE", f"http://{fe2}/dav/{TOP}"),
                 ("-X", "DELETE", shared["docs"])):
        assert curl(*args, user=bob)[0] == 403, args
    # Read-write: the owner's drive, her quota, her Trash.
    docs, used = shared["docs"], drive.usage(client, alice_name)
    assert curl("-X", "PUT", "--data-binary", "from bob", f"{docs}/new.txt", user=bob)[0] == 201
    assert drive.usage(client, alice_name) == used + 8 and drive.usage(client, bob) == 0
    assert curl("-X", "MKCOL", f"{docs}/made", user=bob)[0] == 201
    assert curl("-X", "MOVE", "-H", f"Destination: {docs}/made/b.txt", f"{docs}/a.txt",
                user=bob)[0] == 201
    assert curl("-X", "DELETE", f"{docs}/work", user=bob)[0] == 204
    assert [t.item.name for t in drive.list_trash(client, alice_name)] == ["work"]
    mine = shared["mine"]
    assert curl(f"{mine}/docs/made/b.txt", user=alice_name)[2] == b"alpha"
    assert curl(f"{mine}/docs/new.txt", user=alice_name)[2] == b"from bob"
    page = shared["alice"].get(f"/drive/d/{ids['docs']}")[2]
    assert b"new.txt" in page and b"made" in page and b"work" not in page
    # A move out of the shared tree is refused (502), nothing lost.
    assert curl("-X", "MOVE", "-H", f"Destination: http://{fe2}/dav/mine.txt",
                f"{docs}/new.txt", user=bob)[0] == 502
    assert curl(f"{docs}/new.txt", user=bob)[0] == 200


def test_revoke_on_one_frontend_stops_the_next_request_on_the_other(shared):
    bob, ids = shared["bob"], shared["ids"]
    assert curl(f"{shared['docs']}/a.txt", user=bob)[0] == 200
    status, _, _ = shared["alice"].post(f"/drive/d/{ids['docs']}/sharing/revoke", {"user": bob})
    assert status == 303
    assert curl(f"{shared['docs']}/a.txt", user=bob)[0] == 404
    # Its folder is gone for him: a PUT into it is RFC 4918's 409 (no such parent).
    assert curl("-X", "PUT", "--data-binary", "late", f"{shared['docs']}/late.txt",
                user=bob)[0] == 409
    assert curl("-X", "PROPFIND", "-H", "Depth: 0", shared["docs"], user=bob)[0] == 404
    names = {i.name for i in drive.list_folder(shared["client"], shared["alice_name"],
                                               ids["docs"]).items}
    assert names == {"a.txt", "work"}


def test_a_lock_by_the_recipient_keeps_the_owner_from_writing(shared):
    bob, alice_name, mine = shared["bob"], shared["alice_name"], shared["mine"]
    status, head, _ = curl("-X", "LOCK", "-H", "Timeout: Second-300", "--data-binary", LOCKINFO,
                           f"{shared['docs']}/a.txt", user=bob)
    assert status == 200
    token = re.search(r"(?im)^lock-token: (<[^>]+>)", head).group(1)
    assert curl("-X", "PUT", "--data-binary", "alice's", f"{mine}/docs/a.txt",
                user=alice_name)[0] == 423
    assert curl("-X", "PUT", "--data-binary", "bob's", "-H", f"If: ({token})",
                f"{shared['docs']}/a.txt", user=bob)[0] == 204
    assert curl("-X", "UNLOCK", "-H", f"Lock-Token: {token}", f"{shared['docs']}/a.txt",
                user=bob)[0] == 204
    assert curl("-X", "PUT", "--data-binary", "alice's", f"{mine}/docs/a.txt",
                user=alice_name)[0] == 204


def test_no_path_from_inside_reaches_the_owners_other_folders(shared, fe2):
    bob, alice_name = shared["bob"], shared["alice_name"]
    inside = f"/dav/{TOP}/{quote(f'docs ({alice_name})')}"
    for path in (f"{inside}/../../../private/secret.txt", f"{inside}/%2e%2e/private/secret.txt",
                 f"{inside}/..%2f..%2fprivate/secret.txt", f"{inside}/work/%2E%2E/%2E%2E/top.txt",
                 f"{inside}%2f..%2f..%2fprivate", f"/dav/{TOP}/{quote(f'private ({alice_name})')}"
                 "/secret.txt", f"/dav/{TOP}/..%5cprivate", f"{inside}/..\\..\\private"):
        status, _, body = curl("--path-as-is", f"http://{fe2}{path}", user=bob)
        assert status in (400, 404), (path, status)
        assert b"not yours" not in body and b"top" != body
    for dest in (f"{inside}/../../x.txt", f"/dav/{TOP}/{quote(f'private ({alice_name})')}/x",
                 f"{inside}/%2e%2e/%2e%2e/x.txt"):
        status, _, _ = curl("-X", "COPY", "-H", f"Destination: http://{fe2}{dest}",
                            f"http://{fe2}{inside}/a.txt", user=bob)
        assert status in (400, 403, 409), (dest, status)
    assert {i.name for i in drive.list_folder(shared["client"], alice_name,
                                              drive.ROOT).items} == {
        "docs", "private", "photos", "top.txt"}
    assert {i.name for i in drive.list_folder(shared["client"], alice_name,
                                              shared["ids"]["private"]).items} == {"secret.txt"}


@pytest.mark.skipif(shutil.which("rclone") is None, reason="Debian's rclone is not installed")
def test_rclone_lists_and_copies_a_shared_folder(shared, fe2, tmp_path: Path):
    server = Server("dav", "ours", f"http://{fe2}/dav/", shared["bob"], PASSWORD, pid=0)
    binary = shutil.which("rclone")
    assert binary is not None
    rclone = Rclone.for_servers(binary, tmp_path, [server], transfers=2, time_limit=120)
    remote = f"dav:Shared with me/docs ({shared['alice_name']})"
    listed = rclone.run("lsf", "-R", remote).out.split()
    assert sorted(listed) == ["a.txt", "work/", "work/plan.txt"]
    rclone.run("copy", remote, str(tmp_path / "down"))
    assert (tmp_path / "down" / "work" / "plan.txt").read_bytes() == b"the plan"
    up = tmp_path / "up"
    up.mkdir()
    (up / "from rclone.bin").write_bytes(secrets.token_bytes(5000))
    rclone.run("copy", str(up), f"{remote}/up")
    assert rclone.run("lsf", f"{remote}/up").out.split("\n")[0] == "from rclone.bin"
    read_only = f"dav:Shared with me/photos ({shared['alice_name']})"
    with pytest.raises(StepError):
        rclone.run("copy", str(up), read_only)
    assert [i.name for i in drive.list_folder(shared["client"], shared["alice_name"],
                                              shared["ids"]["photos"]).items] == ["p.bin"]
