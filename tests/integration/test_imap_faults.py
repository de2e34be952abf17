"""imapd under faults, with imaplib (issue 19): restarts, a shard move, racing clients, a
client killed mid-APPEND, and the storage leader killed under two working clients.

One store of the module's own (two groups and the config group, so a user's shard can
move), which the tests crash and restart and leave whole again; imapd runs in this
process, one per test, so a test can also stop it.  Every loop is bounded in count and
time; what each client did and what the server acknowledged is recorded, and what was
acknowledged is what the checks demand.
"""

from __future__ import annotations

import imaplib
import random
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from shards.model import accounts, mail

from .._imap import connect, hostport, inprocess_imapd, ok, response_code, sample_message
from .._portal import PASSWORD
from ..cluster import KVCluster, move_shard, running

pytestmark = pytest.mark.cluster

BIG = 20 * 1024 * 1024  # the killed APPEND's message (the limit is 25 MiB)
FETCH_IDS = "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"


@pytest.fixture(scope="module")
def kv(tmp_path_factory) -> Iterator[KVCluster]:
    root = tmp_path_factory.mktemp("imapfaults")
    with running(KVCluster(root / "kv", groups=2, config_group=True)) as cluster:
        yield cluster


@pytest.fixture
def store(kv):
    with kv.client() as client:
        yield client


@contextmanager
def imap_server(kv: KVCluster, store, tmp_path) -> Iterator:
    with inprocess_imapd(kv.cluster, store, tmp_path / "tls") as settings:
        yield settings


@pytest.fixture
def imapd(kv, store, tmp_path):
    with imap_server(kv, store, tmp_path) as settings:
        yield settings


def new_user(store, prefix: str) -> str:
    user = f"{prefix}{secrets.token_hex(3)}"
    accounts.create_user(store, user, PASSWORD)
    return user


def logged_in(settings, user: str, timeout: float = 30) -> imaplib.IMAP4:
    connection = connect(settings, timeout=timeout)
    ok(connection.login(user, PASSWORD))
    return connection


def close(connection: imaplib.IMAP4) -> None:
    try:
        connection.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def uid_map(connection: imaplib.IMAP4, folder: str) -> tuple[str, dict[int, str]]:
    """A folder's UIDVALIDITY and its messages' Message-IDs by UID, as IMAP tells them."""
    connection.untagged_responses.clear()
    exists = ok(connection.select(folder))
    [validity] = response_code(connection.untagged_responses.get("OK", []), "UIDVALIDITY")
    data = ok(connection.uid("FETCH", "1:*", FETCH_IDS)) if exists != [b"0"] else []
    found: dict[int, str] = {}
    for part in data:
        if isinstance(part, tuple):
            uid = int(re.search(rb"UID (\d+)", part[0]).group(1))
            assert uid not in found, f"UID {uid} twice in {folder}"
            found[uid] = part[1].decode().split(":", 1)[1].strip()
    return validity, found


def mailbox_census(store, user: str) -> dict[str, list[tuple[str, int]]]:
    """Where every Message-ID is, by the store: [(folder, uid), ...]; UIDs checked unique."""
    where: dict[str, list[tuple[str, int]]] = {}
    for folder in mail.list_folders(store, user):
        records = mail.list_folder(store, user, folder.id)
        uids = [r.uid for r in records]
        assert len(uids) == len(set(uids)), f"a UID twice in {folder.name}: {uids}"
        assert all(uid < folder.uidnext for uid in uids), folder
        for record in records:
            where.setdefault(record.message_id, []).append((folder.name, record.uid))
    return where


# -- UIDs that last ------------------------------------------------------------------------


def filled(store, settings, user: str) -> dict[str, tuple[str, dict[int, str]]]:
    kept = mail.create_folder(store, user, "Kept")
    for n in range(5):
        mail.deliver(store, user, sample_message(f"inbox {n}"))
    for n in range(3):
        mail.append(store, user, kept.id, sample_message(f"kept {n}"))
    mail.expunge(store, user, mail.INBOX, [2])  # a gap: UIDs are not positions
    connection = logged_in(settings, user)
    try:
        return {folder: uid_map(connection, folder) for folder in ("INBOX", "Kept")}
    finally:
        close(connection)


def assert_same_uids_and_next_is_new(settings, user: str, before: dict) -> None:
    connection = logged_in(settings, user)
    try:
        assert {folder: uid_map(connection, folder) for folder in before} == before
        answer = ok(connection.append("INBOX", None, None, sample_message("after")))
        assert int(response_code(answer, "APPENDUID")[1]) == 6  # never a UID handed out before
    finally:
        close(connection)


