"""The portal's request path against hostile requests, in process (issue 13).

A malformed field is a 400/403 page, never a 500; a POST is judged before its
body is read; every answer (static files too) carries the security headers;
the session cookie follows the cluster's scheme.  The store is
:class:`tests._memstore.MemClient` (the real state machine) or, where the
portal must not touch it at all, a factory that fails the test.
"""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client as HTTPClient
from werkzeug.test import EnvironBuilder, run_wsgi_app

from portal import create_app
from portal.app import CSP
from portal.sessions import check_csrf, csrf_token, new_sid
from shards.model import accounts

from .._memstore import MemClient
from .._portal import UNIT_SECRET as SECRET
from .._portal import no_store, unit_config

MiB = 1024 * 1024
ANONYMOUS_POSTS = ("/login", "/signup", "/logout")


def _app(client_factory=no_store, **config):
    return create_app(unit_config(**config), client_factory=client_factory)


@pytest.fixture(scope="module")
def app():
    return _app()


@pytest.fixture(scope="module")
def store_app():
    """An app on an in-memory store, with user "bob" signed up."""
    store = MemClient()
    accounts.create_user(store, "bob", "correct horse battery")
    return _app(lambda: store)


def _sid(http: HTTPClient) -> str:
    response = http.get("/")
    return re.match(r"sid=([^;]+)", response.headers["Set-Cookie"]).group(1)


def _logged_in(app) -> tuple[HTTPClient, str]:
    http = HTTPClient(app)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get("/login").text).group(1)
    response = http.post("/login", data={"csrf": csrf, "username": "bob",
                                         "password": "correct horse battery"})
    assert response.status_code == 303, response.text
    sid = re.match(r"sid=([^;]+)", response.headers["Set-Cookie"]).group(1)
    return http, sid


# -- hole 7: a malformed CSRF token is a 403, never a 500 --------------------------------

def test_the_scanners_token_is_a_403_on_every_anonymous_form(app):
    http = HTTPClient(app)
    sid = _sid(http)
    for path in ANONYMOUS_POSTS:
        response = http.post(path, data={"csrf": csrf_token(SECRET, sid) + "¿'\"(",
                                         "username": "a", "password": "b"})
        assert response.status_code == 403, (path, response.status_code)
        assert "This form has expired" in response.text and "Traceback" not in response.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ANONYMOUS_POSTS), st.text(max_size=100))
def test_any_csrf_text_on_an_anonymous_form_is_a_403(app, path, token):
    http = HTTPClient(app)
    http.get("/")
    response = http.post(path, data={"csrf": token, "username": "a", "password": "b"})
    assert response.status_code == 403, response.status_code


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80) | st.none())
def test_check_csrf_never_raises(sid, token):
    assert check_csrf(SECRET, sid, token) is False
    real = new_sid()
    assert check_csrf(SECRET, real, csrf_token(SECRET, real) + (token or "")) is (not token)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.binary(max_size=60), cookie=st.text(max_size=60),
       path=st.sampled_from([b"login", b"", b"static/style.css"]) | st.binary(max_size=30),
       host=st.binary(max_size=30), language=st.binary(max_size=30))
def test_malformed_query_cookie_path_and_headers_are_never_a_500(store_app, query, cookie, path,
                                                                 host, language):
    # Bad percent-encoding, invalid UTF-8, control characters: werkzeug decodes
    # leniently; nothing here may crash a view.
    # WSGI hands the app each of these as the request's bytes decoded as latin-1.
    environ = EnvironBuilder(path="/login").get_environ()
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["HTTP_COOKIE"] = cookie.encode("utf-8", "surrogatepass").decode("latin-1")
    environ["PATH_INFO"] = "/" + path.decode("latin-1")
    environ["HTTP_HOST"] = host.decode("latin-1")
    environ["HTTP_ACCEPT_LANGUAGE"] = environ["HTTP_IF_MODIFIED_SINCE"] = language.decode("latin-1")
    _iter, status, _headers = run_wsgi_app(store_app, environ, buffered=True)
    assert not status.startswith("5"), status


# -- a POST is judged before its body is read ---------------------------------------------

class CountingInput(io.RawIOBase):
    """A request body of ``size`` bytes that counts what the app reads of it."""

    def __init__(self, size: int) -> None:
        self.size, self.taken = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.taken)
        buffer[:n] = b"a" * n
        self.taken += n
        return n


