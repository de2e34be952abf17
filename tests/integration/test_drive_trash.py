"""The drive's Trash and versions through the pages and WebDAV of real frontends (issue 20).

Two gunicorn frontends on a store of its own (two groups and the config group, so a
user's shard can move): a delete goes into the Trash with an Undo, another frontend
lists and restores it, a Replace keeps the old file as a version that either frontend
serves and restores; then the same survives a restart of every process, and a move of
the user's shard to the other group.  Through WebDAV, a PUT over a file keeps versions
and a DELETE trashes files and trees; after a shard move and a restart of every
process, what the pages restore is what WebDAV serves, with new ETags.  Every request
goes to loopback and has a timeout.
"""

from __future__ import annotations

import base64
import http.client
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlencode

import pytest

from portal.dav.shared import SHARED
from shards.model import davprops, drive

from .._frontend import frontend_table, gunicorn
from .._portal import app_password
from .._procs import free_port, port_open, wait_for
from ..cluster import KVCluster, move_shard, running

pytestmark = pytest.mark.cluster

PASSWORD = "password-123"
_ID = "[0-9a-f]{24}"


class Browser:
    """One keep-alive connection to a frontend and the session cookie."""

    def __init__(self, addr: str, sid: str = "") -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.sid = sid

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self.sid:
            headers["Cookie"] = f"sid={self.sid}"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        match = re.match(r"sid=([^;]+)", response.headers.get("Set-Cookie", ""))
        if match:
            self.sid = match.group(1)
        return response.status, dict(response.headers), data

    def page(self, path: str) -> str:
        status, _, data = self.request("GET", path)
        assert status == 200, (path, status, data[:500])
        return data.decode()

    def csrf(self, path: str) -> str:
        return re.search(r'name="csrf" value="([0-9a-f]+)"', self.page(path)).group(1)

    def post(self, path: str, fields: dict[str, str] | list[tuple[str, str]],
             form_page: str) -> tuple[int, str]:
        pairs = list(fields.items()) if isinstance(fields, dict) else list(fields)
        body = urlencode([("csrf", self.csrf(form_page)), *pairs])
        status, headers, _ = self.request(
            "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})
        return status, headers.get("Location", "")

    def upload(self, name: str, content: bytes, folder: str = "root") -> tuple[int, str]:
        boundary = secrets.token_hex(16)
        form_page = "/drive" if folder == "root" else f"/drive/d/{folder}"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
                 f"{self.csrf(form_page)}\r\n",
                 f'--{boundary}\r\nContent-Disposition: form-data; name="folder"\r\n\r\n'
                 f"{folder}\r\n",
                 f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{name}"\r\nContent-Type: text/plain\r\n\r\n']
        body = "".join(parts).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        status, _, data = self.request(
            "POST", "/drive/upload", body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return status, data.decode()

    def close(self) -> None:
        self.conn.close()


class Frontends:
    """Two gunicorn frontends on one store; stopped and started again as a verb."""

    def __init__(self, kv: KVCluster, root: Path) -> None:
        self.addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        config = root / "cluster.toml"
        config.write_text(kv.path.read_text() + "".join(
            frontend_table(f"fe-t{i}", addr) for i, addr in enumerate(self.addrs, 1)))
        self.procs = [gunicorn(f"fe-t{i}", addr, config, kv.root / "secret", root)
                      for i, addr in enumerate(self.addrs, 1)]

    def start(self) -> None:
        for proc, addr in zip(self.procs, self.addrs, strict=True):
            proc.start()
            wait_for(lambda a=addr: port_open(a), 30, f"{proc.name} to listen")

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(proc.log()[-3000:] for proc in self.procs)


@pytest.fixture(scope="module")
def kv(tmp_path_factory) -> Iterator[KVCluster]:
    root = tmp_path_factory.mktemp("drivetrash")
    with running(KVCluster(root / "kv", groups=2, config_group=True)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def web(kv, tmp_path_factory) -> Iterator[Frontends]:
    frontends = Frontends(kv, tmp_path_factory.mktemp("frontends"))
    frontends.start()
    try:
        yield frontends
    except BaseException:
        print(frontends.logs())
        raise
    finally:
        frontends.stop()


@contextmanager
def browsers(web: Frontends, user: str, *, signup: bool = False
             ) -> Iterator[tuple[Browser, Browser]]:
    """The user (signed up first) signed in on web1 and, with the same session, on web2."""
    one = Browser(web.addrs[0])
    try:
        if signup:
            status, _ = one.post("/signup", {"username": user, "password": PASSWORD,
                                             "password2": PASSWORD}, "/signup")
        else:
            status, _ = one.post("/login", {"username": user, "password": PASSWORD}, "/login")
        assert status == 303
        two = Browser(web.addrs[1], one.sid)
        try:
            yield one, two
        finally:
            two.close()
    finally:
        one.close()


def entries(browser: Browser, folder: str = "root") -> dict[str, str]:
    page = browser.page("/drive" if folder == "root" else f"/drive/d/{folder}")
    return {name: href.rsplit("/", 1)[1] for href, name in
            re.findall(rf'<a href="(/drive/(?:d/)?{_ID})"[^>]*>([^<]*)</a>', page)}


def download(browser: Browser, path: str) -> bytes:
    status, headers, data = browser.request("GET", path)
    assert status == 200 and headers["Content-Disposition"].startswith("attachment"), status
    return data


def replace(browser: Browser, name: str, content: bytes, folder: str = "root") -> None:
    status, page = browser.upload(name, content, folder)
    assert status == 409, status
    (held,) = re.findall(rf'name="held" value="({_ID})"', page)
    status, _ = browser.post("/drive/held", {"held": held, "folder": folder,
                                             f"choice-{held}": "replace"}, "/drive")
    assert status == 303


def versions(browser: Browser, file_id: str) -> tuple[list[str], str]:
    page = browser.page(f"/drive/{file_id}/versions")
    return (re.findall(rf'href="/drive/{file_id}/versions/({_ID})"', page),
            re.search(r'name="expect" value="(\d+)"', page).group(1))


def prepared(one: Browser) -> dict[str, str]:
    """docs/a.txt in the Trash, docs/b.txt replaced twice: what the checks look for."""
    status, _ = one.post("/drive/mkdir", {"name": "docs", "folder": "root"}, "/drive")
    assert status == 303
    docs = entries(one)["docs"]
    for name, content in (("a.txt", b"alpha"), ("b.txt", b"bravo-1")):
        assert one.upload(name, content, docs)[0] == 303
    ids = entries(one, docs)
    status, location = one.post(f"/drive/{ids['a.txt']}/delete", {"confirm": "yes"}, "/drive")
    assert status == 303 and location.endswith(f"done=trashed&undo={ids['a.txt']}")
    replace(one, "b.txt", b"bravo-2", docs)
    replace(one, "b.txt", b"bravo-3", docs)
    return {"docs": docs, **ids}


def check_and_restore(browser: Browser, ids: dict[str, str]) -> None:
    """Everything of :func:`prepared` as it was, then restored through the pages."""
    trash = browser.page("/drive/trash")
    assert "a.txt" in trash and "Drive / docs" in trash
    found, expect = versions(browser, ids["b.txt"])
    assert [download(browser, f"/drive/{ids['b.txt']}/versions/{v}") for v in found] == [
        b"bravo-2", b"bravo-1"]
    status, location = browser.post("/drive/trash/restore", {"item": ids["a.txt"]},
                                    "/drive/trash")
    assert status == 303 and location.endswith(f"/drive/d/{ids['docs']}?done=restored")
    assert download(browser, f"/drive/{ids['a.txt']}") == b"alpha"
    status, _ = browser.post(f"/drive/{ids['b.txt']}/versions/{found[1]}/restore",
                             {"expect": expect}, f"/drive/{ids['b.txt']}/versions")
    assert status == 303
    assert download(browser, f"/drive/{ids['b.txt']}") == b"bravo-1"
    assert entries(browser, ids["docs"]) == {"a.txt": ids["a.txt"], "b.txt": ids["b.txt"]}


def restart_everything(web: Frontends, kv: KVCluster) -> None:
    """Stop the frontends, kill every replica (the config group's too) at once, start all."""
    web.stop()
    kv.restart_all()
    web.start()


def move_drive(kv: KVCluster, user: str) -> None:
    """Move the shard of the user's drive to the other group."""
    with kv.client() as store:
        move_shard(store, drive.drive_row(user))


def test_trash_undo_and_versions_across_two_frontends(web, kv):
    user = f"tr{secrets.token_hex(3)}"
    with browsers(web, user, signup=True) as (one, two):
        ids = prepared(one)
        assert "a.txt" not in entries(two, ids["docs"])
        # The Undo of web1's notice, posted to web2.
        status, location = two.post("/drive/trash/restore", {"item": ids["a.txt"]},
                                    f"/drive/d/{ids['docs']}")
        assert status == 303 and location.endswith("done=restored")
        assert set(entries(one, ids["docs"])) == {"a.txt", "b.txt"}
        # Delete on web2, a name clash, restore on web1: renamed, and said so.
        two.post(f"/drive/{ids['a.txt']}/delete", {"confirm": "yes"}, "/drive")
        assert one.upload("a.txt", b"other", ids["docs"])[0] == 303
        status, location = one.post("/drive/trash/restore", {"item": ids["a.txt"]},
                                    "/drive/trash")
        assert location.endswith("done=restored-renamed")
        assert set(entries(two, ids["docs"])) == {"a.txt", "a (1).txt", "b.txt"}
        # Versions: two kept, newest first, on either frontend.
        found, _ = versions(two, ids["b.txt"])
        assert [download(one, f"/drive/{ids['b.txt']}/versions/{v}") for v in found] == [
            b"bravo-2", b"bravo-1"]
        # Empty trash, after its question, leaves nothing behind in the store.
        two.post(f"/drive/d/{ids['docs']}/delete", {"confirm": "yes"}, "/drive")
        assert "Empty the Trash?" in one.page("/drive/trash/empty")
        status, location = one.post("/drive/trash/empty", {"confirm": "yes"}, "/drive/trash")
        assert location.endswith("done=trash-emptied")
    with kv.client() as store:
        wait_for(lambda: drive.pending(store, user) == [], 30, "the clean-up")
        assert drive.usage(store, user) == 0 and drive.list_trash(store, user) == []
        assert store.get_row(drive.drive_row(user), prefix="v:") == {}


def test_restore_after_a_restart_of_every_process(web, kv):
    user = f"rs{secrets.token_hex(3)}"
    with browsers(web, user, signup=True) as (one, _):
        ids = prepared(one)
    restart_everything(web, kv)
    with browsers(web, user) as (_, two):
        check_and_restore(two, ids)


def test_restore_after_the_users_shard_moved(web, kv):
    user = f"mv{secrets.token_hex(3)}"
    with browsers(web, user, signup=True) as (one, _):
        ids = prepared(one)
    move_drive(kv, user)
    with browsers(web, user) as (one, two):
        check_and_restore(one, ids)
        assert set(entries(two, ids["docs"])) == {"a.txt", "b.txt"}


# ---- The same through WebDAV --------------------------------------------------------

PROPFIND = (b'<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop>'
            b'<getetag/><resourcetype/></prop></propfind>')
COLOUR = (b'<?xml version="1.0" encoding="utf-8"?><propertyupdate xmlns="DAV:" '
          b'xmlns:x="urn:x"><set><prop><x:colour>teal</x:colour></prop></set></propertyupdate>')


class Dav(Browser):
    """WebDAV on one keep-alive connection, signed in with HTTP Basic (an app password)."""

    def __init__(self, addr: str, user: str, password: str) -> None:
        super().__init__(addr)
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def dav(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.request(method, "/dav" + quote(path),
                            body, {"Authorization": self.auth, **(headers or {})})

    def get(self, path: str) -> bytes:
        status, _, data = self.dav("GET", path)
        assert status == 200, (path, status, data[:300])
        return data

    def put(self, path: str, content: bytes, if_match: str = "") -> int:
        return self.dav("PUT", path, content, {"If-Match": if_match} if if_match else {})[0]

    def etag(self, path: str) -> str:
        status, headers, _ = self.dav("HEAD", path)
        assert status == 200, (path, status)
        return headers["ETag"]

    def members(self, folder: str) -> set[str]:
        """The names PROPFIND (depth 1) lists in a folder (``/`` for the top)."""
        status, _, data = self.dav("PROPFIND", folder, PROPFIND, {"Depth": "1"})
        assert status == 207, (folder, status, data[:300])
        hrefs = [unquote(h.text or "").rstrip("/")
                 for h in ET.fromstring(data).iter("{DAV:}href")]
        return {h.rsplit("/", 1)[1] for h in hrefs if h != ("/dav" + folder).rstrip("/")}

    def colour(self, path: str) -> str | None:
        body = (b'<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:" '
                b'xmlns:x="urn:x"><prop><x:colour/></prop></propfind>')
        status, _, data = self.dav("PROPFIND", path, body, {"Depth": "0"})
        assert status == 207, (path, status)
        return ET.fromstring(data).findtext(".//{DAV:}propstat/{DAV:}prop/{urn:x}colour")


def trashed_ids(browser: Browser) -> dict[str, str]:
    """The Trash page's items: name -> id (from each Restore button)."""
    return {name: item for item, name in re.findall(
        rf'name="item" value="({_ID})">\s*<button[^>]*aria-label="Restore ([^"]*)"',
        browser.page("/drive/trash"))}


def dav_prepared(dav: Dav) -> dict[str, str]:
    """Through WebDAV: /docs/b.txt put over twice, /docs/a.txt (with a dead property)
    and the tree /tree deleted, /docs/c.txt deleted and put again; the ETags seen."""
    for folder in ("/docs", "/tree", "/tree/sub"):
        assert dav.dav("MKCOL", folder)[0] == 201
    for path, content in (("/docs/a.txt", b"alpha"), ("/docs/b.txt", b"bravo-1"),
                          ("/docs/c.txt", b"charlie-old"), ("/tree/top.txt", b"top"),
                          ("/tree/sub/deep.txt", b"deep")):
        assert dav.put(path, content) == 201, path
    assert dav.put("/docs/b.txt", b"bravo-2") == 204
    assert dav.put("/docs/b.txt", b"bravo-3", if_match=dav.etag("/docs/b.txt")) == 204
    assert dav.dav("PROPPATCH", "/docs/a.txt", COLOUR)[0] == 207
    etags = {"a": dav.etag("/docs/a.txt"), "b": dav.etag("/docs/b.txt")}
    for path in ("/docs/a.txt", "/tree", "/docs/c.txt"):
        assert dav.dav("DELETE", path)[0] == 204, path
    assert dav.put("/docs/c.txt", b"charlie-new") == 201
    # Gone from every WebDAV listing (the Trash is the web page's, not a DAV folder).
    assert dav.members("/") == {"docs", SHARED}
    assert dav.members("/docs") == {"b.txt", "c.txt"}
    assert dav.dav("GET", "/docs/a.txt")[0] == 404 and dav.dav("GET", "/tree/top.txt")[0] == 404
    return etags


def test_dav_trash_and_versions_across_a_shard_move_and_a_restart(web, kv):
    user = f"dv{secrets.token_hex(3)}"
    with browsers(web, user, signup=True) as (one, _), kv.client() as store:
        password = app_password(store, kv.cluster, user, "laptop")
        dav = Dav(web.addrs[0], user, password)
        try:
            etags = dav_prepared(dav)
        finally:
            dav.close()
        # The web page sees what WebDAV did: three items in the Trash, two versions.
        trash = one.page("/drive/trash")
        assert "Folder “tree”" in trash and trash.count("from Drive / docs") == 2
        docs = entries(one)["docs"]
        b_id = entries(one, docs)["b.txt"]
        found, _ = versions(one, b_id)
        assert [download(one, f"/drive/{b_id}/versions/{v}") for v in found] == [
            b"bravo-2", b"bravo-1"]
        # What the frontends' Trash sweep does when it comes by: a.txt's property stays.
        assert davprops.purge_orphans(store, user) is None
    move_drive(kv, user)
    restart_everything(web, kv)
    with browsers(web, user) as (one, _):
        ids = trashed_ids(one)
        assert set(ids) == {"a.txt", "tree", "c.txt"}
        for name, said in (("a.txt", "done=restored"), ("tree", "done=restored"),
                           ("c.txt", "done=restored-renamed")):
            status, location = one.post("/drive/trash/restore", {"item": ids[name]},
                                        "/drive/trash")
            assert status == 303 and location.endswith(said), (name, location)
        found, expect = versions(one, b_id)
        status, _ = one.post(f"/drive/{b_id}/versions/{found[1]}/restore",
                             {"expect": expect}, f"/drive/{b_id}/versions")
        assert status == 303
        dav = Dav(web.addrs[1], user, password)
        try:
            assert dav.members("/") == {"docs", "tree", SHARED}
            assert dav.members("/docs") == {"a.txt", "b.txt", "c.txt", "c (1).txt"}
            assert dav.members("/tree") == {"sub", "top.txt"}
            assert dav.members("/tree/sub") == {"deep.txt"}
            assert {path: dav.get(path) for path in (
                "/docs/a.txt", "/docs/b.txt", "/docs/c.txt", "/docs/c (1).txt",
                "/tree/top.txt", "/tree/sub/deep.txt")} == {
                "/docs/a.txt": b"alpha", "/docs/b.txt": b"bravo-1",
                "/docs/c.txt": b"charlie-new", "/docs/c (1).txt": b"charlie-old",
                "/tree/top.txt": b"top", "/tree/sub/deep.txt": b"deep"}
            assert dav.colour("/docs/a.txt") == "teal"  # its property came back with it
            assert dav.etag("/docs/a.txt") != etags["a"]
            # The restored version is new contents: a client holding the old ETag loses.
            now = dav.etag("/docs/b.txt")
            assert now != etags["b"]
            assert dav.put("/docs/b.txt", b"stale", if_match=etags["b"]) == 412
            assert dav.get("/docs/b.txt") == b"bravo-1"
            assert dav.put("/docs/b.txt", b"bravo-4", if_match=now) == 204
        finally:
            dav.close()
        found, _ = versions(one, b_id)
        assert [download(one, f"/drive/{b_id}/versions/{v}") for v in found] == [
            b"bravo-1", b"bravo-3", b"bravo-2"]
