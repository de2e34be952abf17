"""mbsync (Debian's isync) against raftcloud-imapd on the real store (issue 19).

A real offline client: mbsync keeps a Maildir and the server in step, both ways, by
UID, flags and its own sync state; it notices a UID reused, a flag lost, or a message
the server answered for but did not keep.  Each test writes its own mbsyncrc (STARTTLS
on the plain port, trusting the test's self-signed certificate by CertificateFile),
syncs, changes one side, syncs again and looks at both sides.

The webmail's move is the model's ``mail.move`` on the real store, as the portal calls
it; its delete (into Trash, then for good from Trash) is driven through the portal.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.tls import ensure_certificate
from portal import PortalConfig, create_app
from shards.model import accounts, mail

from .._imap import connect, hostport, inprocess_imapd, ok, sample_message
from .._portal import PASSWORD, logged_in, post

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(shutil.which("mbsync") is None,
                                 reason="isync (mbsync) is not installed: make system-deps")]

SYNC_TIMEOUT = 60  # seconds for one mbsync run, a few dozen small messages
NESTED = "Work/Projects"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("imap-tls")
    ensure_certificate(directory, "localhost")  # inprocess_imapd uses the same files
    return directory


@pytest.fixture(scope="module")
def imapd(kv_cluster, client, certs):
    with inprocess_imapd(kv_cluster.cluster, client, certs) as settings:
        yield settings


@dataclass
class Mbsync:
    """One user's mbsync: its configuration file, its Maildir, and a way to run it."""

    user: str
    home: Path
    config: Path
    inbox: Path      # the Maildir of INBOX
    folders: Path    # the Maildirs of every other folder, nested as on the server

    def sync(self) -> str:
        """One ``mbsync -a``; its output.  Fails the test on any error it reports."""
        done = subprocess.run(["mbsync", "-c", str(self.config), "-a"], capture_output=True,
                              text=True, timeout=SYNC_TIMEOUT, env={**os.environ,
                                                                     "HOME": str(self.home)})
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "rror" not in output, output
        return output

    def maildir(self, folder: str) -> Path:
        return self.inbox if folder == "INBOX" else self.folders / folder


@pytest.fixture
def mbsync(imapd, certs, client, tmp_path) -> Mbsync:
    user = f"sync{secrets.token_hex(3)}"
    accounts.create_user(client, user, PASSWORD)
    host, port = hostport(imapd.listen)
    inbox, folders = tmp_path / "inbox", tmp_path / "mail"
    folders.mkdir()  # mbsync makes the folders' Maildirs, not the store's root
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""\
IMAPAccount raftcloud
Host {host}
Port {port}
User {user}
Pass "{PASSWORD}"
SSLType STARTTLS
CertificateFile {certs / "cert.pem"}
Timeout 20

IMAPStore remote
Account raftcloud

MaildirStore local
Path {folders}/
Inbox {inbox}
SubFolders Verbatim