def test_uids_survive_a_restart_of_every_process(kv, tmp_path):
    with kv.client() as store:
        user = new_user(store, "restart")
        with imap_server(kv, store, tmp_path) as settings:
            before = filled(store, settings, user)
            assert sorted(before["INBOX"][1]) == [1, 3, 4, 5]
    kv.restart_all()  # every replica, the config group's too, at once
    with kv.client() as store, imap_server(kv, store, tmp_path) as settings:
        assert_same_uids_and_next_is_new(settings, user, before)


def test_uids_survive_a_move_of_the_users_shard(kv, store, imapd):
    user = new_user(store, "moved")
    before = filled(store, imapd, user)
    move_shard(store, mail.mailbox_row(user))
    assert_same_uids_and_next_is_new(imapd, user, before)


# -- two clients at once ---------------------------------------------------------------------


@dataclass
class Journal:
    """What one client did, and what the server acknowledged."""

    name: str
    flags: set[tuple[int, str]] = field(default_factory=set)  # (INBOX uid, keyword) shown set
    moved: dict[int, str] = field(default_factory=dict)       # INBOX uid -> folder, answered OK
    appended: list[str] = field(default_factory=list)         # Message-IDs, APPENDUID answered
    failed: list[str] = field(default_factory=list)           # ops answered NO, or cut off
    done: int = 0
    started: list[float] = field(default_factory=list)        # each op's time.monotonic()

    def note_fetches(self, data: list) -> None:
        """Flags a FETCH answer shows on a UID of the selected INBOX: acknowledged."""
        for item in data:
            text = item[0] if isinstance(item, tuple) else item
            if not isinstance(text, bytes):
                continue
            uid = re.search(rb"UID (\d+)", text)
            flags = re.search(rb"FLAGS \(([^)]*)\)", text)
            if uid and flags:
                for flag in flags.group(1).decode().split():
                    if flag != "\\Recent":  # a session's flag, never stored
                        self.flags.add((int(uid.group(1)), flag))


def worker(settings, user: str, journal: Journal, ops: list[tuple[str, int, str]],
           deadline: float, pace: float) -> None:
    """Do ``ops`` (flag/move/append) in INBOX in order, ``pace`` seconds apart, reconnecting
    when cut off, until done or ``deadline``."""
    connection: imaplib.IMAP4 | None = None
    for op, uid, arg in ops:
        if time.monotonic() > deadline:
            break
        time.sleep(pace)
        journal.started.append(time.monotonic())
        try:
            if connection is None:
                connection = logged_in(settings, user, timeout=15)
                ok(connection.select("INBOX"))
            if op == "flag":
                typ, data = connection.uid("STORE", str(uid), "+FLAGS", f"({arg})")
                # imaplib hands back the FETCH answers; ours and any another client caused
                journal.note_fetches(data if typ == "OK" else [])
            elif op == "move":
                typ, data = connection.uid("MOVE", str(uid), arg)
                if typ == "OK":
                    journal.moved[uid] = arg
            else:
                raw = sample_message(arg, message_id=arg)
                typ, data = connection.append("INBOX", None, None, raw)
                if typ == "OK" and response_code(data, "APPENDUID"):
                    journal.appended.append(arg)
            if typ != "OK":
                journal.failed.append(f"{op} {uid} {arg}: {typ} {data}")
        except (imaplib.IMAP4.abort, OSError) as exc:
            journal.failed.append(f"{op} {uid} {arg}: cut off ({exc})")
            if connection is not None:
                try:
                    connection.shutdown()
                except OSError:
                    pass
            connection = None
            time.sleep(0.5)
        journal.done += 1
    if connection is not None:
        close(connection)


def plan(name: str, uids: list[int], moving: list[int], target: str, appends: int,
         seed: int) -> list[tuple[str, int, str]]:
    """Flags on every UID (a keyword of its own each time), moves of ``moving`` to ``target``,
    appends: shuffled together."""
    rnd = random.Random(seed)
    ops = [("flag", uid, f"${name}{n}") for n, uid in enumerate(uids + rnd.sample(uids, 10))]
    ops += [("move", uid, target) for uid in moving]
    ops += [("append", 0, f"<{name}-{n}-{secrets.token_hex(4)}@raced.test>")
            for n in range(appends)]
    rnd.shuffle(ops)
    return ops


