"""Issue 13, passwords and redirects: one limiter for the web login and SMTP AUTH, slots taken
before the hash, no lockout by strangers, a signup limit, and no open redirect after login.

Everything runs against the session's real 3-replica store: the portal in process (werkzeug's
test client, its client address set per request) and smtpd in process on fresh loopback ports,
spoken to with smtplib from addresses of 127/8 chosen per test, so the counters of one test
never meet another's.
"""

from __future__ import annotations

import base64
import smtplib
import threading
from collections import Counter
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client as HTTPClient

from shards.model import accounts

from .._mail import loopback_submission, with_tables
from .._portal import PASSWORD, csrf_of, store_portal, unique
from .._procs import fresh_address

pytestmark = pytest.mark.cluster

# Small enough to reach in a test, shaped like the defaults.
AUTH = {"address": {"free": 8, "window": 3600, "delay": 60, "max_delay": 600},
        "pair": {"free": 5, "window": 3600, "delay": 60, "max_delay": 600},
        "account": {"free": 12, "window": 3600, "delay": 3600, "max_delay": 3600},
        "signup": {"free": 3, "window": 3600, "delay": 3600, "max_delay": 3600},
        "failures_per_connection": 3}


@pytest.fixture(scope="module")
def cluster(kv_cluster):
    return with_tables(kv_cluster.cluster, auth=AUTH)  # every limit of the session's, set


@pytest.fixture(scope="module")
def app(kv_cluster, cluster):
    with store_portal(kv_cluster, "fe-sec-passwords", cluster=cluster,
                      background=False) as portal:
        yield portal


@pytest.fixture(scope="module")
def submission(cluster, client):
    with loopback_submission(cluster, client) as address:
        yield address


class _CountingHasher:
    """accounts' argon2 hasher, counting the verifications it really does."""

    def __init__(self, real) -> None:
        self.real, self.verified = real, []

    def verify(self, hashed, password) -> bool:
        self.verified.append(password)
        return self.real.verify(hashed, password)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


@pytest.fixture
def hasher(monkeypatch) -> _CountingHasher:
    counting = _CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", counting)
    return counting


def user(client) -> str:
    name = unique("pw")
    accounts.create_user(client, name, PASSWORD)
    return name


def web_login(app, name: str, password: str, addr: str, http: HTTPClient | None = None,
              **fields):
    http = http or HTTPClient(app)
    return http.post("/login", environ_base={"REMOTE_ADDR": addr}, data={
        "csrf": csrf_of(http), "username": name, "password": password, **fields})


def smtp(submission, addr: str) -> smtplib.SMTP:
    connection = smtplib.SMTP(*submission, timeout=30, source_address=(addr, 0))
    connection.ehlo("client.test")
    return connection


def auth(connection: smtplib.SMTP, name: str, password: str) -> int:
    """One AUTH PLAIN command (smtplib's login() would try more than one mechanism)."""
    token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
    return connection.docmd("AUTH", f"PLAIN {token}")[0]


# -- hole 1: SMTP AUTH brute force ----------------------------------------------------------

def test_a_connection_is_closed_after_three_failed_auth_commands(client, submission):
    name, addr = user(client), fresh_address()
    connection = smtp(submission, addr)
    try:
        assert [auth(connection, name, f"guess {i}") for i in range(3)] == [535, 535, 535]
        assert connection.docmd("NOOP")[0] == 421  # said once, then the connection is gone
        with pytest.raises(smtplib.SMTPServerDisconnected):
            connection.docmd("NOOP")
    finally:
        connection.close()
    with smtp(submission, addr) as again:  # a new connection, and the right password works
        assert auth(again, name, PASSWORD) == 235