Channel raftcloud
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
""")
    return Mbsync(user, tmp_path, config, inbox, folders)


# -- the Maildir side ------------------------------------------------------------------------


@dataclass(frozen=True)
class MaildirMessage:
    path: Path
    message_id: str
    flags: str   # Maildir's letters after ":2,", e.g. "FS"
    uid: int     # the server's UID, which mbsync keeps in the name (",U=<uid>")


def in_maildir(directory: Path) -> dict[str, MaildirMessage]:
    """The messages of one Maildir by Message-ID."""
    found: dict[str, MaildirMessage] = {}
    for sub in ("cur", "new"):
        for path in sorted((directory / sub).iterdir()) if (directory / sub).is_dir() else []:
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            message_id = str(parsed["Message-ID"])
            assert message_id not in found, f"{message_id} twice in {directory}"
            base, _, flags = path.name.partition(":2,")
            uid = next((int(part[2:]) for part in base.split(",") if part.startswith("U=")), 0)
            found[message_id] = MaildirMessage(path, message_id, flags, uid)
    return found


def set_maildir_flags(message: MaildirMessage, flags: str) -> None:
    """What a Maildir client (mutt, a file manager) does to flag a message: rename it."""
    base = message.path.name.partition(":2,")[0]
    message.path.rename(message.path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}")


def maildir_snapshot(sync: Mbsync) -> dict[str, bytes]:
    """Every message file of the Maildirs, by path, with its bytes (mbsync's state left out)."""
    return {str(path.relative_to(sync.home)): path.read_bytes()
            for root in (sync.inbox, sync.folders) if root.exists()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.parent.name in ("cur", "new", "tmp")}


# -- the server side -------------------------------------------------------------------------


def server_snapshot(client, user: str) -> dict[str, list[tuple[int, str, tuple[str, ...], int]]]:
    """Every folder's records: (uid, Message-ID, flags, modseq); and each folder's modseq,
    so that a flag stored again with the same value shows too."""
    snapshot: dict[str, list[tuple[int, str, tuple[str, ...], int]]] = {}
    for folder in mail.list_folders(client, user):
        records = mail.list_folder(client, user, folder.id)
        snapshot[folder.name] = [(0, "", (), folder.modseq)] + [
            (r.uid, r.message_id, tuple(sorted(r.flags)), r.modseq) for r in records]
    return snapshot


def server_message_ids(client, user: str, fid: int) -> dict[str, mail.Record]:
    return {r.message_id: r for r in mail.list_folder(client, user, fid)}


def assert_a_sync_changes_nothing(sync: Mbsync, client) -> None:
    before = (maildir_snapshot(sync), server_snapshot(client, sync.user))
    sync.sync()
    assert (maildir_snapshot(sync), server_snapshot(client, sync.user)) == before


def fill(client, user: str) -> dict[str, list[str]]:
    """Messages in INBOX (3), Sent (1) and a nested user folder (1); their Message-IDs."""
    projects = mail.create_folder(client, user, NESTED)
    ids: dict[str, list[str]] = {"INBOX": [], "Sent": [], NESTED: []}
    for n in range(3):
        raw = sample_message(f"inbox {n}")
        mail.deliver(client, user, raw)
        ids["INBOX"].append(mail.parse_headers(raw).message_id)
    for folder, fid in (("Sent", mail.SENT), (NESTED, projects.id)):
        raw = sample_message(f"in {folder}")
        mail.append(client, user, fid, raw, flags=("\\Seen",))
        ids[folder].append(mail.parse_headers(raw).message_id)
    return ids


# -- the tests -------------------------------------------------------------------------------


def test_folders_sync_to_the_maildir_with_their_uids(mbsync, client):
    ids = fill(client, mbsync.user)
    mbsync.sync()
    for folder, fid in (("INBOX", mail.INBOX), ("Sent", mail.SENT),
                        (NESTED, mail.find_folder(client, mbsync.user, NESTED).id)):
        local = in_maildir(mbsync.maildir(folder))
        assert sorted(local) == sorted(ids[folder]), folder
        remote = server_message_ids(client, mbsync.user, fid)
        assert {m: local[m].uid for m in local} == {m: remote[m].uid for m in local}
        assert {m: "S" in local[m].flags for m in local} == {m: remote[m].seen for m in local}
    for special in ("Drafts", "Trash", "Junk"):  # the empty special folders come too
        assert (mbsync.maildir(special) / "cur").is_dir()
    assert_a_sync_changes_nothing(mbsync, client)


def test_flags_set_on_either_side_reach_the_other(mbsync, imapd, client):
    ids = fill(client, mbsync.user)
    mbsync.sync()
    first, second, third = ids["INBOX"]
    imap = connect(imapd)
    ok(imap.login(mbsync.user, PASSWORD))
    ok(imap.select("INBOX"))
    uid_of = {m: r.uid for m, r in server_message_ids(client, mbsync.user, mail.INBOX).items()}
    ok(imap.uid("STORE", str(uid_of[first]), "+FLAGS", "(\\Flagged)"))
    ok(imap.uid("STORE", str(uid_of[third]), "+FLAGS", "(\\Seen \\Answered)"))
    imap.logout()
    local = in_maildir(mbsync.inbox)
    set_maildir_flags(local[second], "SF")
    mbsync.sync()

    local = in_maildir(mbsync.inbox)
    assert local[first].flags == "F" and local[third].flags == "RS"
    remote = server_message_ids(client, mbsync.user, mail.INBOX)
    assert set(remote[second].flags) == {"\\Seen", "\\Flagged"}
    assert set(remote[first].flags) == {"\\Flagged"}  # nothing came back the other way

    set_maildir_flags(local[first], "")  # and taken off again, on the Maildir side
    mbsync.sync()
    assert server_message_ids(client, mbsync.user, mail.INBOX)[first].flags == ()
    assert_a_sync_changes_nothing(mbsync, client)


def test_a_message_moved_in_the_store_moves_in_the_maildir(mbsync, client):
    ids = fill(client, mbsync.user)
    mbsync.sync()
    moving = ids["INBOX"][1]
    record = server_message_ids(client, mbsync.user, mail.INBOX)[moving]
    projects = mail.find_folder(client, mbsync.user, NESTED)
    mail.move(client, mbsync.user, mail.INBOX, [record.uid], projects.id)  # the webmail's way
    mbsync.sync()

    assert moving not in in_maildir(mbsync.inbox)
    there = in_maildir(mbsync.maildir(NESTED))
    assert moving in there and sorted(there) == sorted(ids[NESTED] + [moving])
    assert there[moving].uid == server_message_ids(client, mbsync.user, projects.id)[moving].uid
    assert_a_sync_changes_nothing(mbsync, client)


def test_a_message_added_to_the_maildir_is_appended(mbsync, client):
    fill(client, mbsync.user)
    mbsync.sync()
    raw = sample_message("written offline", "from the Maildir")
    message_id = mail.parse_headers(raw).message_id
    projects = mbsync.maildir(NESTED)
    # Maildir delivery: write under tmp/, then rename into new/ (a flag letter for cur/)
    name = f"{int(time.time())}.{secrets.token_hex(4)}.offline"
    (projects / "tmp" / name).write_bytes(raw)
    (projects / "tmp" / name).rename(projects / "cur" / f"{name}:2,S")
    mbsync.sync()

    fid = mail.find_folder(client, mbsync.user, NESTED).id
    remote = server_message_ids(client, mbsync.user, fid)
    assert message_id in remote and remote[message_id].seen
    stored = mail.get_raw(client, mbsync.user, remote[message_id].id)
    # mbsync marks what it uploads with an X-TUID header (its way to find the message
    # again should the server not answer with APPENDUID); the rest arrives byte for byte
    assert re.sub(rb"X-TUID: [^\r]*\r\n", b"", stored) == raw
    local = in_maildir(projects)[message_id]
    assert local.uid == remote[message_id].uid  # mbsync named the file by the APPENDUID
    assert_a_sync_changes_nothing(mbsync, client)


def test_a_folder_made_in_the_maildir_is_created_on_the_server(mbsync, client):
    fill(client, mbsync.user)
    mbsync.sync()
    made = mbsync.folders / "Work" / "Drafts 2024"
    for sub in ("cur", "new", "tmp"):
        (made / sub).mkdir(parents=True)
    raw = sample_message("in a new folder")
    (made / "new" / f"{int(time.time())}.{secrets.token_hex(4)}.offline").write_bytes(raw)
    mbsync.sync()
    folder = mail.find_folder(client, mbsync.user, "Work/Drafts 2024")
    assert folder is not None
    assert [r.message_id for r in mail.list_folder(client, mbsync.user, folder.id)] == \
        [mail.parse_headers(raw).message_id]
    assert_a_sync_changes_nothing(mbsync, client)


@pytest.fixture(scope="module")
def portal(kv_cluster):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-mbsync",
                          addr="127.0.0.1:9", background=False)
    app = create_app(config, client_factory=kv_cluster.client)
    yield app
    app.close()


def test_deletions_on_either_side_are_expunged_on_the_other(mbsync, client, portal):
    ids = fill(client, mbsync.user)
    mbsync.sync()
    gone_here, gone_there, kept = ids["INBOX"]
    set_maildir_flags(in_maildir(mbsync.inbox)[gone_here], "ST")  # Maildir's "trashed"
    record = server_message_ids(client, mbsync.user, mail.INBOX)[gone_there]
    usage = mail.usage(client, mbsync.user)
    http = logged_in(portal, mbsync.user)
    for step in ("Inbox: into Trash", "Trash: for good"):  # the webmail's two deletes
        deleted = post(http, f"/mail/{record.id}/delete", {"confirm": "yes"},
                       f"/mail/{record.id}/delete")
        assert deleted.status_code == 303, step
    assert mail.locate(client, mbsync.user, record.id) is None
    mbsync.sync()

    assert sorted(in_maildir(mbsync.inbox)) == [kept]
    remote = server_message_ids(client, mbsync.user, mail.INBOX)
    assert sorted(remote) == [kept]
    assert mail.usage(client, mbsync.user) < usage - record.size  # both sizes given back
    assert_a_sync_changes_nothing(mbsync, client)
