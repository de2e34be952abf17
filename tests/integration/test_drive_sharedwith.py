"""Folders shared with named users, over HTTP on two real gunicorn frontends and the real store.

The owner signs in on one frontend and the recipient on the other, so nothing
can pass through a worker's memory: a read-only recipient browses and downloads
but every write is a 403; a read-write one uploads, makes folders, renames,
moves and deletes inside (the owner sees it, the bytes count on the owner's
quota); nothing outside the shared tree is reachable by id (404); a revoke on
one frontend stops the very next request on the other; a stranger sees nothing;
the recipient can leave, and cannot share on or delete the shared folder itself;
what they delete goes to the owner's Trash.
"""

from __future__ import annotations

import html
import io
import re
import secrets
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from shards.model import accounts, drive
from shards.model.drive import ROOT, grants

from .._frontend import Answer, CookieClient, running_frontend

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _frontend(kv_cluster, tmp_path_factory, name: str) -> Iterator[str]:
    with running_frontend(kv_cluster, tmp_path_factory.mktemp(name), name) as (addr, _):
        yield addr


@pytest.fixture(scope="module")
def fe1(kv_cluster, tmp_path_factory) -> Iterator[str]:
    yield from _frontend(kv_cluster, tmp_path_factory, "fe-with-1")


@pytest.fixture(scope="module")
def fe2(kv_cluster, tmp_path_factory) -> Iterator[str]:
    yield from _frontend(kv_cluster, tmp_path_factory, "fe-with-2")


class Browser(CookieClient):
    """One person's cookies on one frontend: forms with the page's CSRF token, uploads."""

    def csrf(self) -> str:
        match = _CSRF.search(self.get("/")[2].decode())
        assert match, "no CSRF token"
        return match.group(1)

    def post(self, path: str, fields: dict[str, str]) -> Answer:
        body = urlencode({"csrf": self.csrf(), **fields}).encode()
        return self.request("POST", path, body, "application/x-www-form-urlencoded")

    def upload(self, path: str, folder: str, name: str, content: bytes) -> Answer:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                 .encode() for k, v in (("csrf", self.csrf()), ("folder", folder))]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{name}"\r\nContent-Type: text/plain\r\n\r\n'.encode()
                     + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, f"multipart/form-data; boundary={boundary}")

    def login(self, name: str) -> Browser:
        status, _, _ = self.post("/login", {"username": name, "password": PASSWORD})
        assert status == 303
        return self


def person(client, addr: str) -> tuple[Browser, str]:
    name = f"w{secrets.token_hex(4)}"
    accounts.create_user(client, name, PASSWORD)
    return Browser(addr).login(name), name


def owner_tree(client, owner: str) -> dict[str, str]:
    """docs/{a.txt, work/{plan.txt}}, private/secret.txt, top.txt; the ids by name."""
    ids = {"docs": drive.create_folder(client, owner, ROOT, "docs").id}
    ids["work"] = drive.create_folder(client, owner, ids["docs"], "work").id
    ids["private"] = drive.create_folder(client, owner, ROOT, "private").id
    for name, folder, content in (("a.txt", "docs", b"alpha"), ("plan.txt", "work", b"the plan"),
                                  ("secret.txt", "private", b"not yours"),
                                  ("top.txt", None, b"top")):
        ids[name] = drive.store_file(client, owner, ids[folder] if folder else ROOT, name,
                                     io.BytesIO(content), size=len(content), quota=1 << 20).id
    return ids


def share(owner: Browser, folder: str, who: str, mode: str) -> None:
    status, headers, _ = owner.post(f"/drive/d/{folder}/sharing/add", {"who": who, "mode": mode})
    assert status == 303 and headers["location"].startswith(f"/drive/d/{folder}/sharing")


def names_on(page: bytes) -> set[str]:
    return {html.unescape(n) for n in re.findall(r'<td class="name"><a href="[^"]+"[^>]*>([^<]*)</a>',
                                                  page.decode())}


