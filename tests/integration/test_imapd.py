"""raftcloud-imapd with Python's imaplib, on the session's real 3-replica store (issue 19).

imapd runs in this process (its own event loop thread) on fresh loopback ports,
as smtpd does in the SMTP tests; smtpd delivers, the portal (werkzeug's test
client) reads and marks, and imaplib sees the same mailbox.  Clients come from
loopback addresses of their own when a test counts failed logins, so the shared
limiter's counters of one test never meet another's.
"""

from __future__ import annotations

import imaplib
import secrets
import smtplib
import socket
import time
from collections.abc import Iterator

import pyotp
import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from shards.model import accounts, mail, registry, twofactor

from .._imap import (
    client_tls,
    connect,
    hostport,
    inprocess_imapd,
    response_code,
)
from .._mail import inprocess_smtpd, loopback_submission, with_tables
from .._portal import app_password, csrf_of
from .._procs import fresh_address, wait_for

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
AUTH = {"pair": {"free": 4, "window": 3600, "delay": 60, "max_delay": 600},
        "failures_per_connection": 3}
CLAIMED = {"IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "LITERAL+", "ID", "NAMESPACE",
           "SPECIAL-USE", "ENABLE"}
IDLE_BUDGET = 2.0  # seconds from an SMTP delivery to the idling client's EXISTS (issue 19)


@pytest.fixture(scope="module")
def cluster(kv_cluster):
    return with_tables(kv_cluster.cluster, auth=AUTH)


@pytest.fixture(scope="module")
def imapd(cluster, client, tmp_path_factory):
    with inprocess_imapd(cluster, client, tmp_path_factory.mktemp("imap-tls")) as settings:
        yield settings


@pytest.fixture(scope="module")
def inbound(cluster, client):
    with inprocess_smtpd(cluster, client) as settings:
        yield settings.inbound


@pytest.fixture(scope="module")
def portal(kv_cluster, cluster):
    config = PortalConfig(cluster=cluster, frontend="fe-imap", addr="127.0.0.1:9",
                          background=False)
    app = create_app(config, client_factory=kv_cluster.client)
    yield app
    app.close()


@pytest.fixture
def user(client) -> str:
    name = f"imap{secrets.token_hex(3)}"
    accounts.create_user(client, name, PASSWORD)
    return name


@pytest.fixture
def imap(imapd, user) -> Iterator[imaplib.IMAP4]:
    connection = connect(imapd)
    assert connection.login(user, PASSWORD)[0] == "OK"
    yield connection
    try:
        connection.logout()
    except (imaplib.IMAP4.abort, OSError):
        pass


def message(subject: str, body: str = "hello", sender: str = "bob@example.org") -> bytes:
    return (f"From: {sender}\r\nTo: someone@raftcloud.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}@example.org>\r\n\r\n{body}\r\n").encode()


def select_inbox(connection: imaplib.IMAP4) -> bytes:
    """SELECT INBOX again; the tagged answer's text (imaplib keeps only the untagged)."""
    connection.untagged_responses.pop("READ-ONLY", None)
    typ, data = connection._simple_command("SELECT", "INBOX")
    assert typ == "OK", data
    # As imaplib's own select() would: its later commands check the state it noted.
    connection.is_readonly = data[-1].startswith(b"[READ-ONLY]")
    return data[-1]


def ok(answer: tuple[str, list]) -> list:
    assert answer[0] == "OK", answer
    return answer[1]


# -- logging in -----------------------------------------------------------------------------


def test_capability_lists_what_we_claim_before_and_after_login(imapd, user):
    connection = connect(imapd)
    before = set(connection.capabilities)
    assert {"IMAP4REV1", "LITERAL+", "ID", "STARTTLS", "AUTH=PLAIN"} <= before
    assert "LOGINDISABLED" not in before  # a loopback peer may log in before TLS
    connection.login(user, PASSWORD)
    after = set(ok(connection.capability())[0].decode().upper().split())
    assert CLAIMED <= after and "STARTTLS" not in after
    assert f"APPENDLIMIT={25 * 1024 * 1024}" in after
    assert "CONDSTORE" not in after  # not offered (docs/imap.md says why)
    connection.logout()


def test_starttls_and_implicit_tls_both_log_in(imapd, user):
    plain = connect(imapd)
    plain.starttls(ssl_context=client_tls())
    assert "STARTTLS" not in plain.capabilities and "AUTH=PLAIN" in plain.capabilities
    assert ok(plain.login(user, PASSWORD))
    plain.logout()
    secure = connect(imapd, tls=True)
    assert "STARTTLS" not in secure.capabilities
    assert ok(secure.login(f"{user}@raftcloud.test", PASSWORD))  # the full address works too
    secure.logout()


