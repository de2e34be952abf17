"""What every page shares (portal.pages): notices by fixed key, times for the page script,
the script allowed by its hash, and a signed-in header on an error page."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from werkzeug.test import Client as HTTPClient

from portal.app import CSP
from portal.mail import MAIL_CSP
from portal.pages import NOTICES, PAGE_SCRIPT_HASH, mail_date, time_tag, with_notice
from shards.model import accounts

from .._memstore import MemClient

SCRIPT = Path(__file__).resolve().parents[2] / "portal" / "static" / "pages.js"


@pytest.fixture
def store() -> MemClient:
    """The conftest's ``app`` runs over this: user "carol" signed up."""
    store = MemClient()
    accounts.create_user(store, "carol", "correct horse battery")
    return store


def _signed_in(app) -> HTTPClient:
    http = HTTPClient(app)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get("/login").text).group(1)
    assert http.post("/login", data={"csrf": csrf, "username": "carol",
                                     "password": "correct horse battery"}).status_code == 303
    return http


def test_a_notice_is_a_fixed_key_and_never_the_query_s_text(app):
    assert with_notice("/drive/d/abc?sort=size", "uploaded") == "/drive/d/abc?sort=size&done=uploaded"
    http = _signed_in(app)
    for key, text in NOTICES.items():
        page = http.get(f"/drive?done={key}&n=3").text
        text = text.format(n=3)
        assert f'<div id="notice" class="notice" role="status" aria-live="polite">{text}</div>' in page
    # A counted notice takes a plain number only, and the URL carries it as n.
    assert with_notice("/drive", "moved-n", 12) == "/drive?done=moved-n&n=12"
    for count in ("", "-1", "3<b>", "1e3", "9" * 12):
        page = http.get("/drive", query_string={"done": "moved-n", "n": count}).text
        assert '<div id="notice" class="notice" role="status" aria-live="polite"></div>' in page
    for made_up in ("<script>alert(1)</script>", "Uploaded.", "nope"):
        page = http.get("/drive", query_string={"done": made_up}).text
        assert '<div id="notice" class="notice" role="status" aria-live="polite"></div>' in page
        assert "alert(1)" not in page


def test_times_are_utc_text_in_a_time_element():
    assert time_tag(1764691740) == ('<time datetime="2025-12-02T16:09:00Z">'
                                    "2025-12-02 16:09 UTC</time>")
    assert mail_date("Tue, 02 Dec 2025 17:09:00 +0100") == time_tag(1764691740)
    assert mail_date("the day after tomorrow") == "the day after tomorrow"
    assert mail_date("Tue, 02 Dec 2025 17:09:00 -0000") == "Tue, 02 Dec 2025 17:09:00 -0000"


def test_only_the_page_script_may_run_and_only_as_it_is(app):
    digest = base64.b64encode(hashlib.sha256(SCRIPT.read_bytes()).digest()).decode()
    assert PAGE_SCRIPT_HASH == f"sha256-{digest}"
    for policy in (CSP, MAIL_CSP):
        assert f"script-src '{PAGE_SCRIPT_HASH}'" in policy
        assert "'self'" not in policy.split("script-src")[1] and "unsafe" not in policy
    page = HTTPClient(app).get("/").text
    assert f'<script src="/static/pages.js" integrity="{PAGE_SCRIPT_HASH}" defer></script>' in page
    assert "<script>" not in page


def test_a_signed_in_user_on_a_missing_page_sees_the_signed_in_header(app):
    http = _signed_in(app)
    missing = http.get("/no/such/page")
    assert missing.status_code == 404
    assert "carol@" in missing.text and "Log out" in missing.text
    wrong_method = http.get("/logout")
    assert wrong_method.status_code == 405 and "Log out" in wrong_method.text
    anonymous = HTTPClient(app, use_cookies=False).get("/no/such/page")
    assert anonymous.status_code == 404 and "Log out" not in anonymous.text
