"""The frontend's background work: registry heartbeat, the first admin account, drive clean-up.

Each worker process registers the frontend in the node registry every couple
of seconds (:class:`shards.model.registry.Heartbeat`), so the admin console
and the balancer see it, and see it go when it dies.  A second short-lived
thread creates the first admin account from ``RAFTCLOUD_ADMIN_PASSWORD_FILE``:
in the background, because the store may still be electing leaders when
gunicorn boots, and a worker blocked on it would miss its own heartbeat to
the gunicorn arbiter and be killed.  A third thread, started when first
needed, finishes the clean-up of deleted folder trees too big to finish
within the request that deleted them.  A fourth sweeps the mail that was moved
to Trash 30 days ago out of the mailboxes (:class:`TrashSweeper`), a bounded bit at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from raftkv.background import UNTIL_WOKEN, BackgroundLoop
from raftkv.errors import RaftKVError, Refused
from shards.model import accounts, davprops, drive, mail, registry
from shards.model.errors import UserExists

if TYPE_CHECKING:
    from .app import Portal

log = logging.getLogger("portal.heartbeat")


def bootstrap_admin(portal: Portal) -> None:
    """Create the cluster's admin account with the configured password, unless it exists.

    Safe to run from every frontend at once: creation is a CPUT on an absent
    cell, so exactly one wins and the others see :class:`~shards.model.errors.UserExists`.
    """
    password = portal.config.admin_password
    if password is None:
        return
    try:
        accounts.create_user(portal.client(), portal.config.site.admin_user, password,
                             admin=True)
        log.info("created the admin account %r", portal.config.site.admin_user)
    except UserExists:
        pass


class Background:
    """The background threads of one process; started again in a forked child."""

    def __init__(self, portal: Portal, *, interval: float) -> None:
        self.portal = portal
        self.interval = interval
        self.started = time.time()
        self._lock = threading.Lock()
        self._pid = 0
        self._heartbeat: registry.Heartbeat | None = None
        self._bootstrap: AdminBootstrap | None = None
        self._purger = DrivePurger(portal, interval=interval)
        self._sweeper: TrashSweeper | None = None

    def ensure_running(self) -> None:
        """Start the threads unless they already run in this process (cheap; called per request)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits this object but not its threads.
            self._pid = os.getpid()
            self._sweeper = TrashSweeper(self.portal).start()
            if self.portal.config.admin_password is not None:
                self._bootstrap = AdminBootstrap(self.portal, interval=self.interval).start()
            if self.portal.config.addr:
                self._heartbeat = registry.Heartbeat(
                    self.portal.client(), kind="frontend", name=self.portal.config.frontend,
                    addr=self.portal.config.addr, info=self.info,
                    interval=self.interval).start()

    def info(self) -> dict[str, Any]:
        """What the registry shows about this frontend, refreshed at each beat."""
        return {"pid": os.getpid(), "load": self.portal.load.total(), "started": self.started}

    def purge_later(self, user: str) -> None:
        """Finish ``user``'s drive clean-up in this process's background thread."""
        with self._lock:
            purger = self._purger
        purger.add(user)

    def stop(self) -> None:
        """Stop the threads (tests); a worker's daemon threads simply die with it."""
        with self._lock:
            loops = (self._heartbeat, self._bootstrap, self._purger, self._sweeper)
            self._heartbeat = self._bootstrap = self._sweeper = None
            self._purger = DrivePurger(self.portal, interval=self.interval)  # for a later start
            self._pid = 0
        for loop in loops:
            if loop is not None:
                loop.stop()


class AdminBootstrap(BackgroundLoop):
    """Creates the first admin account, retrying every ``interval`` until the store takes it."""

    def __init__(self, portal: Portal, *, interval: float) -> None:
        super().__init__("portal-admin-bootstrap", interval)
        self.portal = portal

    def step(self) -> None:
        try:
            bootstrap_admin(self.portal)
        except Refused as exc:  # a name or password the rules refuse: retrying is no use
            log.error("the admin account cannot be created: %s: %s", type(exc).__name__, exc)
        except RaftKVError as exc:  # the store is still electing its leaders, say
            log.warning("creating the admin account: %s: %s; retrying", type(exc).__name__, exc)
            return
        except Exception:  # noqa: BLE001 - a bug: retrying is no use either
            log.exception("creating the admin account failed")
        self.stop()  # done, one way or the other


class DrivePurger(BackgroundLoop):
    """Finishes the drive clean-ups handed to it, one user at a time; idle when there are none."""

    def __init__(self, portal: Portal, *, interval: float) -> None:
        super().__init__("portal-drive-purge", interval)
        self.portal = portal
        self._lock = threading.Lock()
        self._users: set[str] = set()

    def add(self, user: str) -> None:
        with self._lock:
            self._users.add(user)
        self.start()  # once per process
        self.wake()

    def step(self) -> float | None:
        with self._lock:
            if not self._users:
                return UNTIL_WOKEN
            user = self._users.pop()
        try:
            drive.purge(self.portal.client(), user)
        except RaftKVError as exc:
            log.warning("drive clean-up of %s: %s: %s; retrying", user, type(exc).__name__, exc)
            with self._lock:
                self._users.add(user)
            return None  # the next try after the interval
        return 0.0  # the next user at once