def test_without_loopback_leniency_login_waits_for_tls(cluster, client, user, tmp_path):
    with inprocess_imapd(cluster, client, tmp_path, plaintext_login_on_loopback=False) as s:
        connection = connect(s)
        assert "LOGINDISABLED" in connection.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            connection.login(user, PASSWORD)
        connection.starttls(ssl_context=client_tls())
        assert "LOGINDISABLED" not in connection.capabilities
        assert ok(connection.login(user, PASSWORD))
        connection.logout()


def test_wrong_passwords_count_in_the_limiter_smtp_and_the_web_share(cluster, client, imapd,
                                                                     user):
    """Failures over IMAP and SMTP AUTH from one address add up; then even the right
    password is refused there, unchecked, while another address still gets in."""
    source = fresh_address()
    for _ in range(2):
        connection = connect(imapd, source=source)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            connection.login(user, "wrong password")
        connection.logout()
    with loopback_submission(cluster, client) as submission:
        for _ in range(2):
            with smtplib.SMTP(*submission, timeout=30, source_address=(source, 0)) as smtp:
                smtp.ehlo("client.test")
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    smtp.login(user, "wrong password")
    connection = connect(imapd, source=source)
    with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE.*Too many failed"):
        connection.login(user, PASSWORD)
    connection.logout()
    elsewhere = connect(imapd, source=fresh_address())
    assert ok(elsewhere.login(user, PASSWORD))  # only failures counted, per address
    elsewhere.logout()


def test_three_failures_on_one_connection_close_it(imapd, user):
    connection = connect(imapd, source=fresh_address())
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error):
            connection.login(user, "nope")
    with pytest.raises(imaplib.IMAP4.abort, match="Too many failed logins"):
        connection.login(user, "nope")
    connection.shutdown()


def test_app_passwords_with_two_factor_and_disabled_accounts(cluster, client, imapd, user):
    secret = twofactor.begin_enrolment(client, user)
    twofactor.confirm_enrolment(client, user, pyotp.TOTP(secret).now())
    password = app_password(client, cluster, user, "Thunderbird")
    connection = connect(imapd, source=fresh_address())
    with pytest.raises(imaplib.IMAP4.error, match="use an app password"):
        connection.login(user, PASSWORD)  # the account password alone would skip the code
    assert ok(connection.login(user, password))
    connection.logout()
    accounts.set_disabled(client, user, True)
    connection = connect(imapd, source=fresh_address())
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        connection.login(user, password)
    connection.logout()


# -- folders ---------------------------------------------------------------------------------