def run_two_clients(settings, user: str, ids: dict[int, str], seconds: float,
                    during=None, pace: float = 0.0) -> tuple[Journal, Journal]:
    """Two clients in threads: each flags every message, moves its own half of the first
    ten (to Other or Third), appends five; ``during()`` runs meanwhile in this thread."""
    uids = sorted(ids)
    journals = (Journal("a"), Journal("b"))
    plans = (plan("a", uids, uids[0:10:2], "Other", 5, 1),
             plan("b", uids, uids[1:10:2], "Third", 5, 2))
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=worker, args=(settings, user, j, p, deadline, pace))
               for j, p in zip(journals, plans, strict=True)]
    for thread in threads:
        thread.start()
    try:
        if during is not None:
            during()
    finally:
        for thread in threads:
            thread.join(seconds + 60)
    assert not any(t.is_alive() for t in threads), "a client did not stop by its deadline"
    for journal in journals:
        print(f"client {journal.name}: {journal.done} ops, {len(journal.flags)} flags seen, "
              f"{len(journal.moved)} moves and {len(journal.appended)} appends answered OK, "
              f"{len(journal.failed)} failed: {journal.failed[:5]}")
    return journals


def assert_nothing_lost(store, settings, user: str, ids: dict[int, str],
                        journals: tuple[Journal, Journal], *, all_acknowledged: bool) -> None:
    census = mailbox_census(store, user)
    connection = logged_in(settings, user)
    try:  # and IMAP shows the same: each Message-ID once, under the UID the store has
        for folder in ("INBOX", "Other", "Third"):
            shown = uid_map(connection, folder)[1]
            assert {m: [(folder, uid)] for uid, m in shown.items()} == \
                {m: places for m, places in census.items() if places[0][0] == folder}
    finally:
        close(connection)
    for message_id, places in census.items():
        assert len(places) == 1, f"{message_id} is in {places}"
    assert set(ids.values()) <= set(census), "a message of the start is gone"
    for journal in journals:
        for message_id in journal.appended:
            assert message_id in census, f"{journal.name}'s acknowledged APPEND is missing"
        for uid, folder in journal.moved.items():
            assert census[ids[uid]][0][0] == folder, f"{journal.name}'s MOVE of {uid} undone"
        for uid, flag in journal.flags:
            if uid in ids:  # an appended message's flags are none of ours
                folder, new_uid = census[ids[uid]][0]
                fid = mail.find_folder(store, user, folder).id
                record = mail.get_record(store, user, fid, new_uid)
                assert flag in record.flags, f"{flag} on {uid} ({journal.name}) was lost"
        own = {flag for _uid, flag in journal.flags if flag.startswith(f"${journal.name}")}
        assert len(own) >= 10, f"{journal.name}: too few flags acknowledged to judge: {own}"
        if all_acknowledged:
            assert not journal.failed, journal.failed
            assert len(journal.moved) == 5 and len(journal.appended) == 5


def racing_mailbox(store, settings, user: str, count: int = 20) -> dict[int, str]:
    for folder in ("Other", "Third"):
        mail.create_folder(store, user, folder)
    for n in range(count):
        mail.deliver(store, user, sample_message(f"race {n}"))
    connection = logged_in(settings, user)
    try:
        return uid_map(connection, "INBOX")[1]
    finally:
        close(connection)


def test_two_clients_racing_on_one_folder_lose_nothing(store, imapd):
    user = new_user(store, "race")
    ids = racing_mailbox(store, imapd, user)
    journals = run_two_clients(imapd, user, ids, seconds=60)
    assert_nothing_lost(store, imapd, user, ids, journals, all_acknowledged=True)
    census = mailbox_census(store, user)
    assert sum(1 for places in census.values() if places[0][0] == "INBOX") == 20


def test_the_leader_killed_while_two_clients_work(kv, store, imapd):
    user = new_user(store, "fault")
    ids = racing_mailbox(store, imapd, user)
    group = store.shard_map.group_of(store.shard_of(mail.mailbox_row(user)))
    leader = kv.leader(group)

    outage: list[float] = []

    def kill_and_restart() -> None:
        time.sleep(1.0)
        outage.append(time.monotonic())
        kv.kill(leader)
        print(f"killed {leader}, the leader of group {group}")
        time.sleep(4.0)
        kv.start(leader)
        outage.append(time.monotonic())

    # 40 ops each, 0.2 s apart: about 8 s of work, the leader gone from 1 s to 5 s
    journals = run_two_clients(imapd, user, ids, seconds=60, during=kill_and_restart,
                               pace=0.2)
    kv.leader(group, timeout=30)
    assert_nothing_lost(store, imapd, user, ids, journals, all_acknowledged=False)
    assert sum(j.done for j in journals) > 20, "the clients hardly worked"
    during = [t for j in journals for t in j.started if outage[0] <= t <= outage[1]]
    assert len(during) >= 5, "the clients did not work while the leader was down"