def _post_counted(app, path: str, *, sid: str | None, size: int, announce: bool = True,
                  content_type: str = "application/x-www-form-urlencoded"):
    body = CountingInput(size)
    environ = EnvironBuilder(path=path, method="POST", content_type=content_type,
                             headers={"Cookie": f"sid={sid}"} if sid else {}).get_environ()
    environ["wsgi.input"] = body
    if announce:
        environ["CONTENT_LENGTH"] = str(size)
    else:  # a chunked body: its end is known only by reading it (gunicorn says so)
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    _iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), headers, body.taken


def test_a_post_without_a_session_cookie_is_refused_unread(app):
    for path in (*ANONYMOUS_POSTS, "/drive/upload", "/mail/compose"):
        status, _headers, taken = _post_counted(app, path, sid=None, size=64 * MiB)
        assert (status, taken) == (403, 0), path


def test_an_anonymous_form_reads_at_most_its_small_limit(app):
    sid = _sid(HTTPClient(app))
    for path in ANONYMOUS_POSTS:
        status, _headers, taken = _post_counted(app, path, sid=sid, size=64 * MiB)
        assert (status, taken) == (413, 0), path  # announced too large: not read at all
        status, _headers, taken = _post_counted(app, path, sid=sid, size=64 * MiB,
                                                announce=False)
        assert status in (403, 413) and taken <= 256 * 1024, (path, taken)


def test_a_form_that_needs_a_login_is_refused_unread_without_one(store_app):
    sid = _sid(HTTPClient(store_app))  # a session, but not a logged-in one
    for path, login in (("/drive/upload", "/login"), ("/mail/compose", "/login?next=")):
        for announce in (True, False):
            status, headers, taken = _post_counted(
                store_app, path, sid=sid, size=64 * MiB, announce=announce,
                content_type="multipart/form-data; boundary=x")
            assert (status, taken) == (303, 0), path
            assert headers["Location"].startswith(login)


def test_compose_takes_no_more_than_a_message(store_app):
    _http, sid = _logged_in(store_app)
    status, _headers, taken = _post_counted(store_app, "/mail/compose", sid=sid, size=60 * MiB,
                                            content_type="multipart/form-data; boundary=x")
    assert (status, taken) == (413, 0)


# -- headers on every answer; the cookie follows the scheme --------------------------------

def test_static_files_carry_the_security_headers(app):
    http = HTTPClient(app, use_cookies=False)  # this app has no store for a session's read
    for path in ("/static/style.css", "/", "/nope"):
        with http.get(path) as response:
            assert response.status_code == (404 if path == "/nope" else 200)
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["Referrer-Policy"] == "same-origin"
            assert len(response.headers.getlist("X-Frame-Options")) == 1


def _cookie(app, base_url: str = "http://localhost/") -> str:
    return HTTPClient(app).get("/", base_url=base_url).headers["Set-Cookie"]


def test_the_cookie_is_secure_when_the_cluster_says_https():
    assert "Secure" not in _cookie(_app())  # the local default keeps working over http
    assert "; Secure" in _cookie(_app(scheme="https"))


def test_the_cookie_is_secure_when_the_request_came_over_https():
    assert "; Secure" in _cookie(_app(), "https://localhost/")


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only():
    app = _app(trusted_proxies=("127.0.0.1",))

    def cookie(peer: str) -> str:
        return HTTPClient(app).get("/", headers={"X-Forwarded-Proto": "https"},
                                   environ_base={"REMOTE_ADDR": peer}).headers["Set-Cookie"]

    assert "; Secure" in cookie("127.0.0.1")
    assert "Secure" not in cookie("10.9.9.9")  # anyone else's header is not believed


def test_the_cookie_takes_the_configured_domain():
    assert "Domain=" not in _cookie(_app())
    assert "Domain=example.org" in _cookie(_app(cookie_domain="example.org"))


# -- item 7: every error is the friendly page, never a traceback -----------------------------

def test_an_unexpected_error_is_the_friendly_500_page():
    def broken():
        raise RuntimeError("secret internals")

    http = HTTPClient(_app(broken))
    http.get("/")
    response = http.get("/drive")  # loads the session: the "store" raises
    assert response.status_code == 500
    assert "Back to the start page" in response.text
    assert "secret internals" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(("method", "path", "code"), [
    ("GET", "/no/such/page", 404), ("GET", "/logout", 405), ("PUT", "/logout", 405),
    ("GET", "/drive/not-an-id", 404), ("GET", "/drive/d/zzz", 404),
])
def test_http_errors_are_the_friendly_page(app, method, path, code):
    response = HTTPClient(app).open(path, method=method)
    assert response.status_code == code
    assert "Back to the start page" in response.text and response.mimetype == "text/html"