def test_thirty_guesses_then_the_right_password_over_smtp_are_refused(client, submission):
    """The red team's run: 30 wrong passwords, then the right one got 235."""
    name, addr = user(client), fresh_address()
    codes: list[int] = []
    for _ in range(10):  # three guesses a connection, then the server closes it
        with smtp(submission, addr) as connection:
            codes += [auth(connection, name, f"guess {len(codes)}") for _ in range(3)]
            assert connection.docmd("NOOP")[0] == 421
    assert Counter(codes) == {535: 5, 454: 25}  # five were checked, the rest refused unheard
    with smtp(submission, addr) as connection:
        assert auth(connection, name, PASSWORD) == 454  # refused, not 235


def test_an_account_locked_on_the_web_is_locked_for_smtp_auth(client, app, submission):
    name = user(client)
    for _ in range(AUTH["account"]["free"]):  # one guess each from many addresses
        assert web_login(app, name, "wrong guess!", fresh_address()).status_code == 403
    with smtp(submission, fresh_address()) as connection:
        assert auth(connection, name, PASSWORD) == 454
    assert web_login(app, name, PASSWORD, fresh_address()).status_code == 429


def test_smtp_guesses_count_for_the_web_login(client, app, submission):
    name, addr = user(client), fresh_address()
    for _ in range(2):
        with smtp(submission, addr) as connection:
            for _ in range(2):
                auth(connection, name, "wrong guess!")
    assert web_login(app, name, "wrong guess!", addr).status_code == 403  # the fifth miss
    refused = web_login(app, name, PASSWORD, addr)
    assert refused.status_code == 429 and "Too many failed log-ins" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 60


# -- hole 6: parallel guesses ---------------------------------------------------------------

def _at_once(count: int, attempt) -> list:
    start, results = threading.Barrier(count), []

    def run(i: int) -> None:
        start.wait(30)
        results.append(attempt(i))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == count
    return results


def test_twelve_wrong_web_logins_at_once_check_at_most_the_free_five(client, app, hasher):
    name, addr = user(client), fresh_address()
    codes = Counter(_at_once(12, lambda i: web_login(app, name, f"guess {i}", addr).status_code))
    assert codes == {403: AUTH["pair"]["free"], 429: 12 - AUTH["pair"]["free"]}
    assert len(hasher.verified) == AUTH["pair"]["free"]  # the refused were never hashed


def test_twelve_wrong_smtp_auths_at_once_check_at_most_the_free_five(client, submission,
                                                                    hasher):
    name, addr = user(client), fresh_address()

    def attempt(i: int) -> int:
        with smtp(submission, addr) as connection:
            return auth(connection, name, f"guess {i}")
    codes = Counter(_at_once(12, attempt))
    assert codes == {535: AUTH["pair"]["free"], 454: 12 - AUTH["pair"]["free"]}
    assert len(hasher.verified) == AUTH["pair"]["free"]  # the refused were never hashed


# -- weakness: a stranger cannot lock a user out --------------------------------------------

def test_guesses_from_one_address_do_not_lock_the_user_out(client, app):
    name, attacker = user(client), fresh_address()
    codes = Counter(web_login(app, name, f"guess {i}", attacker).status_code for i in range(20))
    assert codes == {403: 5, 429: 15}
    assert web_login(app, name, PASSWORD, fresh_address()).status_code == 303  # the user


def test_an_address_guessing_many_accounts_is_slowed(client, app):
    attacker = fresh_address()
    codes = [web_login(app, unique("nobody"), "guess!!!", attacker).status_code
             for _ in range(AUTH["address"]["free"] + 2)]
    assert codes == [403] * AUTH["address"]["free"] + [429, 429]
    # Being slowed is not being locked: a real user from that address still waits.
    refused = web_login(app, user(client), PASSWORD, attacker)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60


# -- weakness: signups per address ----------------------------------------------------------

def test_signups_are_limited_per_address(app):
    addr = fresh_address()

    def sign_up(address: str):
        http, name = HTTPClient(app), unique("su")
        http.get("/signup", environ_base={"REMOTE_ADDR": address})
        return http.post("/signup", environ_base={"REMOTE_ADDR": address}, data={
            "csrf": csrf_of(http, "/signup"), "username": name, "password": PASSWORD,
            "password2": PASSWORD})
    for _ in range(AUTH["signup"]["free"]):
        assert sign_up(addr).status_code == 303
    refused = sign_up(addr)
    assert refused.status_code == 429 and "Too many accounts" in refused.text
    assert int(refused.headers["Retry-After"]) > 0
    assert sign_up(fresh_address()).status_code == 303


