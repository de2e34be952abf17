"""Helpers for portal tests driven by werkzeug's test client: a portal on a store, sign up,
forms, uploads."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from markupsafe import escape
from werkzeug.datastructures import FileStorage
from werkzeug.test import Client as HTTPClient
from werkzeug.test import encode_multipart

from portal import PortalConfig, create_app
from raftkv.cluster import ClusterConfig, GroupConfig, ReplicaConfig
from shards.model import accounts, apppasswords

from .cluster import KVCluster, running

if TYPE_CHECKING:
    from portal.app import Portal

ADMIN_PASSWORD = "admin-password-1"  # the shared kv_cluster's admin: the first app to start makes it
PASSWORD = "correct horse battery"
_ID = r"[0-9a-f]{24}"


UNIT_SECRET = b"s" * 32  # the cluster secret of unit_config()


def unit_config(**settings: Any) -> PortalConfig:
    """A portal's settings for unit tests: one group (never dialled), no background threads,
    and ``settings`` (other PortalConfig fields)."""
    replica = ReplicaConfig(name="g1a", group=1, raft="127.0.0.1:1", client="127.0.0.1:2")
    cluster = ClusterConfig(name="unit", groups=(GroupConfig(id=1, replicas=(replica,)),),
                            secret=UNIT_SECRET)
    return PortalConfig(cluster=cluster, frontend="fe-unit", background=False, **settings)


def no_store():
    """A portal's client factory for pages that must not touch the store: the test fails."""
    pytest.fail("the portal touched the store")


def unit_portal(store, config: PortalConfig | None = None):
    """A portal whose every worker uses ``store`` (the in-memory store of unit tests)."""
    return create_app(config or unit_config(), client_factory=lambda: store)


@contextmanager
def store_portal(kv: KVCluster, frontend: str, *, cluster: ClusterConfig | None = None,
                 **settings: Any) -> Iterator[Portal]:
    """A portal in this process on the real store of ``kv`` (for werkzeug's test client),
    closed at the end; ``cluster``: settings of its own instead of ``kv``'s (other tables)."""
    config = PortalConfig(cluster=cluster or kv.cluster, frontend=frontend, **settings)
    portal = create_app(config, client_factory=kv.client)
    try:
        yield portal
    finally:
        portal.close()


@contextmanager
def store_with_admin(root: Path, name: str, password: str) -> Iterator[KVCluster]:
    """A store of its own (one group of three replicas) with the admin account ``name``."""
    with running(KVCluster(root)) as cluster:
        with cluster.client() as client:
            accounts.create_user(client, name, password, admin=True)
        yield cluster


def app_password(client, cluster: ClusterConfig, user: str, label: str) -> str:
    """A new app password of ``user`` (for WebDAV, IMAP, SMTP), made in the store directly."""
    return apppasswords.create(client, user, label,
                               cluster.derive_key(apppasswords.KEY_PURPOSE))


def unique(prefix: str = "u") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def csrf_of(http: HTTPClient, path: str = "/") -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def post(http: HTTPClient, path: str, data: dict, form_page: str = "/"):
    return http.post(path, data={"csrf": csrf_of(http, form_page), **data})


def signed_up(app, name: str | None = None, **client_args) -> tuple[HTTPClient, str]:
    http, name = HTTPClient(app, **client_args), name or unique()
    response = post(http, "/signup", {"username": name, "password": PASSWORD,
                                      "password2": PASSWORD}, "/signup")
    assert response.status_code == 303, response.text
    return http, name


def logged_in(app, name: str, password: str = PASSWORD, **client_args) -> HTTPClient:
    http = HTTPClient(app, **client_args)
    response = post(http, "/login", {"username": name, "password": password})
    assert response.status_code == 303, response.text
    return http


def notice(page: str) -> str:
    """The text of the notice a page shows after an action (the drive's "Moved to the Trash")."""
    match = re.search(r'<div id="notice"[^>]*>([^<]*)</div>', page)
    assert match, "no notice on the page"
    return match.group(1)


def folder_page(folder: str) -> str:
    return "/drive" if folder == "root" else f"/drive/d/{folder}"


def upload(http: HTTPClient, name: str, content: bytes, ctype: str = "application/octet-stream",
           csrf: bool = True, folder: str = "root"):
    # A quoted-string, as browsers send it: backslash and quote escaped.
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    fields: dict = {"file": FileStorage(io.BytesIO(content), filename=quoted, content_type=ctype),
                    "folder": folder}
    if csrf:
        fields["csrf"] = csrf_of(http, folder_page(folder))
    # Encoded here, in memory: the test client's own encoding spools big bodies
    # to a temporary file it never closes (a ResourceWarning, an error here).
    boundary, body = encode_multipart(fields)
    return http.post("/drive/upload", data=body,
                     content_type=f"multipart/form-data; boundary={boundary}")


def mkdir(http: HTTPClient, name: str, folder: str = "root"):
    return post(http, "/drive/mkdir", {"name": name, "folder": folder}, folder_page(folder))


def entries(http: HTTPClient, folder: str = "root") -> dict[str, str]:
    """Name (as escaped in the page) -> id of a folder's entries ("d:<id>" for folders)."""
    page = http.get(folder_page(folder)).text
    found = {}
    for href, name in re.findall(rf'<a href="(/drive/(?:d/)?{_ID})"[^>]*>([^<]*)</a>', page):
        found[name] = ("d:" if "/d/" in href else "") + href.rsplit("/", 1)[1]
    return found


def file_names(page: str) -> list[str]:
    """The names of the files a drive page lists, in its order (as escaped in the page)."""
    return re.findall(r'<td class="name">(?:<input [^>]*>)?<a href="/drive/[0-9a-f]{24}">([^<]*)</a></td>',
                      page)


def file_ids(http: HTTPClient, folder: str = "root") -> list[str]:
    return [v for v in entries(http, folder).values() if not v.startswith("d:")]


def new_folder(http: HTTPClient, name: str, folder: str = "root") -> str:
    """Create a folder and return its id."""
    assert mkdir(http, name, folder).status_code == 303
    return entries(http, folder)[str(escape(name))][2:]