# -- a client gone in the middle of an APPEND ----------------------------------------------


def lines_until(sock_file, tag: bytes) -> list[bytes]:
    lines = []
    for _ in range(100):
        line = sock_file.readline()
        if not line:
            raise ConnectionError(f"closed before {tag!r}: {lines}")
        lines.append(line)
        if line.startswith(tag + b" ") or line.startswith(b"+"):
            return lines
    raise AssertionError(f"no {tag!r} in {lines}")


@pytest.mark.parametrize("cut", ["half, then FIN", "half, then RST", "all but the CRLF",
                                 "half of a LITERAL+"])
def test_a_client_killed_mid_append_stores_nothing(store, imapd, cut):
    user = new_user(store, "cut")
    mail.deliver(store, user, sample_message("already there"))
    usage, exists = mail.usage(store, user), mail.get_folder(store, user, mail.INBOX).exists
    afterwards = sample_message("afterwards")
    raw = sample_message("the big one", size=BIG)
    literal = "+" if "LITERAL+" in cut else ""
    sent = len(raw) if cut == "all but the CRLF" else len(raw) // 2
    with socket.create_connection(hostport(imapd.listen), timeout=30) as sock:
        lines = sock.makefile("rb")
        lines.readline()
        sock.sendall(f'a LOGIN {user} "{PASSWORD}"\r\n'.encode())
        assert lines_until(lines, b"a")[-1].startswith(b"a OK")
        sock.sendall(f"b APPEND INBOX {{{len(raw)}{literal}}}\r\n".encode())
        if not literal:
            assert lines_until(lines, b"b")[-1].startswith(b"+")
        sock.sendall(raw[:sent])
        if "RST" in cut:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(1.0)  # whatever the server would do with it, it has had the time
    other = logged_in(imapd, user)
    try:
        assert ok(other.select("INBOX")) == [b"1"]  # EXISTS unchanged
        ok(other.append("INBOX", None, None, afterwards))  # still serving
    finally:
        close(other)
    assert mail.get_folder(store, user, mail.INBOX).exists == exists + 1
    subjects = [r.subject for r in mail.list_folder(store, user, mail.INBOX)]
    assert subjects == ["already there", "afterwards"]
    assert mail.usage(store, user) == usage + len(afterwards)


def uid_set(text: str) -> set[int]:
    """The UIDs of an IMAP sequence set such as ``1:3,7``."""
    uids: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        uids.update(range(int(low), int(high or low) + 1))
    return uids


def test_two_clients_moving_the_same_messages_each_get_their_own(store, imapd):
    """Both move every message at once, one to Other, one to Third: each message lands in
    one folder, and the COPYUID answers of the two name disjoint sets of UIDs."""
    user = new_user(store, "both")
    ids = racing_mailbox(store, imapd, user, count=12)
    start = threading.Barrier(2, timeout=30)
    claimed: dict[str, set[int]] = {"Other": set(), "Third": set()}

    def mover(target: str) -> None:
        connection = logged_in(imapd, user)
        try:
            ok(connection.select("INBOX"))
            start.wait()
            for uid in sorted(ids):
                answer = ok(connection._simple_command("UID", "MOVE", str(uid), target))
                copied = response_code(answer, "COPYUID") or response_code(
                    connection.untagged_responses.pop("OK", []), "COPYUID")
                if copied:
                    claimed[target].update(uid_set(copied[1]))
        finally:
            close(connection)

    threads = [threading.Thread(target=mover, args=(t,)) for t in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    print({folder: sorted(uids) for folder, uids in claimed.items()})
    assert not claimed["Other"] & claimed["Third"], "both were told they moved one message"
    assert claimed["Other"] | claimed["Third"] == set(ids)
    census = mailbox_census(store, user)
    for uid, message_id in ids.items():
        [(folder, _uid)] = census[message_id]
        assert uid in claimed[folder], f"{uid} is in {folder}, whose client did not move it"