# -- hole 2: open redirect ------------------------------------------------------------------

def assert_same_site(location: str) -> None:
    """What a browser does with ``location`` stays on this site."""
    assert location.isascii() and location.isprintable(), location
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    for seen in (location, location.replace("\\", "/").replace("\t", "")):
        assert urlsplit(urljoin("http://site.test/", seen)).netloc == "site.test", location


NASTY = st.lists(st.sampled_from(["/", "\\", "\t", "\r", "\n", "%09", "%0d%0a", "%2f", "@", ":",
                                  "evil.example", "http:", "//", "/\\", ".", "é", "\u3000",
                                  "\x00", "#", "?", " ", "javascript:"]),
                 max_size=8).map("".join)
TARGETS = st.one_of(st.text(), NASTY, NASTY.map(lambda s: "/" + s))


@pytest.fixture(scope="module")
def logged_in_http(client, app):
    http = HTTPClient(app)
    assert web_login(app, user(client), PASSWORD, fresh_address(), http).status_code == 303
    return http


@pytest.mark.parametrize("query", ["next=/%09/evil.example", "next=/%0d%0a/evil.example",
                                   "next=/\\evil.example", "next=%2F%2Fevil.example",
                                   "next=/%0d%0aSet-Cookie:%20x=1", "next=https://evil.example/"])
def test_known_redirect_tricks_go_home(logged_in_http, query):
    response = logged_in_http.get(f"/login?{query}")
    assert (response.status_code, response.headers["Location"]) == (303, "/")


def test_a_newline_in_next_is_no_500_after_a_right_password(client, app):
    response = web_login(app, user(client), PASSWORD, fresh_address(),
                         next="/drive\r\nSet-Cookie: x=1")
    assert (response.status_code, response.headers["Location"]) == (303, "/")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=TARGETS)
def test_a_logged_in_visit_to_login_redirects_only_on_this_site(logged_in_http, target):
    response = logged_in_http.get("/login", query_string={"next": target})
    assert response.status_code == 303
    assert_same_site(response.headers["Location"])


@pytest.fixture(scope="module")
def returning_user(client) -> tuple[str, str]:
    """A user and the address they log in from, again and again."""
    return user(client), fresh_address()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=TARGETS)
def test_the_login_post_redirects_only_on_this_site(app, returning_user, target):
    name, addr = returning_user
    response = web_login(app, name, PASSWORD, addr, next=target)
    assert response.status_code == 303
    assert_same_site(response.headers["Location"])


# -- changing the password: the old one is guessed through the same limiter ----------------

def change_password(http: HTTPClient, old: str, addr: str):
    new = "a brand new password"
    return http.post("/password", environ_base={"REMOTE_ADDR": addr}, data={
        "csrf": csrf_of(http, "/password"), "old": old, "new": new, "new2": new})


def test_guessing_the_old_password_on_the_change_form_is_limited(client, app, hasher):
    """Issue 13: a stolen session must not guess the password on /password without limit."""
    name, addr = user(client), fresh_address()
    thief = HTTPClient(app)
    assert web_login(app, name, PASSWORD, addr, thief).status_code == 303
    free = AUTH["pair"]["free"]
    codes = [change_password(thief, f"guess {i}", addr).status_code for i in range(free + 3)]
    assert codes == [400] * free + [429] * 3
    assert len(hasher.verified) == 1 + free  # the login, then only the free guesses
    refused = change_password(thief, PASSWORD, addr)  # as with login: this address waits
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert web_login(app, name, PASSWORD, fresh_address()).status_code == 303  # unchanged
    # The guesses counted like failed logins from that address.
    assert web_login(app, name, PASSWORD, addr).status_code == 429
