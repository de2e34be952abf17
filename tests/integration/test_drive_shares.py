"""Share links and the drive's search, on the real store and a real gunicorn frontend.

The owner makes, lists and revokes links through the portal's pages (werkzeug's
test client on the real store); strangers open them over HTTP on a gunicorn
frontend, with no cookie of the app: exactly what was shared is reachable (a
file, a folder, its subfolders, a .zip of it), an id outside the shared tree is a
404, expiry, password (wrong ones refused, then limited), revocation, and a link
guessed at random is a 404 and then a 429.  Search: results with their folder
path, and the time of a search over 10,000 items.
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from shards.model import drive, ratelimit
from shards.model.drive import FILE, ROOT, records, search, shares

from .._frontend import CookieClient, running_frontend
from .._portal import entries, new_folder, post, signed_up, store_portal, upload

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def app(kv_cluster):
    with store_portal(kv_cluster, "fe-shares", background=False) as portal:
        yield portal


@pytest.fixture(scope="module")
def frontend(kv_cluster, tmp_path_factory) -> Iterator[str]:
    """A gunicorn frontend on the same store: where strangers open the links."""
    root = tmp_path_factory.mktemp("fe-shares")
    with running_frontend(kv_cluster, root, "fe-shares-g") as (addr, _):
        yield addr


@pytest.fixture(autouse=True)
def forget_misses(client):
    """Each test starts with no misses counted for 127.0.0.1 (every test client's address)."""
    client.delete(*ratelimit.link_miss_key("127.0.0.1"))
    yield
    client.delete(*ratelimit.link_miss_key("127.0.0.1"))


class Stranger(CookieClient):
    """Someone holding a link, on the gunicorn frontend: no cookie but a link's own."""


def make_link(http, item: str, **fields) -> str:
    """The owner makes a link on the page for it; returns its path (/s/<token>)."""
    page = http.get(f"/drive/shares/new?item={item}")
    assert page.status_code == 200
    made = post(http, "/drive/shares/new", {"item": item, "expires": "7", **fields},
                f"/drive/shares/new?item={item}")
    assert made.status_code == 201, made.text
    url = re.search(r'class="share-url" name="url" value="([^"]+)"', made.text).group(1)
    return urlsplit(url).path


def owner_with_tree(app):
    """docs/{a.txt, work/{plan.txt}}, private/secret.txt; the ids by name."""
    http, name = signed_up(app)
    docs = new_folder(http, "docs")
    work = new_folder(http, "work", docs)
    private = new_folder(http, "private")
    files = {"a.txt": (docs, os.urandom(3000)), "plan.txt": (work, b"the plan"),
             "secret.txt": (private, b"not yours"), "top.txt": (ROOT, b"top")}
    for fname, (folder, content) in files.items():
        assert upload(http, fname, content, folder=folder).status_code == 303
    ids = {"docs": docs, "work": work, "private": private}
    for folder in (docs, work, private, ROOT):
        ids.update({k: v for k, v in entries(http, folder).items() if not v.startswith("d:")})
    return http, name, ids, {k: v[1] for k, v in files.items()}


def test_a_shared_folder_shows_exactly_its_tree_to_a_stranger(app, frontend, client):
    http, owner, ids, content = owner_with_tree(app)
    link = make_link(http, f"d:{ids['docs']}")
    stranger = Stranger(frontend)
    status, headers, page = stranger.get(link)
    assert status == 200 and "set-cookie" not in headers
    text = page.decode()
    assert "a.txt" in text and "work" in text and "secret" not in text and "top.txt" not in text
    assert "Log out" not in text and owner not in text and "/drive" not in text
    assert "script" not in headers["content-security-policy"].replace("'none'", "")
    # A subfolder, and a file in it, through the link.
    status, _, page = stranger.get(f"{link}/d/{ids['work']}")
    assert status == 200 and b"plan.txt" in page
    status, headers, data = stranger.get(f"{link}/f/{ids['plan.txt']}")
    assert status == 200 and data == content["plan.txt"]
    assert headers["content-disposition"].startswith("attachment")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("sandbox")
    # Anything else of the owner's, by id: 404, as if it did not exist.
    for path in (f"{link}/f/{ids['secret.txt']}", f"{link}/f/{ids['top.txt']}",
                 f"{link}/d/{ids['private']}", f"{link}/d/root", f"{link}/d/root/zip",
                 f"{link}/d/{ids['private']}/zip", f"{link}/f/{'0' * 24}"):
        status, _, page = stranger.get(path)
        assert status == 404, (path, status)
        assert b"not yours" not in page
    # The owner's own pages stay the owner's.
    status, headers, _ = stranger.get(f"/drive/{ids['a.txt']}")
    assert status == 303 and headers["location"].startswith("/login")


def test_the_zip_of_a_shared_folder_holds_its_files(app, frontend):
    http, _, ids, content = owner_with_tree(app)
    link = make_link(http, f"d:{ids['docs']}")
    status, headers, data = Stranger(frontend).get(f"{link}/zip")
    assert status == 200 and headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == {
            "a.txt": content["a.txt"], "work/plan.txt": content["plan.txt"]}
    status, _, data = Stranger(frontend).get(f"{link}/d/{ids['work']}/zip")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["plan.txt"]


def test_a_shared_file_is_that_file_only(app, frontend):
    http, _, ids, content = owner_with_tree(app)
    link = make_link(http, f"f:{ids['a.txt']}")
    stranger = Stranger(frontend)
    status, _, page = stranger.get(link)
    assert status == 200 and b"a.txt" in page and f"{link}/f/{ids['a.txt']}".encode() in page
    assert stranger.get(f"{link}/f/{ids['a.txt']}")[2] == content["a.txt"]
    for path in (f"{link}/f/{ids['plan.txt']}", f"{link}/d/{ids['docs']}", f"{link}/zip"):
        assert stranger.get(path)[0] == 404, path
    status, headers, data = stranger.request("HEAD", f"{link}/f/{ids['a.txt']}")
    assert status == 200 and headers["content-length"] == "3000" and data == b""
    # The owner opening their own link sees the stranger's page: no session, no cookie.
    mine = http.get(link)
    assert mine.status_code == 200 and "Log out" not in mine.text
    assert "Set-Cookie" not in mine.headers


def test_the_owner_lists_and_revokes_links(app, frontend):
    http, _, ids, _ = owner_with_tree(app)
    link = make_link(http, f"f:{ids['a.txt']}", password="sesame123")
    make_link(http, f"d:{ids['work']}")
    page = http.get("/drive/shares").text
    assert page.count('action="/drive/shares/revoke"') == 2
    assert "a.txt" in page and "work" in page and ">Yes<" in page and ">No<" in page
    assert link.rsplit("/", 1)[1] not in page  # shown once, never again
    hashes = re.findall(r'name="link" value="([0-9a-f]{64})"', page)
    other, _ = signed_up(app)
    assert post(other, "/drive/shares/revoke", {"link": hashes[0]}).status_code == 404
    for value in hashes:
        answer = post(http, "/drive/shares/revoke", {"link": value}, "/drive/shares")
        assert answer.status_code == 303
    assert "You have no share links" in http.get("/drive/shares").text
    assert Stranger(frontend).get(link)[0] == 404


def test_an_expired_link_opens_nothing(app, frontend, client):
    http, name, ids, _ = owner_with_tree(app)
    token, _ = shares.create_share(client, name, FILE, ids["a.txt"], expires=time.time() + 1.5)
    stranger = Stranger(frontend)
    assert stranger.get(f"/s/{token}")[0] == 200
    time.sleep(1.6)
    status, _, page = stranger.get(f"/s/{token}")
    assert status == 410 and b"expired" in page
    assert stranger.get(f"/s/{token}/f/{ids['a.txt']}")[0] == 410
    assert "Expired" in http.get("/drive/shares").text


def test_a_password_is_asked_checked_limited_and_remembered_for_its_link(app, frontend, client):
    http, name, ids, content = owner_with_tree(app)
    link = make_link(http, f"d:{ids['docs']}", password="sesame123")
    token = link.rsplit("/", 1)[1]
    stranger = Stranger(frontend)
    status, _, page = stranger.get(f"{link}/f/{ids['a.txt']}")
    assert status == 200 and b'type="password"' in page and content["a.txt"] not in page
    form = re.search(rb'name="form" value="([0-9a-f]+)"', page).group(1).decode()
    assert stranger.request("POST", f"{link}/unlock", "form=bad&password=sesame123")[0] == 403
    try:
        for _ in range(5):
            status, _, page = stranger.request("POST", f"{link}/unlock",
                                               f"form={form}&password=wrong")
            assert status == 403 and b"not right" in page
        status, headers, _ = stranger.request("POST", f"{link}/unlock",
                                              f"form={form}&password=sesame123")
        assert status == 429 and int(headers["retry-after"]) > 0  # the link's own counter
        assert not stranger.cookies
    finally:
        client.delete(*ratelimit.link_password_key(shares.link_hash(token)))
    status, headers, _ = stranger.request(
        "POST", f"{link}/unlock", f"form={form}&password=sesame123&next={link}/d/{ids['work']}")
    assert status == 303 and headers["location"].endswith(f"{link}/d/{ids['work']}")
    cookie = headers["set-cookie"]
    assert f"Path={link}" in cookie and "HttpOnly" in cookie and "sid=" not in cookie
    assert stranger.get(f"{link}/f/{ids['a.txt']}")[2] == content["a.txt"]
    # The cookie opens that link only: a browser sends it under the link's path alone,
    # and sent to another link anyway (as this client does), its MAC names the first.
    other = make_link(http, f"d:{ids['docs']}", password="sesame123")
    assert b'type="password"' in stranger.get(other)[2]


def test_links_guessed_at_random_are_404_then_429(app, frontend, client):
    stranger = Stranger(frontend)
    limits = ratelimit.Limits()
    statuses = []
    for _ in range(limits.link.free + 3):
        statuses.append(stranger.get(f"/s/{os.urandom(32).hex()[:43]}")[0])
        if statuses[-1] == 429:
            break
    assert statuses[:limits.link.free] == [404] * limits.link.free
    assert statuses[-1] == 429
    # A real link from that address waits too, until the counter is forgotten.
    http, _, ids, _ = owner_with_tree(app)
    link = make_link(http, f"f:{ids['a.txt']}")
    status, headers, _ = stranger.get(link)
    assert status == 429 and int(headers["retry-after"]) > 0
    client.delete(*ratelimit.link_miss_key("127.0.0.1"))
    assert stranger.get(link)[0] == 200


def test_search_finds_names_with_their_folder_path(app):
    http, _, ids, _ = owner_with_tree(app)
    assert upload(http, "Plans for 2027.odt", b"x", folder=ids["work"]).status_code == 303
    page = http.get("/drive/search?q=PLAN").text
    rows = re.findall(r'<tr class="file">.*?</tr>', page, re.S)
    assert len(rows) == 2
    assert "plan.txt" in rows[0] and "Drive / docs / work" in rows[0]
    assert "Plans for 2027.odt" in rows[1] and f'href="/drive/d/{ids["work"]}"' in rows[1]
    assert "secret" not in page
    assert "No file or folder name holds" in http.get("/drive/search?q=nothing+like+it").text
    assert http.get("/drive/search?q=" + "%FF" * 500).status_code == 200
    assert 'action="/drive/search"' in http.get("/drive").text


def test_search_over_ten_thousand_items_is_bounded_in_time(client):
    """The drive row's index cells, 10,000 of them, written directly (uploading them
    would take minutes): the time of one search is printed for docs/data-model.md."""
    user = f"big{os.getpid()}"
    now = time.time()
    for start in range(0, 10_000, 50):
        puts = []
        for n in range(start, start + 50):
            item = drive.Item(id=drive.new_id(), kind=FILE, name=f"file {n:05}.txt",
                              parent=ROOT, size=n, created=now, modified=now)
            puts += [m for m in records.link(item, now) if m[1] != drive.header_col(ROOT)]
        client.mutate_row(drive.drive_row(user), [], puts)
    began = time.perf_counter()
    found = search.search(client, user, "00042")
    took = time.perf_counter() - began
    print(f"search over 10,000 items: {took:.2f} s")
    assert [m.item.name for m in found.matches] == ["file 00042.txt"]
    assert took < 10
    wide = search.search(client, user, "file")
    assert len(wide.matches) == search.RESULTS and wide.more and not wide.partial
    assert search.search(client, user, "file", scan=5_000).partial
