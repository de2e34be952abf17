"""Issue 13: sessions end when idle, a user sees and ends their sessions, two-factor sign-in.

The portal runs in-process against a real 3-replica store (werkzeug's test client).
"""

from __future__ import annotations

import re
import threading
import time

import msgpack
import pyotp
import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from portal.sessions import SEEN_COL, index_row, session_key, session_row
from shards.model.ratelimit import Limits
from shards.model.twofactor import TOTP_COL

from .._portal import ADMIN_PASSWORD, PASSWORD, csrf_of, logged_in, post, signed_up

pytestmark = pytest.mark.cluster


class CountingClient:
    """A real store client that notes which thread called which method (no behaviour changed)."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls.append((threading.current_thread().name, name))
            return attr(*args, **kwargs)
        return counted


def _app(kv_cluster, **settings):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-sec", addr="127.0.0.1:9",
                          admin_password=ADMIN_PASSWORD, background=False, **settings)
    return create_app(config, client_factory=kv_cluster.client)


@pytest.fixture(scope="module")
def app(kv_cluster):
    portal = _app(kv_cluster)
    yield portal
    portal.close()


def _logged_in_with(app, name: str, agent: str) -> HTTPClient:
    http = HTTPClient(app)
    response = http.post("/login", data={"csrf": csrf_of(http), "username": name,
                                         "password": PASSWORD}, headers={"User-Agent": agent})
    assert response.status_code == 303, response.text
    return http


def _hello(http: HTTPClient, name: str) -> bool:
    return f"Hello, {name}" in http.get("/").text


# -- idle timeout -------------------------------------------------------------------------


def test_an_idle_session_is_logged_out_and_an_active_one_stays(kv_cluster):
    portal = _app(kv_cluster, session_idle=4.0)
    try:
        active, name = signed_up(portal)
        idle = logged_in(portal, name)
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:  # about 14 requests
            assert _hello(active, name)
            time.sleep(0.5)
        assert _hello(active, name), "an active session must stay"
        assert not _hello(idle, name), "a session unused for longer than session_idle must end"
    finally:
        portal.close()


def test_last_seen_is_written_off_the_request_path_and_at_most_once_a_minute(kv_cluster, client):
    counting: list[CountingClient] = []

    def factory():
        counting.append(CountingClient(kv_cluster.client()))
        return counting[-1]

    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-sec2", addr="127.0.0.1:9",
                          admin_password=ADMIN_PASSWORD, background=False)
    portal = create_app(config, client_factory=factory)
    try:
        http, name = signed_up(portal)
        sid = http.get_cookie("sid").value
        row = session_row(sid)
        # As if the last recorded request was two minutes ago.
        client.put(row, SEEN_COL, msgpack.packb(time.time() - 120))
        version = client.get(row, SEEN_COL).version
        store = counting[0]
        store.calls.clear()
        for _ in range(20):
            assert http.get("/").status_code == 200
        me = threading.current_thread().name
        # Where a row lives is computed, not asked (read-only mode looks it up per read).
        on_requests = [method for thread, method in store.calls
                       if thread == me and method not in ("shard_of", "group_of_shard")]
        assert on_requests == ["get_cells"] * 20, "a page makes one read and no write"
        deadline = time.monotonic() + 10
        while client.get(row, SEEN_COL).version == version and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = client.get(row, SEEN_COL)
        assert seen.version != version and abs(msgpack.unpackb(seen.value) - time.time()) < 10
        writes = [m for t, m in store.calls if t != me and m == "mutate_row"]
        # One last-seen write: the session's row, and its copy in the user's index.
        assert len(writes) == 2, "20 requests in a minute: one last-seen write"
        for _ in range(10):
            http.get("/")
        time.sleep(2.5)  # more than two flushes of the recorder
        assert client.get(row, SEEN_COL).version == seen.version, "not again within a minute"
    finally:
        portal.close()


# -- seeing and ending sessions -------------------------------------------------------------


def test_a_user_sees_and_ends_their_other_sessions(app, client):
    laptop, name = signed_up(app)
    phone = _logged_in_with(app, name, "<script>alert(1)</script> Phone")
    tablet = _logged_in_with(app, name, "Tablet/2")
    page = laptop.get("/account").text
    assert page.count("this device") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Phone" in page and "<script>" not in page
    phone_key = session_key(phone.get_cookie("sid").value)
    assert f'value="{phone_key}"' in page

    # Ending needs the CSRF token, and only one's own sessions can be ended.
    forged = laptop.post("/account/sessions/end", data={"session": phone_key})
    assert forged.status_code == 403 and _hello(phone, name)
    other, _ = signed_up(app)
    assert post(other, "/account/sessions/end", {"session": phone_key},
                "/account").status_code == 404
    assert _hello(phone, name)

    ended = post(laptop, "/account/sessions/end", {"session": phone_key}, "/account")
    assert ended.status_code == 200 and "The session was ended" in ended.text
    assert not _hello(phone, name) and _hello(laptop, name) and _hello(tablet, name)

    assert post(laptop, "/account/sessions/end-others", {}, "/account").status_code == 200
    assert not _hello(tablet, name) and _hello(laptop, name)
    assert list(client.get_row(index_row(name), prefix="s:")) == [
        f"s:{session_key(laptop.get_cookie('sid').value)}"]


# -- two-factor sign-in -----------------------------------------------------------------


def _enrol(http: HTTPClient) -> tuple[str, list[str]]:
    page = post(http, "/account/2fa/begin", {"password": PASSWORD}, "/account")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    secret = re.search(r'<code class="secret">([A-Z2-7]{16,})</code>', page.text).group(1)
    assert "otpauth://totp/" in page.text
    wrong = post(http, "/account/2fa/confirm", {"code": "000000"}, "/account")
    assert wrong.status_code == 400
    done = post(http, "/account/2fa/confirm", {"code": pyotp.TOTP(secret).now()}, "/account")
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    codes = re.findall(r"<code>([0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4})</code>", done.text)
    assert len(codes) == 10
    return secret, codes


def _password_step(app, name: str) -> tuple[HTTPClient, dict]:
    """Log in with the password; returns the browser and the code form's fields."""
    http = HTTPClient(app)
    page = post(http, "/login", {"username": name, "password": PASSWORD, "next": "/drive"})
    assert page.status_code == 200 and 'action="/login/code"' in page.text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    assert not _hello(http, name), "a right password alone is not a login"
    return http, fields