def test_read_only_browses_and_downloads_but_every_write_is_refused(client, fe1, fe2):
    owner, owner_name = person(client, fe1)
    bob, bob_name = person(client, fe2)
    ids = owner_tree(client, owner_name)
    share(owner, ids["docs"], bob_name, "read")
    # The owner's Sharing page says who has access.
    page = owner.get(f"/drive/d/{ids['docs']}/sharing")[2].decode()
    assert bob_name in page and "Read-only" in page
    # Bob's "Shared with me" lists it with the owner's name; opening it browses the tree.
    status, _, page = bob.get("/drive/with")
    base = f"/drive/with/{owner_name}/{ids['docs']}"
    assert status == 200 and base.encode() in page and owner_name.encode() in page
    status, _, page = bob.get(base)
    assert status == 200 and names_on(page) == {"a.txt", "work"}
    assert owner_name.encode() in page and b'action="' + base.encode() + b'/upload"' not in page
    status, _, page = bob.get(f"{base}/d/{ids['work']}")
    assert status == 200 and names_on(page) == {"plan.txt"}
    status, headers, data = bob.get(f"{base}/f/{ids['plan.txt']}")
    assert status == 200 and data == b"the plan"
    assert headers["content-disposition"].startswith("attachment")
    status, headers, data = bob.get(f"{base}/d/{ids['docs']}/zip")
    assert status == 200 and headers["content-type"] == "application/zip" and b"the plan" in data
    # Every write: 403, and nothing changed.
    for action, fields in (("mkdir", {"folder": ids["docs"], "name": "new"}),
                           ("rename", {"item": f"f:{ids['a.txt']}", "name": "b.txt"}),
                           ("move", {"item": f"f:{ids['a.txt']}", "target": ids["work"]}),
                           ("delete", {"item": f"f:{ids['a.txt']}"}),
                           ("delete", {"item": f"d:{ids['work']}"})):
        status, _, _ = bob.post(f"{base}/{action}", fields)
        assert status == 403, (action, status)
    status, _, _ = bob.upload(f"{base}/upload", ids["docs"], "up.txt", b"x" * 100)
    assert status == 403
    assert {i.name for i in drive.list_folder(client, owner_name, ids["docs"]).items} == {
        "a.txt", "work"}


def test_read_write_changes_inside_in_the_owners_drive(client, fe1, fe2):
    owner, owner_name = person(client, fe1)
    bob, bob_name = person(client, fe2)
    ids = owner_tree(client, owner_name)
    share(owner, ids["docs"], f"{bob_name}@{_domain(owner)}", "write")
    base = f"/drive/with/{owner_name}/{ids['docs']}"
    used = drive.usage(client, owner_name)
    status, _, _ = bob.upload(f"{base}/upload", ids["work"], "new.txt", b"from bob")
    assert status == 303
    assert drive.usage(client, owner_name) == used + 8  # the owner's quota: the bytes are theirs
    assert drive.usage(client, bob_name) == 0
    assert bob.post(f"{base}/mkdir", {"folder": ids["docs"], "name": "made"})[0] == 303
    assert bob.post(f"{base}/rename", {"item": f"f:{ids['a.txt']}", "name": "b.txt"})[0] == 303
    assert bob.post(f"{base}/move", {"item": f"f:{ids['a.txt']}", "target": ids["work"]})[0] == 303
    listing = {i.name: i for i in drive.list_folder(client, owner_name, ids["work"]).items}
    assert set(listing) == {"plan.txt", "new.txt", "b.txt"}
    assert bob.post(f"{base}/delete", {"item": f"f:{listing['plan.txt'].id}"})[0] == 303
    # Into the owner's Trash, as the owner's own delete: restorable.
    assert [t.item.name for t in drive.list_trash(client, owner_name)] == ["plan.txt"]
    assert {i.name for i in drive.list_folder(client, owner_name, ids["docs"]).items} == {
        "work", "made"}
    # The owner sees Bob's file on their own page, from the other frontend.
    page = owner.get(f"/drive/d/{ids['work']}")[2]
    assert b"new.txt" in page and b"b.txt" in page and b"plan.txt" not in page
    # Not the shared folder itself, and nothing out of the tree.
    for action, fields in (("delete", {"item": f"d:{ids['docs']}"}),
                           ("rename", {"item": f"d:{ids['docs']}", "name": "mine"}),
                           ("move", {"item": f"d:{ids['docs']}", "target": ids["work"]})):
        assert bob.post(f"{base}/{action}", fields)[0] == 403, action
    assert bob.post(f"{base}/move", {"item": f"f:{listing['new.txt'].id}",
                                     "target": ids["private"]})[0] == 404
    assert bob.post(f"{base}/move", {"item": f"f:{listing['new.txt'].id}",
                                     "target": ROOT})[0] == 404
    assert bob.post(f"{base}/delete", {"item": f"f:{ids['secret.txt']}"})[0] == 404
    status, _, _ = bob.upload(f"{base}/upload", ids["private"], "in.txt", b"x")
    assert status == 404
    assert drive.get_file(client, owner_name, ids["secret.txt"]) is not None
    # Bob cannot share it on: the share pages know only Bob's own drive.
    assert bob.get(f"/drive/d/{ids['docs']}/sharing")[0] == 404
    assert bob.post(f"/drive/d/{ids['docs']}/sharing/add",
                    {"who": owner_name, "mode": "write"})[0] == 404
    assert bob.get(f"/drive/shares/new?item=d:{ids['docs']}")[0] == 404