def test_namespace_and_special_use(imap):
    assert ok(imap.namespace()) == [b'(("" "/")) NIL NIL']
    listed = ok(imap.list())
    assert rb'(\HasNoChildren \Sent) "/" Sent' in listed
    assert any(b"\\Trash" in line and line.endswith(b"Trash") for line in listed)
    assert any(b"\\Drafts" in line for line in listed) and any(b"\\Junk" in line for line in listed)
    ok(imap._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"'))
    special = imap.untagged_responses.pop("LIST", [])
    assert len(special) == 4 and not any(line.endswith(b"INBOX") for line in special)


def test_create_rename_delete_with_unicode_names(imap, client, user):
    ok(imap.create('"Work/Entw&APw-rfe"'))
    assert mail.find_folder(client, user, "Work/Entwürfe") is not None
    listed = ok(imap.list('""', '"Work/*"'))
    assert listed == [rb'(\HasNoChildren) "/" Work/Entw&APw-rfe']
    ok(imap.rename('"Work/Entw&APw-rfe"', "Archive"))
    assert mail.find_folder(client, user, "Archive") is not None
    typ, data = imap.create("Archive")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    typ, data = imap.delete("Trash")
    assert typ == "NO" and b"cannot be deleted" in data[0]
    ok(imap.delete("Archive"))
    typ, data = imap.select("Archive")
    assert typ == "NO" and b"NONEXISTENT" in data[0]


# -- messages --------------------------------------------------------------------------------


def test_append_fetch_store_search_copy_move_expunge(imap, client, user):
    folder = mail.create_folder(client, user, "Kept")
    validity = mail.get_folder(client, user, mail.INBOX).uidvalidity
    for n in range(3):
        answer = ok(imap.append("INBOX", "(\\Flagged)" if n == 0 else None, None,
                                message(f"note {n}", f"body number {n}")))
        assert response_code(answer, "APPENDUID") == [str(validity), str(n + 1)]
    assert ok(imap.select("INBOX")) == [b"3"]
    assert response_code(imap.untagged_responses.get("OK", []), "UIDVALIDITY") == [str(validity)]

    fetched = ok(imap.fetch("1:3", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    subjects = [part[1] for part in fetched if isinstance(part, tuple)]
    assert subjects == [f"Subject: note {n}\r\n\r\n".encode() for n in range(3)]
    assert b"FLAGS (\\Flagged)" in fetched[0][0] and b"RFC822.SIZE" in fetched[0][0]
    body = ok(imap.uid("FETCH", "2", "(BODY[])"))
    assert b"body number 1" in body[0][1]
    assert mail.get_record(client, user, mail.INBOX, 2).seen  # BODY[] without PEEK

    ok(imap.store("3", "+FLAGS", "(\\Answered $Work)"))
    assert set(mail.get_record(client, user, mail.INBOX, 3).flags) == {"\\Answered", "$Work"}
    assert ok(imap.search(None, "SUBJECT", '"note 1"')) == [b"2"]
    assert ok(imap.uid("SEARCH", None, "FLAGGED")) == [b"1"]
    assert ok(imap.search(None, "BODY", '"number 2"')) == [b"3"]

    copied = ok(imap._simple_command("UID", "COPY", "1:2", "Kept"))  # the tagged answer
    assert response_code(copied, "COPYUID") == [str(folder.uidvalidity), "1:2", "1:2"]
    moved = imap.uid("MOVE", "3", "Trash")
    assert moved[0] == "OK"
    trash = mail.list_folder(client, user, mail.TRASH)
    assert [r.subject for r in trash] == ["note 2"] and trash[0].origin == mail.INBOX
    assert imap.untagged_responses.pop("EXPUNGE", None) == [b"3"]  # MOVE said so at once
    assert ok(imap.store("1", "+FLAGS", "(\\Deleted)"))
    expunged = ok(imap.expunge())
    assert expunged == [b"1"]
    assert [r.uid for r in mail.list_folder(client, user, mail.INBOX)] == [2]
    assert [r.uid for r in mail.list_folder(client, user, folder.id)] == [1, 2]
    status = ok(imap.status("Kept", "(MESSAGES UNSEEN UIDNEXT)"))
    assert status == [b'Kept (MESSAGES 2 UNSEEN 1 UIDNEXT 3)']  # the copy of 2 was read


def test_examine_is_read_only(imap, client, user):
    mail.deliver(client, user, message("look only"))
    ok(imap.select("INBOX", readonly=True))
    typ, data = imap.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "NO" and b"READ-ONLY" in data[0]
    ok(imap.fetch("1", "(BODY[])"))
    assert not mail.get_record(client, user, mail.INBOX, 1).seen  # EXAMINE never sets \Seen


def test_uids_survive_a_new_connection_and_a_changed_flag_reaches_another_client(imapd, imap,
                                                                                 client, user):
    for n in range(3):
        mail.deliver(client, user, message(f"m{n}"))
    ok(imap.select("INBOX"))
    other = connect(imapd)
    other.login(user, PASSWORD)
    ok(other.select("INBOX"))
    ok(other.uid("STORE", "2", "+FLAGS", "(\\Flagged)"))
    ok(other.uid("MOVE", "3", "Junk"))
    ok(imap.noop())
    flagged = [item for item in imap.untagged_responses.get("FETCH", []) if b"Flagged" in item]
    assert flagged and imap.untagged_responses.get("EXPUNGE") == [b"3"]
    assert ok(imap.uid("SEARCH", None, "ALL")) == [b"1 2"]
    other.logout()


def test_idle_hears_of_an_smtp_delivery_within_two_seconds(imapd, inbound, user):
    with socket.create_connection(hostport(imapd.listen), timeout=10) as sock:
        lines = sock.makefile("rb")
        lines.readline()
        sock.sendall(f'a LOGIN {user} "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
        while not lines.readline().startswith(b"b OK"):
            pass
        sock.sendall(b"c IDLE\r\n")
        assert lines.readline().startswith(b"+ ")
        host, port = hostport(inbound)
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.sendmail("friend@example.org", [f"{user}@raftcloud.test"], message("ping"))
        delivered = time.monotonic()
        heard = lines.readline()
        took = time.monotonic() - delivered
        print(f"IDLE heard of the delivery after {took:.2f}s")
        assert heard == b"* 1 EXISTS\r\n" and took < IDLE_BUDGET
        sock.sendall(b"DONE\r\n")
        while not (line := lines.readline()).startswith(b"c "):
            pass
        assert line.startswith(b"c OK")


def test_mail_from_smtpd_read_in_the_webmail_is_seen_over_imap(imap, inbound, portal, client,
                                                               user):
    host, port = hostport(inbound)
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.sendmail("friend@example.org", [f"{user}@raftcloud.test"],
                      message("from the web", "read me in the browser"))
    http = HTTPClient(portal)
    signed = http.post("/login", data={"csrf": csrf_of(http, "/login"), "username": user,
                                        "password": PASSWORD})
    assert signed.status_code == 303
    [record] = mail.list_folder(client, user, mail.INBOX)
    page = http.get(f"/mail/{record.id}")
    assert page.status_code == 200 and "read me in the browser" in page.text
    ok(imap.select("INBOX"))
    fetched = ok(imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert b"\\Seen" in fetched[0][0] and b"Subject: from the web" in fetched[0][1]


def test_a_message_moved_over_imap_moves_in_the_webmail(imap, portal, client, user):
    mail.deliver(client, user, message("move me"))
    ok(imap.select("INBOX"))
    ok(imap.uid("MOVE", "1", "Trash"))
    http = HTTPClient(portal)
    http.post("/login", data={"csrf": csrf_of(http, "/login"), "username": user,
                              "password": PASSWORD})
    inbox = http.get("/mail")
    assert inbox.status_code == 200 and "move me" not in inbox.text
    assert [r.subject for r in mail.list_folder(client, user, mail.TRASH)] == ["move me"]


def test_imapd_is_in_the_node_registry_and_the_admin_console(imapd, portal, client):
    def listed() -> list:
        return [n for n in registry.list_nodes(client, "imapd") if n.name == imapd.name]
    [node] = wait_for(listed, 10, "imapd's heartbeat")
    assert node.alive and node.addr == imapd.listen and node.info["listen_tls"] == imapd.listen_tls
    admin = f"admin{secrets.token_hex(3)}"
    accounts.create_user(client, admin, PASSWORD, admin=True)
    http = HTTPClient(portal)
    http.post("/login", data={"csrf": csrf_of(http, "/login"), "username": admin,
                              "password": PASSWORD})
    console = http.get("/admin")
    assert console.status_code == 200
    assert f'<td data-label="Kind">imapd</td><td data-label="Name">{imapd.name}</td>' \
        in console.text


def test_bad_input_gets_a_bad_and_the_connection_goes_on(imapd, user):
    with socket.create_connection(hostport(imapd.listen), timeout=10) as sock:
        lines = sock.makefile("rb")
        lines.readline()
        sock.sendall(f'a LOGIN {user} "{PASSWORD}"\r\n'.encode())
        assert lines.readline().startswith(b"a OK")
        sock.sendall(b"b CREATE &AAA\r\nc FETCH 1 (FLAGS\r\nd NOOP\r\n")
        answers = [lines.readline() for _ in range(3)]
        assert answers[0].startswith(b"b BAD") and b"UTF-7" in answers[0]
        assert answers[1].startswith(b"c BAD") and answers[2].startswith(b"d OK")


def test_gone_user_names_are_not_a_crash(imapd):
    connection = connect(imapd, source=fresh_address())
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        connection.login("nobody-" + secrets.token_hex(3), "whatever it is")
    with pytest.raises(imaplib.IMAP4.error):
        connection.login("{bad}/name", "whatever it is")
    connection.logout()


def test_a_group_without_majority_serves_folders_read_only(fresh_cluster, tmp_path):
    """Sessions open when the user's group loses its majority go on reading (stale reads,
    SELECT opens READ-ONLY with an ALERT); writes and new logins get NO [UNAVAILABLE]."""
    cluster = fresh_cluster
    with cluster.client() as store, inprocess_imapd(cluster.cluster, store, tmp_path) as s:
        name = f"ro{secrets.token_hex(3)}"
        accounts.create_user(store, name, PASSWORD)
        for n in range(2):
            mail.deliver(store, name, message(f"before the outage {n}"))
        connection = connect(s)
        ok(connection.login(name, PASSWORD))
        ok(connection.select("INBOX"))
        leader = cluster.leader(1)
        for replica in [r for r in cluster.procs if r != leader]:
            cluster.kill(replica)

        started = time.monotonic()
        selected = select_inbox(connection)
        print(f"SELECT with the majority lost: {time.monotonic() - started:.2f}s")
        assert selected.startswith(b"[READ-ONLY]"), selected
        assert "ALERT" in connection.untagged_responses  # "* OK [ALERT] ...recovering..."
        fetched = ok(connection.fetch("1:2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        assert fetched[0][1] == b"Subject: before the outage 0\r\n\r\n"
        typ, data = connection.store("1", "+FLAGS", "(\\Flagged)")
        assert typ == "NO" and b"UNAVAILABLE" in data[0] and b"read-only" in data[0]
        typ, data = connection.append("INBOX", None, None, message("during"))
        assert typ == "NO" and b"UNAVAILABLE" in data[0] and b"read-only" in data[0]
        newcomer = connect(s)
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            newcomer.login(name, PASSWORD)
        newcomer.logout()

        for replica in cluster.procs:
            cluster.start(replica)
        cluster.leader(1)

        def writable() -> bool:
            return select_inbox(connection).startswith(b"[READ-WRITE]")
        wait_for(writable, 30, "the folder to be writable again", interval=0.5)
        ok(connection.store("1", "+FLAGS", "(\\Flagged)"))
        connection.logout()
