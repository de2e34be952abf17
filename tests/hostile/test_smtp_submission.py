"""The submission port (STARTTLS, then AUTH): what a stranger or a thief tries before sending.

Each probe gets a 5xx/4xx reply code of SMTP's own, nothing is queued or
delivered (the witness compares the outbound queue and the victim's
mailbox), and an ordinary sign-in with the right password works afterwards.
Password guessing comes from addresses of its own (127.0.0.x), so the
per-address limits it trips do not lock the rest of the suite out.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
import urllib.parse

import pytest

from . import _raw
from .conftest import PASSWORD, new_account

pytestmark = pytest.mark.cluster



def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test cloud's self-signed certificate
    return context


def smtp(cloud, source: str = "", tls: bool = True) -> smtplib.SMTP:
    host, port = cloud.submission.rsplit(":", 1)
    client = smtplib.SMTP(host, int(port), timeout=30,
                          source_address=(source, 0) if source else None)
    client.ehlo("client.test")
    if tls:
        client.starttls(context=_tls())
        client.ehlo("client.test")
    return client


@pytest.fixture(scope="module")
def sender(cloud):
    return new_account(cloud, "sender")


@pytest.fixture(autouse=True)
def still_answering(cloud, sender):
    yield
    with smtp(cloud) as client:
        assert client.login(sender, PASSWORD)[0] == 235


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_auth_before_starttls_is_refused(cloud, sender):
    with smtp(cloud, tls=False) as client:
        assert not client.has_extn("auth"), "AUTH offered before STARTTLS"
        code, _ = client.docmd("AUTH", "PLAIN " + _plain(sender, PASSWORD))
    assert code in (530, 538, 503, 502)


def test_mail_before_starttls_is_refused(cloud, sender):
    with smtp(cloud, tls=False) as client:
        code, _ = client.docmd(f"MAIL FROM:<{sender}@raftcloud.test>")
    assert code == 530


def test_mail_without_auth_is_refused(cloud, sender):
    with smtp(cloud) as client:
        code, _ = client.docmd(f"MAIL FROM:<{sender}@raftcloud.test>")
    assert code == 530


@pytest.mark.parametrize("argument", ["PLAIN !!!not-base64!!!", "PLAIN " + "A" * 3,
                                      "PLAIN " + base64.b64encode(b"no-nul-separators").decode(),
                                      "LOGIN %%%"],
                         ids=["bad-base64", "truncated-base64", "no-separators", "login-garbage"])
def test_malformed_auth_is_refused(cloud, argument):
    with smtp(cloud) as client:
        code, _ = client.docmd("AUTH", argument)
        if code == 334:  # LOGIN asks for the user name first; a garbage answer
            code, _ = client.docmd("%%%")
    assert code in (501, 535), code


def test_a_wrong_password_is_refused(cloud):
    target = new_account(cloud, "mistyped")
    with smtp(cloud, source="127.0.0.70") as client:
        code, _ = client.docmd("AUTH", "PLAIN " + _plain(target, "not the password"))
    assert code == 535


def test_an_unknown_auth_mechanism_is_refused(cloud):
    with smtp(cloud) as client:
        code, _ = client.docmd("AUTH", "KERBEROS_V9 abc")
    assert code == 504


def test_mail_from_someone_elses_address_is_refused(cloud, sender, victim):
    with smtp(cloud) as client:
        client.login(sender, PASSWORD)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(f"{victim.name}@raftcloud.test", [f"{victim.name}@raftcloud.test"],
                            b"Subject: as the victim\r\n\r\nx\r\n")
    assert refused.value.smtp_code == 553


def test_rcpt_to_a_user_that_does_not_exist_is_refused(cloud, sender):
    with smtp(cloud) as client:
        client.login(sender, PASSWORD)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(f"{sender}@raftcloud.test", ["nobody-here-at-all@raftcloud.test"],
                            b"Subject: x\r\n\r\nx\r\n")


def test_many_wrong_passwords_on_one_connection_end_it(cloud):
    target = new_account(cloud, "guessed")
    with smtp(cloud, source="127.0.0.71") as client:
        codes = []
        for i in range(12):
            try:
                codes.append(client.docmd("AUTH", "PLAIN " + _plain(target, f"guess-{i}"))[0])
            except smtplib.SMTPServerDisconnected:
                break
    assert 421 in codes, codes


def _guess(cloud, source: str, user: str, tries: int) -> None:
    """``tries`` wrong passwords from ``source``, over as many connections as smtpd allows."""
    done = 0
    while done < tries:
        with smtp(cloud, source=source) as client:
            while done < tries:
                done += 1
                try:
                    if client.docmd("AUTH", "PLAIN " + _plain(user, f"guess-{done}"))[0] == 421:
                        break
                except smtplib.SMTPServerDisconnected:
                    break


def test_guesses_from_one_address_soon_refuse_even_the_right_password_there(cloud):
    target = new_account(cloud, "guessed")
    _guess(cloud, "127.0.0.72", target, 9)
    with smtp(cloud, source="127.0.0.72") as client:
        code, _ = client.docmd("AUTH", "PLAIN " + _plain(target, PASSWORD))
    assert code in (421, 454, 535), code
    # ... and the guesser has not locked the user out: from elsewhere the password works.
    with smtp(cloud, source="127.0.0.73") as client:
        assert client.login(target, PASSWORD)[0] == 235


def test_web_login_guesses_count_against_smtp_auth(cloud):
    target = new_account(cloud, "webguessed")
    for i in range(8):
        with _raw.connect(cloud.frontend, source="127.0.0.74") as sock:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            page = _raw.drain(sock)
        sid = re.search(rb"sid=([^;]+)", page).group(1).decode()
        csrf = re.search(rb'name="csrf" value="([0-9a-f]+)"', page).group(1).decode()
        body = urllib.parse.urlencode({"csrf": csrf, "username": target,
                                       "password": f"guess-{i}"}).encode()
        answer = _raw.exchange(cloud.frontend, (
            f"POST /login HTTP/1.1\r\nHost: x\r\nCookie: sid={sid}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body, source="127.0.0.74")
        assert _raw.status_of(answer) in (403, 429), answer[:200]
    with smtp(cloud, source="127.0.0.74") as client:
        code, _ = client.docmd("AUTH", "PLAIN " + _plain(target, PASSWORD))
    assert code in (421, 454, 535), code