def _domain(browser: Browser) -> str:
    match = re.search(r'placeholder="name or name@([^"]+)"', browser.get("/drive/d/root/sharing")[2]
                      .decode())
    assert match
    return match.group(1)


def test_nothing_outside_the_tree_and_a_stranger_sees_nothing(client, fe1, fe2):
    owner, owner_name = person(client, fe1)
    bob, bob_name = person(client, fe2)
    eve, _ = person(client, fe2)
    ids = owner_tree(client, owner_name)
    share(owner, ids["docs"], bob_name, "write")
    base = f"/drive/with/{owner_name}/{ids['docs']}"
    for path in (f"{base}/f/{ids['secret.txt']}", f"{base}/f/{ids['top.txt']}",
                 f"{base}/d/{ids['private']}", f"{base}/d/root", f"{base}/d/{ids['private']}/zip",
                 f"{base}/f/{'0' * 24}", f"/drive/with/{owner_name}/{ids['private']}",
                 f"/drive/with/{owner_name}/root", f"/drive/{ids['a.txt']}",
                 f"/drive/d/{ids['docs']}", "/drive/with/NOT..valid/root"):
        status, _, page = bob.get(path)
        assert status == 404, (path, status)
        assert b"not yours" not in page
    for path in (base, f"{base}/f/{ids['a.txt']}", f"{base}/d/{ids['work']}"):
        assert eve.get(path)[0] == 404, path
    assert b"docs" not in eve.get("/drive/with")[2]
    assert eve.post(f"{base}/delete", {"item": f"f:{ids['a.txt']}"})[0] == 404
    assert eve.post(f"{base}/leave", {})[0] == 404
    assert drive.get_file(client, owner_name, ids["a.txt"]) is not None


def test_revoke_on_one_frontend_stops_the_next_request_on_the_other(client, fe1, fe2):
    owner, owner_name = person(client, fe1)
    bob, bob_name = person(client, fe2)
    ids = owner_tree(client, owner_name)
    share(owner, ids["docs"], bob_name, "write")
    base = f"/drive/with/{owner_name}/{ids['docs']}"
    assert bob.get(base)[0] == 200 and bob.get(f"{base}/f/{ids['a.txt']}")[0] == 200
    status, headers, _ = owner.post(f"/drive/d/{ids['docs']}/sharing/revoke", {"user": bob_name})
    assert status == 303
    assert bob.get(f"{base}/f/{ids['a.txt']}")[0] == 404
    assert bob.get(base)[0] == 404
    assert bob.post(f"{base}/mkdir", {"folder": ids["docs"], "name": "late"})[0] == 404
    assert base.encode() not in bob.get("/drive/with")[2]
    # Read-write turned read-only: the next write is refused.
    share(owner, ids["docs"], bob_name, "write")
    share(owner, ids["docs"], bob_name, "read")
    assert bob.post(f"{base}/mkdir", {"folder": ids["docs"], "name": "late"})[0] == 403
    # The recipient leaves: gone from both sides.
    assert bob.post(f"{base}/leave", {})[0] == 303
    assert bob.get(base)[0] == 404
    assert grants.folder_grants(client, owner_name, ids["docs"]) == []


def test_sharing_with_nobody_or_oneself_is_refused_clearly(client, fe1):
    owner, owner_name = person(client, fe1)
    ids = owner_tree(client, owner_name)
    for who, words in (("nobody-here-" + secrets.token_hex(3), b"no account"),
                       (owner_name, b"yourself"), (f"{owner_name}@elsewhere.example", b"Share with")):
        status, _, page = owner.post(f"/drive/d/{ids['docs']}/sharing/add",
                                     {"who": who, "mode": "read"})
        assert status in (400, 403) and words in page, (who, status)
    assert owner.post(f"/drive/d/{ids['docs']}/sharing/add",
                      {"who": owner_name, "mode": "admin"})[0] == 400
    assert owner.post(f"/drive/d/{ids['a.txt']}/sharing/add",
                      {"who": "x", "mode": "read"})[0] == 404  # a file's id is no folder
