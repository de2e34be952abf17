"""WebDAV at /dav/ of real frontends (gunicorn, the shared 3-replica store): Debian's
litmus suites, cadaver and curl across two frontends (locks and dead properties are
the store's), curl sessions for If-Match conflicts, ranges and sign-in (rclone:
test_dav_rclone.py)."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pyotp
import pytest

from shards.model import accounts, twofactor

from .._frontend import running_frontend
from .._portal import app_password

pytestmark = pytest.mark.cluster

PASSWORD = "password-123"
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")
# What each suite must pass, its locks and properties in the store (two workers).
SUITES = {"basic": 16, "copymove": 13, "props": 30, "locks": 41, "http": 4}


@pytest.fixture(scope="module")
def frontends(kv_cluster, tmp_path_factory) -> Iterator[list[str]]:
    """Two frontends as deployed (gunicorn, four threads a worker) on the shared store:
    the first with two workers, so consecutive requests of one client (litmus) land on
    either, and locks and properties must be the store's to hold."""
    with ExitStack() as stack:
        yield [stack.enter_context(running_frontend(
            kv_cluster, tmp_path_factory.mktemp(f"dav{i}"), f"fe-dav{i}", workers=2 - i))[0]
            for i in range(2)]


@pytest.fixture(scope="module")
def frontend(frontends) -> str:
    """The frontend with two workers."""
    return frontends[0]


def new_user(client) -> str:
    name = f"dav{secrets.token_hex(4)}"
    accounts.create_user(client, name, PASSWORD)
    return name


def curl(*args: str, user: str | None = None, password: str = PASSWORD) -> tuple[int, str, bytes]:
    """One curl call: (status, response headers, body)."""
    auth = ["-u", f"{user}:{password}"] if user else []
    done = subprocess.run(["curl", "-sS", "--max-time", "30", "-D", "-", "-o", "/dev/stdout",
                           *auth, *args], capture_output=True, timeout=60, check=True)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1"), body


@pytest.mark.skipif(shutil.which("litmus") is None, reason="Debian's litmus is not installed")
def test_litmus_suites(frontend, client, tmp_path):
    """Each suite on its own (litmus stops at the first failing one): every test passes,
    with no warning."""
    user = new_user(client)
    results, warnings = {}, []
    for suite in SUITES:
        done = subprocess.run(["litmus", f"http://{frontend}/dav/", user, PASSWORD],
                              env={"TESTS": suite, "PATH": "/usr/bin:/bin",
                                   "HTCHECKER": ""},
                              capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)  # litmus writes debug.log and child.log here
        print(done.stdout)
        warnings += [line for line in done.stdout.splitlines() if "WARNING" in line]
        for name, run, passed, failed in SUMMARY.findall(done.stdout):
            results[name] = (int(run), int(passed), int(failed))
    print("litmus:", results, "warnings:", warnings)
    for suite, count in SUITES.items():
        assert results.get(suite) == (count, count, 0), (suite, results.get(suite))
    assert warnings == []


def cadaver(home, addr: str, *commands: str) -> str:
    """One scripted cadaver session (commands on stdin, credentials from ``home``'s
    .netrc): what it printed."""
    done = subprocess.run(["cadaver", f"http://{addr}/dav/"], input="\n".join(
        [*commands, "quit", ""]), env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                       "TERM": "dumb"},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("cadaver") is None, reason="Debian's cadaver is not installed")
def test_a_lock_and_a_property_hold_across_frontends(frontends, client, tmp_path):
    """cadaver locks a file and sets a property through frontend 1; through frontend 2,
    curl cannot write it without the lock's token, can with it, and unlocks it, and
    cadaver reads the property."""
    one, two = frontends
    user = new_user(client)
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin {user}\npassword {PASSWORD}\n")  # both
    netrc.chmod(0o600)
    base2 = f"http://{two}/dav"
    assert curl("-X", "PUT", "--data-binary", "first", f"http://{one}/dav/f.txt",
                user=user)[0] == 201
    said = cadaver(home, one, "lock f.txt", "propset f.txt colour blue-green",
                   "discover f.txt")
    tokens = set(re.findall(r"opaquelocktoken:[0-9a-f-]+", said))
    assert len(tokens) == 1, said
    token = tokens.pop()
    put = ["-X", "PUT", "--data-binary"]
    assert curl(*put, "not mine", f"{base2}/f.txt", user=user)[0] == 423
    assert curl(*put, "mine", "-H", f"If: (<{token}>)", f"{base2}/f.txt", user=user)[0] == 204
    assert curl(f"{base2}/f.txt", user=user)[2] == b"mine"
    said = cadaver(home, two, "propget f.txt colour")
    assert "blue-green" in said, said
    assert curl("-X", "UNLOCK", "-H", f"Lock-Token: <{token}>", f"{base2}/f.txt",
                user=user)[0] == 204
    assert curl(*put, "free", f"http://{one}/dav/f.txt", user=user)[0] == 204
    assert "opaquelocktoken" not in cadaver(home, one, "discover f.txt")


