"""The logs of a whole cloud, used as people use it, hold no password, token or secret, and
are one JSON object per line naming the process when asked (docs/operations.md, "Logs").

`raftcloud up` (not a terminal: as under systemd or in CI) with ``[logs] format = "json"``;
users sign up and sign in through the balancer and a frontend (gunicorn), one with a wrong
password first; they make an app password on the Security page and send mail with SMTP
AUTH on the submission port (STARTTLS), with the account password, the app password and a
wrong one, and log in over IMAP (STARTTLS and the TLS port, right and wrong); raftkv-ctl
reads and writes; the control API is called.  Then every log file,
rotated ones included, and the output of the launcher and the tools are searched for each
password, app password, session and CSRF token, the cluster secret, the control token and
the admin password, as typed and as they travel (form-encoded, AUTH PLAIN's base64).
"""

from __future__ import annotations

import base64
import imaplib
import json
import re
import secrets
import smtplib
import ssl
import subprocess
import urllib.parse
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from imapd.settings import ImapdSettings
from raftkv.cluster import load_cluster
from shards.control import control_addresses, control_token
from smtpd.settings import SmtpdSettings

from .._http import Browser
from .._procs import SECRET, python_cmd, wait_for
from ..cluster import launched, whole_cloud_extra

pytestmark = pytest.mark.cluster

APP_PASSWORD = re.compile(r'<code class="app-password">([a-z0-9 ]+)</code>')
LOG_KEYS = {"time", "level", "process", "logger", "message"}


def sign_up_and_in(balancer: str, name: str, password: str) -> Browser:
    browser = Browser(balancer)
    page = browser.get("/signup")
    page = browser.post("/signup", {"csrf": page.csrf(), "username": name,
                                    "password": password, "password2": password})
    assert page.status == 200, page.text
    page = browser.get("/login")
    wrong = browser.post("/login", {"csrf": page.csrf(), "username": name,
                                    "password": password + "-typo"})
    assert wrong.status in (200, 401, 403), wrong.status
    page = browser.get("/login")
    page = browser.post("/login", {"csrf": page.csrf(), "username": name, "password": password})
    assert page.status == 200 and "/mail" in page.text, page.text
    return browser


def make_app_password(browser: Browser, password: str) -> str:
    page = browser.get("/account")
    page = browser.post("/account/app-passwords/new", {"csrf": page.csrf(), "name": "Phone",
                                                       "password": password})
    match = APP_PASSWORD.search(page.text)
    assert page.status == 200 and match, page.text
    return match.group(1)


def smtp_auth(submission: str, user: str, password: str, to: str,
              mechanism: str = "PLAIN") -> int:
    """AUTH after STARTTLS, and a message sent when it is accepted: the code of AUTH."""
    host, port = submission.rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the self-made cert
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo()
        smtp.user, smtp.password = user, password
        try:
            smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"), initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = f"{user}@raftcloud.test", to, "hi"
        message.set_content("logged?")
        smtp.send_message(message)
        return 235


def imap_login(addr: str, user: str, password: str, *, tls: bool = False) -> str:
    """LOGIN over STARTTLS, or AUTHENTICATE PLAIN on the TLS port: the answer's type."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
    host, port = addr.rsplit(":", 1)
    if tls:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, int(port), ssl_context=context,
                                                  timeout=30)
    else:
        client = imaplib.IMAP4(host, int(port), timeout=30)
        client.starttls(ssl_context=context)
    try:
        if tls:
            return client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())[0]
        return client.login(user, password)[0]
    except imaplib.IMAP4.error:
        return "NO"
    finally:
        client.logout()


def forms_of(secret: str, user: str) -> set[str]:
    """How a secret may show: as typed, form-encoded, in base64 (AUTH LOGIN) and inside
    AUTH PLAIN's base64."""
    plain = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    return {secret, urllib.parse.quote_plus(secret), urllib.parse.quote(secret), plain,
            secret.replace(" ", ""), base64.b64encode(secret.encode()).decode()}


