"""Issue 13, two-factor sign-in over SMTP: with it on, SMTP AUTH takes only app passwords.

Without app passwords, whoever held the account password could send mail as the user
over the submission port although the web login asked them for a code.  Everything
runs against the session's real 3-replica store: the portal in process (werkzeug's
test client) makes, lists and revokes app passwords on the Security page; smtpd runs in
process on fresh loopback ports and is spoken to with smtplib from an address of 127/8
chosen per test, so the limiter's counters of one test never meet another's.
"""

from __future__ import annotations

import base64
import re
import secrets
import smtplib

import pyotp
import pytest

from .._mail import loopback_submission, with_tables
from .._portal import PASSWORD, post, signed_up, store_portal
from .._procs import fresh_address

pytestmark = pytest.mark.cluster

AUTH = {"pair": {"free": 5, "window": 3600, "delay": 60, "max_delay": 600},
        "failures_per_connection": 3}
NEW_PASSWORD = re.compile(r'<code class="app-password">([a-z0-9 ]+)</code>')
REVOKE_ID = re.compile(r'name="id" value="([0-9a-f]+)"')


@pytest.fixture(scope="module")
def cluster(kv_cluster):
    # On top of the session's [auth]: every signup here comes from 127.0.0.1.
    return with_tables(kv_cluster.cluster, auth=AUTH)


@pytest.fixture(scope="module")
def app(kv_cluster, cluster):
    with store_portal(kv_cluster, "fe-sec-apppw", cluster=cluster, background=False) as portal:
        yield portal


@pytest.fixture(scope="module")
def submission(cluster, client):
    with loopback_submission(cluster, client) as address:
        yield address


def auth(submission, name: str, password: str, addr: str | None = None) -> tuple[int, str]:
    """One AUTH PLAIN on a new connection; the reply, and MAIL FROM's code if it succeeded."""
    with smtplib.SMTP(*submission, timeout=30,
                      source_address=(addr or fresh_address(), 0)) as connection:
        connection.ehlo("client.test")
        token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
        code, text = connection.docmd("AUTH", f"PLAIN {token}")
        if code == 235:  # and the session really is the user's
            user = name.partition("@")[0]
            assert connection.docmd("MAIL", f"FROM:<{user}@raftcloud.test>")[0] == 250
        return code, text.decode()


def make_app_password(http, name: str) -> str:
    page = post(http, "/account/app-passwords/new", {"name": name, "password": PASSWORD},
                "/account")
    assert page.status_code == 200, page.text
    assert page.headers["Cache-Control"] == "no-store"
    match = NEW_PASSWORD.search(page.text)
    assert match, page.text
    assert match.group(1) not in http.get("/account").text  # shown once
    return match.group(1)


def two_factor_on(http) -> None:
    page = post(http, "/account/2fa/begin", {"password": PASSWORD}, "/account")
    secret = re.search(r"secret=([A-Z2-7]+)", page.text).group(1)
    done = post(http, "/account/2fa/confirm", {"code": pyotp.TOTP(secret).now()}, "/account")
    assert done.status_code == 200 and "recovery" in done.text.lower()


def test_with_two_factor_on_the_account_password_no_longer_logs_in_over_smtp(app, submission):
    """The bypass: the account password alone got 235 although the web asked for a code."""
    http, name = signed_up(app)
    two_factor_on(http)
    code, text = auth(submission, name, PASSWORD)
    assert code == 535, text
    assert "app password" in text and "Security page" in text
    secret = make_app_password(http, "Thunderbird")
    assert auth(submission, name, secret)[0] == 235
    assert auth(submission, f"{name}@raftcloud.test", secret.replace(" ", ""))[0] == 235
    assert auth(submission, name, PASSWORD)[0] == 535  # still refused


def test_without_two_factor_both_the_password_and_app_passwords_work(app, submission):
    http, name = signed_up(app)
    secret = make_app_password(http, "Phone")
    assert auth(submission, name, PASSWORD)[0] == 235
    assert auth(submission, name, secret)[0] == 235
    _, other = signed_up(app)
    assert auth(submission, other, secret)[0] == 535  # one user's app password is not another's


def test_the_page_lists_and_revokes_app_passwords_and_a_revoked_one_fails(app, submission):
    http, name = signed_up(app)
    two_factor_on(http)
    phone = make_app_password(http, "<b>Phone</b>")
    laptop = make_app_password(http, "Laptop")
    page = http.get("/account").text
    assert "&lt;b&gt;Phone&lt;/b&gt;" in page and "<b>Phone" not in page
    assert "Laptop" in page and page.count("never") >= 2
    assert auth(submission, name, phone)[0] == 235
    assert "never" not in http.get("/account").text.split("&lt;b&gt;Phone")[1].split("</tr>")[0]
    phone_id = REVOKE_ID.findall(page)[0]
    assert http.post("/account/app-passwords/revoke", data={"id": phone_id}).status_code == 403
    revoked = post(http, "/account/app-passwords/revoke", {"id": phone_id}, "/account")
    assert revoked.status_code == 200 and "was revoked" in revoked.text
    assert "&lt;b&gt;Phone" not in http.get("/account").text
    assert auth(submission, name, phone)[0] == 535
    assert auth(submission, name, laptop)[0] == 235
    again = post(http, "/account/app-passwords/revoke", {"id": phone_id}, "/account")
    assert again.status_code == 404


def test_making_an_app_password_needs_the_account_password(app):
    """A stolen session must not mint a credential that outlives it."""
    http, _ = signed_up(app)
    refused = post(http, "/account/app-passwords/new", {"name": "x", "password": "wrong!"},
                   "/account")
    assert refused.status_code == 403 and not NEW_PASSWORD.search(refused.text)
    bad_name = post(http, "/account/app-passwords/new", {"name": "\x00", "password": PASSWORD},
                    "/account")
    assert bad_name.status_code == 400


def test_wrong_app_passwords_count_toward_the_shared_limiter(app, submission):
    http, name = signed_up(app)
    two_factor_on(http)
    secret = make_app_password(http, "Phone")
    addr, codes = fresh_address(), []
    for _ in range(AUTH["pair"]["free"] + 2):
        guess = "".join(secrets.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(16))
        codes.append(auth(submission, name, guess, addr)[0])
    assert codes == [535] * AUTH["pair"]["free"] + [454] * 2
    assert auth(submission, name, secret, addr)[0] == 454  # refused unchecked from there
    assert auth(submission, name, secret)[0] == 235        # but not from elsewhere


def test_a_new_account_password_revokes_every_app_password(app, submission):
    """A thief who read the old password may have made an app password with it."""
    http, name = signed_up(app)
    secret = make_app_password(http, "Phone")
    assert auth(submission, name, secret)[0] == 235
    changed = post(http, "/password", {"old": PASSWORD, "new": "another horse battery",
                                       "new2": "another horse battery"}, "/password")
    assert changed.status_code == 200 and "app password revoked" in changed.text
    assert auth(submission, name, secret)[0] == 535