class TrashSweeper(BackgroundLoop):
    """Deletes for good the mail moved to Trash more than 30 days ago
    (:func:`shards.model.mail.expire_trash`) and the drive's items trashed as long ago
    (:func:`shards.model.drive.sweep`), walking every account; on the way, it
    indexes a little more of a mailbox stored before the search index
    (:func:`shards.model.mail.backfill_index`).

    There is no list of users with a Trash: accounts are rows ``user/<name>`` on every
    shard.  Each step reads at most :data:`USERS_PER_STEP` of them from one shard
    (one ``scan``) and gives each mailbox one bounded pass (a read of its oldest Trash
    records, and one expunge of those due); the walk goes on from there at the next
    step, shard after shard, and starts again when it has been round.  So the work per
    step is bounded whatever the cluster's size, and a mailbox is visited every
    (accounts / USERS_PER_STEP) * interval seconds: with 100,000 accounts and one step
    a minute, about every 33 hours: well within a day of the 30 days.  Every frontend
    process runs one; two sweeping the same mailbox is harmless (the expunge is
    conditioned on the records it read), only duplicated work.
    """

    USERS_PER_STEP = 50
    DRIVE_PURGE_SECONDS = 1.0  # clean-up after the drive's sweep, per user and visit
    BACKFILLS_PER_VISIT = 3  # calls of the search index's backfill per mailbox and visit
    INTERVAL = 60.0
    _ACCOUNTS = accounts.account_row("")  # "user/"

    def __init__(self, portal: Portal, *, interval: float = INTERVAL) -> None:
        super().__init__("portal-trash-sweep", interval, first_delay=interval)
        self.portal = portal
        self.shard = 0
        self.after = self._start()
        self.swept = 0  # mailboxes given a pass
        self.last_step: list[str] = []  # the users of the last step's (tests)
        self.clock = time.time  # what "now" is to the 30 days (tests move it on)

    def sweep_drive(self, client: Any, user: str) -> None:
        """The drive's Trash: at most :data:`shards.model.drive.trash.SWEEP_PER_VISIT`
        items trashed 30 days ago go for good, then a bounded bit of the clean-up they
        (or an earlier visit, or a crashed request) left (the rest at the next visit), and
        the WebDAV properties of items no longer in the drive."""
        deadline = time.monotonic() + self.DRIVE_PURGE_SECONDS
        if drive.sweep(client, user, now=self.clock()) or drive.pending(client, user):
            drive.purge(client, user, deadline=deadline)
        # WebDAV dead properties stay with a trashed item (a restore brings them back);
        # those of items gone for good, by any way, go here (one read when there are none).
        after = davprops.purge_orphans(client, user)
        while after is not None and time.monotonic() < deadline:
            after = davprops.purge_orphans(client, user, after=after)

    @classmethod
    def _start(cls) -> str:
        # Just below every "user/..." row (a scan starts after its row).
        return cls._ACCOUNTS[:-1] + chr(ord(cls._ACCOUNTS[-1]) - 1) + "\U0010ffff"

    def step(self) -> float | None:
        client = self.portal.client()
        try:
            rows = client.scan(self.shard, self.after, limit=self.USERS_PER_STEP)
        except RaftKVError as exc:
            log.warning("trash sweep of shard %d: %s: %s; retrying", self.shard,
                        type(exc).__name__, exc)
            return None
        users = [row[len(self._ACCOUNTS):] for row, _cells in rows
                 if row.startswith(self._ACCOUNTS)]
        self.last_step = users
        for user in users:
            if self.stopping:
                return None
            try:
                mail.expire_trash(client, user, now=self.clock())
                self.sweep_drive(client, user)
                # Mail stored before the word index gets indexed a bounded bit per visit
                # (until then, search reads those messages' bodies, at most 200 a search).
                for _ in range(self.BACKFILLS_PER_VISIT):
                    if not mail.backfill_index(client, user):
                        break
                self.swept += 1
            except RaftKVError as exc:  # that mailbox's group is down, say: the next round
                log.warning("trash sweep of %s: %s: %s", user, type(exc).__name__, exc)
            except ValueError:  # a row name that is no mailbox's user
                continue
        if len(users) == len(rows) == self.USERS_PER_STEP:
            self.after = rows[-1][0]
        else:  # past this shard's accounts: the next shard, from its first
            self.shard = (self.shard + 1) % max(1, self.portal.config.cluster.shards)
            self.after = self._start()
        return None