def test_no_secret_in_any_log_and_every_line_is_json(tmp_path: Path) -> None:
    extra = whole_cloud_extra() + '\n[logs]\nformat = "json"\n'
    with launched(tmp_path, extra, config_group=False) as (launcher, config, data):
        cluster = load_cluster(config)
        balancer = re.search(r"web:\s+(http://\S+)", launcher.log()).group(1)
        submission = SmtpdSettings.from_cluster(cluster).submission
        assert submission is not None
        wait_for(lambda: Browser(balancer).get("/healthz").status == 200, 30, "a frontend")

        secrets_used: dict[str, set[str]] = {}
        names = [f"logs{secrets.token_hex(3)}" for _ in range(2)]
        passwords = [f"pw {secrets.token_urlsafe(12)}&=+" for _ in names]
        browsers = [sign_up_and_in(balancer, n, p) for n, p in zip(names, passwords, strict=True)]
        app_password = make_app_password(browsers[0], passwords[0])
        for name, password in zip(names, passwords, strict=True):
            secrets_used[f"password of {name}"] = forms_of(password, name)
            secrets_used[f"mistyped password of {name}"] = forms_of(password + "-typo", name)
        secrets_used["app password"] = forms_of(app_password, names[0])
        to = f"{names[1]}@raftcloud.test"
        assert smtp_auth(submission, names[0], passwords[0], to) == 235
        assert smtp_auth(submission, names[0], app_password, to) == 235
        assert smtp_auth(submission, names[0], app_password.replace(" ", ""), to, "LOGIN") == 235
        assert smtp_auth(submission, names[1], passwords[1] + "-typo", to, "LOGIN") == 535
        wait_for(lambda: "hi" in browsers[1].get("/mail").text, 30, "the mail to arrive")
        imap = ImapdSettings.from_cluster(cluster)
        assert imap_login(imap.listen, names[1], passwords[1]) == "OK"          # STARTTLS
        assert imap_login(imap.listen_tls, names[0], app_password, tls=True) == "OK"
        assert imap_login(imap.listen, names[1], passwords[1] + "-typo") == "NO"
        for browser in browsers:
            for cookie in browser.cookies:
                secrets_used[f"cookie {cookie.name}"] = {cookie.value}
            secrets_used["a CSRF token"] = {browser.get("/account").csrf()}

        token = control_token(cluster.secret)
        request = urllib.request.Request(
            f"http://{control_addresses(cluster)['local']}/processes",
            headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        ctl_output = ""
        for args in (("-v", "put", "r1", "c", "v1"), ("get", "r1", "c"), ("status",)):
            done = subprocess.run(python_cmd("shards.cli", "--config", str(config), *args),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            ctl_output += done.stdout + done.stderr
        secrets_used["cluster secret"] = {SECRET.decode(), base64.b64encode(SECRET).decode()}
        secrets_used["control token"] = {token}
        secrets_used["admin password"] = {(data / "admin.password").read_text().strip()}

    outputs = {p.name: p.read_text(errors="replace") for p in sorted((data / "logs").iterdir())}
    outputs["raftcloud up"] = launcher.log()
    outputs["raftkv-ctl"] = ctl_output
    assert len(outputs) >= 9, sorted(outputs)   # 3 replicas, 2 frontends, smtpd, balancer
    found = [f"{what} in {where}" for what, forms in secrets_used.items()
             for where, text in outputs.items() for form in forms if form and form in text]
    assert not found, found

    # The children's logs: every line one JSON event of the process the file is named after.
    processes = {"web1": "portal web1", "web2": "portal web2", "smtpd": "smtpd", "imapd": "imapd",
                 "balancer": "balancer", "g1a": "replica g1a"}
    for file, text in outputs.items():
        if not file.endswith(".log"):
            continue
        events = [json.loads(line) for line in text.splitlines()]
        assert events, file
        assert all(LOG_KEYS <= set(e) for e in events), file
        expected = processes.get(file.removesuffix(".log"))
        if expected:
            assert {e["process"] for e in events} == {expected}, file
    access = [e for file in ("web1.log", "web2.log")
              for e in map(json.loads, outputs[file].splitlines())
              if e["logger"] == "gunicorn.access"]
    assert any("POST /login" in e["message"] for e in access)
    launcher_events = [json.loads(line) for line in outputs["raftcloud up"].splitlines()
                       if line.startswith("{")]
    assert {e["process"] for e in launcher_events} == {"launcher"}
    assert any("started g1a" in e["message"] for e in launcher_events)
