"""A WsgiDAV app with the store's lock storage and property manager, for tests of those two
pieces before the drive's own provider is wired in: files on a local directory
(WsgiDAV's FilesystemProvider), users alice and bob (password "pw"), locks and dead
properties in the store given.  Two apps on one store are two frontends."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from werkzeug.test import Client, TestResponse
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


def _by_path(url: str, environ: dict[str, Any]) -> tuple[str, str] | None:
    """Files on disk have no drive ids: a stable id made from the path stands in."""
    user = environ.get("wsgidav.auth.user_name")
    return (str(user), hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:24]) if user else None


def dav_app(store: Any, root: Path) -> WsgiDAVApp:
    """One frontend's WebDAV app at /dav/ over the files in ``root``."""
    return WsgiDAVApp({
        "provider_mapping": {"/dav": FilesystemProvider(str(root), fs_opts={})},
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": {"alice": {"password": PASSWORD},
                                             "bob": {"password": PASSWORD}}}},
        # The two lines that plug the store in (and the scope that tells them the user):
        "lock_storage": StoreLockStorage(store),
        "property_manager": StorePropertyManager(store, _by_path),
        "middleware_stack": [ErrorPrinter, HTTPAuthenticator, UserScope, RequestResolver],
        "verbose": 1, "logging": {"enable": False}, "dir_browser": {"enable": False},
    })


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