def test_if_match_conflict_and_ranges(frontend, client):
    user = new_user(client)
    base = f"http://{frontend}/dav"
    status, head, _ = curl("-X", "PUT", "--data-binary", "first version", f"{base}/notes.txt",
                           user=user)
    assert status == 201
    etag = re.search(r"(?i)^etag: (\"[^\"]+\")", head, re.M).group(1)
    status, head, _ = curl("-X", "PUT", "--data-binary", "second", "-H", f"If-Match: {etag}",
                           f"{base}/notes.txt", user=user)
    assert status == 204
    # Another client still holding the first ETag must not overwrite the newer file.
    status, _, _ = curl("-X", "PUT", "--data-binary", "lost update", "-H", f"If-Match: {etag}",
                        f"{base}/notes.txt", user=user)
    assert status == 412
    status, _, _ = curl("-X", "DELETE", "-H", f"If-Match: {etag}", f"{base}/notes.txt",
                        user=user)
    assert status == 412
    status, _, body = curl(f"{base}/notes.txt", user=user)
    assert status == 200 and body == b"second"
    status, _, _ = curl("-X", "PUT", "--data-binary", "x", "-H", "If-None-Match: *",
                        f"{base}/notes.txt", user=user)
    assert status == 412
    big = bytes(range(256)) * 4096  # 1 MiB: several of the store's chunks
    put = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", f"{user}:{PASSWORD}", "-o",
                          "/dev/null", "-w", "%{http_code}", "-T", "-", f"{base}/big.bin"],
                         input=big, capture_output=True, timeout=60, check=True)
    assert put.stdout == b"201"
    for first, last in ((0, 9), (70000, 70099), (len(big) - 10, len(big) - 1)):
        status, head, body = curl("-r", f"{first}-{last}", f"{base}/big.bin", user=user)
        assert status == 206 and body == big[first:last + 1]
        assert f"content-range: bytes {first}-{last}/{len(big)}" in head.lower()


def test_basic_sign_in_app_password_and_two_factor(frontend, client, kv_cluster):
    user = new_user(client)
    base = f"http://{frontend}/dav/"
    secret = app_password(client, kv_cluster.cluster, user, "laptop")
    propfind = ["-X", "PROPFIND", "-H", "Depth: 0", base]
    assert curl(*propfind, user=user, password=secret)[0] == 207
    assert curl(*propfind, user=user, password=PASSWORD)[0] == 207  # no 2FA: both work
    status, head, _ = curl(*propfind, user=user, password="wrong password")
    assert status == 401 and 'basic realm="raftcloud"' in head.lower()
    status, head, _ = curl(*propfind)
    assert status == 401 and "www-authenticate" in head.lower()
    enrol = twofactor.begin_enrolment(client, user)
    twofactor.confirm_enrolment(client, user, pyotp.TOTP(enrol).now())
    # With two-factor sign-in on only app passwords: also one not remembered yet.
    other = new_user(client)
    twofactor.confirm_enrolment(client, other, pyotp.TOTP(
        twofactor.begin_enrolment(client, other)).now())
    status, _, body = curl(*propfind, user=other, password=PASSWORD)
    assert status == 401 and b"app password" in body
    other_secret = app_password(client, kv_cluster.cluster, other, "laptop")
    assert curl(*propfind, user=other, password=other_secret)[0] == 207
    accounts.set_disabled(client, other, True)
    fresh = app_password(client, kv_cluster.cluster, other, "laptop")  # not remembered: checked, refused
    assert curl(*propfind, user=other, password=fresh)[0] == 401
