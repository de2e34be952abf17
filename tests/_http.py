"""A small HTTP browser for tests: cookies, redirects, CSRF tokens, multipart uploads."""

from __future__ import annotations

import http.cookiejar
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass
class Page:
    url: str
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert match, f"no CSRF token on {self.url}"
        return match.group(1)


class Browser:
    """Follows redirects and keeps cookies, like a person's browser would."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def _open(self, request: urllib.request.Request) -> Page:
        try:
            with self.opener.open(request, timeout=30) as response:
                return Page(response.url, response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as err:
            return Page(err.url, err.code, err.read(), dict(err.headers))

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    def get(self, path: str) -> Page:
        page = self._open(urllib.request.Request(self.url(path)))
        # After the balancer's redirect, stay on the frontend it chose.
        if page.status < 400:
            parts = urllib.parse.urlsplit(page.url)
            self.base = f"{parts.scheme}://{parts.netloc}"
        return page

    def post(self, path: str, fields: dict[str, str]) -> Page:
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(self.url(path), data=data, method="POST"))

    def upload(self, path: str, fields: dict[str, str], name: str, filename: str,
               content: bytes, content_type: str = "application/octet-stream") -> Page:
        boundary = secrets.token_hex(16)
        parts = []
        for key, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                         f"{value}\r\n".encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
                     + content + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        request = urllib.request.Request(
            self.url(path), data=b"".join(parts), method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return self._open(request)