def _code_step(http: HTTPClient, fields: dict, code: str):
    return http.post("/login/code", data={**fields, "code": code})


def test_login_asks_for_the_code_once_two_factor_is_on(app):
    http, name = signed_up(app)
    secret, _ = _enrol(http)
    assert "Recovery codes left: 10" in http.get("/account").text

    browser, fields = _password_step(app, name)
    wrong = _code_step(browser, fields, "123456" if pyotp.TOTP(secret).now() != "123456"
                       else "654321")
    assert wrong.status_code == 403 and "not right" in wrong.text
    assert not _hello(browser, name)
    # The confirmation used this time step's code: the next step's is still good (clock drift).
    code = pyotp.TOTP(secret).at(time.time() + 30)
    right = _code_step(browser, fields, code)
    assert (right.status_code, right.headers["Location"]) == (303, "/drive")
    assert _hello(browser, name)

    # The same code again, in another login: refused (each time step once).
    again, fields2 = _password_step(app, name)
    assert _code_step(again, fields2, code).status_code == 403
    assert not _hello(again, name)


def test_a_recovery_code_works_once(app):
    http, name = signed_up(app)
    _, codes = _enrol(http)
    browser, fields = _password_step(app, name)
    assert _code_step(browser, fields, codes[0]).status_code == 303 and _hello(browser, name)
    again, fields = _password_step(app, name)
    assert _code_step(again, fields, codes[0]).status_code == 403
    assert _code_step(again, fields, codes[1]).status_code == 303 and _hello(again, name)
    assert "Recovery codes left: 8" in again.get("/account").text


def test_a_pending_login_is_bound_to_the_browser_and_ends_after_five_wrong_codes(app):
    http, name = signed_up(app)
    _, codes = _enrol(http)
    browser, fields = _password_step(app, name)
    # Another browser (another sid) with the same token gets nowhere.
    thief = HTTPClient(app)
    stolen = thief.post("/login/code", data={**fields, "csrf": csrf_of(thief), "code": codes[0]})
    assert stolen.status_code == 403 and not _hello(thief, name)
    for _ in range(5):
        assert _code_step(browser, fields, "000000").status_code == 403
    # The pending login is over: even a right code needs the password again.
    over = _code_step(browser, fields, codes[0])
    assert over.status_code == 403 and "log in again" in over.text and not _hello(browser, name)


def test_turning_two_factor_off_needs_the_password_or_a_code(app):
    http, name = signed_up(app)
    _, codes = _enrol(http)
    refused = post(http, "/account/2fa/disable", {"password": "not the password"}, "/account")
    assert refused.status_code == 403
    assert post(http, "/account/2fa/disable", {"code": codes[0]}, "/account").status_code == 200
    assert "Off." in http.get("/account").text
    assert logged_in(app, name) is not None  # one step again


def test_codes_to_turn_two_factor_off_are_limited(app):
    http, name = signed_up(app)
    _, codes = _enrol(http)
    for _ in range(Limits().code.free):
        assert post(http, "/account/2fa/disable", {"code": "000000"},
                    "/account").status_code == 403
    limited = post(http, "/account/2fa/disable", {"code": codes[0]}, "/account")
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert "Recovery codes left: 10" in http.get("/account").text  # still on, code unused


def _wrong(secret: str) -> str:
    return "123456" if pyotp.TOTP(secret).now() != "123456" else "654321"


def test_logging_in_again_gives_no_fresh_codes_to_guess(app):
    """Issue 13: wrong codes count per account, over every pending login; a right one after
    them is refused too (429), so knowing the password does not buy unlimited guesses."""
    http, name = signed_up(app)
    secret, codes = _enrol(http)
    free = Limits().code.free
    statuses = []
    while len(statuses) < free + 2:  # a fresh pending login for every two codes
        browser, fields = _password_step(app, name)
        statuses += [_code_step(browser, fields, _wrong(secret)).status_code for _ in range(2)]
    assert statuses == [403] * free + [429] * 2
    browser, fields = _password_step(app, name)
    limited = _code_step(browser, fields, codes[0])
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert not _hello(browser, name)
    assert "Recovery codes left: 10" in http.get("/account").text  # the code was not used


def test_an_account_keeps_only_its_newest_pending_logins(app, client):
    http, name = signed_up(app)
    _enrol(http)
    for _ in range(8):
        _password_step(app, name)
    assert len(client.get_row(f"{{{name}}}/login", prefix="p:")) == 5


def test_setting_up_two_factor_needs_the_password_and_ends_other_sessions(app, client):
    """Issue 13: a stolen session cannot put the thief's authenticator on the account."""
    http, name = signed_up(app)
    other = logged_in(app, name)
    for data in ({}, {"password": "not the password"}):
        refused = post(http, "/account/2fa/begin", data, "/account")
        assert refused.status_code == 403 and "otpauth://" not in refused.text
    assert client.get(f"user/{name}", TOTP_COL) is None
    assert _hello(other, name)
    _enrol(http)
    assert _hello(http, name) and not _hello(other, name)
