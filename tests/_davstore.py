"""A WsgiDAV app with the store's lock storage and property manager, for tests of those two
pieces before the drive's own provider is wired in: files on a local directory
(WsgiDAV's FilesystemProvider), users alice and bob (password "pw"), locks and dead
properties in the store given.  Two apps on one store are two frontends.

A file's inode number stands in for a drive item's id: like the id, it stays with the
file through a rename or a move, and a copy gets a new one.  Unlike an id it is reused,
so properties are removed before a file or folder is deleted here (WsgiDAV's provider
does it after, when the path names nothing).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from werkzeug.serving import make_server
from werkzeug.test import Client, TestResponse
from werkzeug.wsgi import LimitedStream
from wsgidav.error_printer import ErrorPrinter
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from portal.dav.locks import StoreLockStorage, UserScope
from portal.dav.props import StorePropertyManager

PASSWORD = "pw"
LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:%s/></D:lockscope>'
            b'<D:locktype><D:write/></D:locktype><D:owner>tests</D:owner></D:lockinfo>')
PROPPATCH = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set>'
             b'<D:prop><Z:%s>%s</Z:%s></D:prop></D:set></D:propertyupdate>')
ALLPROP = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'


class _Files(FilesystemProvider):
    """WsgiDAV's provider on a directory, removing properties before it deletes."""

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        resource = super().get_resource_inst(path, environ)
        if resource is not None:
            delete = resource.delete

            def delete_with_properties() -> Any:
                for member in resource.get_descendants(depth="infinity", add_self=True):
                    member.remove_all_properties(recursive=False)
                return delete()

            resource.delete = delete_with_properties
        return resource


def _by_inode(root: Path) -> Any:
    def resolve(url: str, environ: dict[str, Any]) -> tuple[str, str] | None:
        user, path = environ.get("wsgidav.auth.user_name"), unquote(url)
        if not user or not path.startswith("/dav") or "/.." in path:
            return None
        try:
            inode = os.stat(root / path[len("/dav"):].strip("/")).st_ino
        except OSError:
            return None
        return str(user), f"{inode:024x}"[-24:]
    return resolve


def dav_app(store: Any, root: Path) -> WsgiDAVApp:
    """One frontend's WebDAV app at /dav/ over the files in ``root``."""
    return WsgiDAVApp({
        "provider_mapping": {"/dav": _Files(str(root), fs_opts={})},
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": {"alice": {"password": PASSWORD},
                                             "bob": {"password": PASSWORD}}}},
        # The two lines that plug the store in (and the scope that tells them the user):
        "lock_storage": StoreLockStorage(store),
        "property_manager": StorePropertyManager(store, _by_inode(root)),
        "middleware_stack": [ErrorPrinter, HTTPAuthenticator, UserScope, RequestResolver],
        "verbose": 1, "logging": {"enable": False}, "dir_browser": {"enable": False},
    })


@contextlib.contextmanager
def serving(app: WsgiDAVApp, port: int) -> Iterator[str]:
    """``app`` on 127.0.0.1:``port`` (werkzeug's threaded server) until the block ends;
    yields its /dav/ URL.  Each body is cut at its Content-Length, as gunicorn's is."""
    def bounded(environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"] = LimitedStream(environ["wsgi.input"], length)
        return app(environ, start_response)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", port, bounded, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/dav/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class DavClient:
    """A WebDAV client of one app, as one user."""

    def __init__(self, app: WsgiDAVApp, user: str = "alice") -> None:
        self._client = Client(app)
        auth = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        self._auth = {"Authorization": f"Basic {auth}"}

    def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> TestResponse:
        headers = {key.replace("_", "-"): value for key, value in headers.items()}
        return self._client.open(path, method=method, data=body,
                                 headers={**self._auth, **headers})

    def lock(self, path: str, *, scope: str = "exclusive", **headers: str) -> TestResponse:
        return self.request("LOCK", path, LOCKINFO % scope.encode(), **headers)

    def proppatch(self, path: str, name: str, value: str, **headers: str) -> TestResponse:
        return self.request("PROPPATCH", path,
                            PROPPATCH % (name.encode(), value.encode(), name.encode()), **headers)

    def propfind(self, path: str) -> TestResponse:
        return self.request("PROPFIND", path, ALLPROP, Depth="0")
