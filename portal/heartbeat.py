"""The frontend's background work: registry heartbeat, the first admin account, drive clean-up.

Each worker process registers the frontend in the node registry every couple
of seconds (:class:`shards.model.registry.Heartbeat`), so the admin console
and the balancer see it, and see it go when it dies.  A second short-lived
thread creates the first admin account from ``RAFTCLOUD_ADMIN_PASSWORD_FILE``:
in the background, because the store may still be electing leaders when
gunicorn boots, and a worker blocked on it would miss its own heartbeat to
the gunicorn arbiter and be killed.  A third thread, started when first
needed, finishes the clean-up of deleted folder trees too big to finish
within the request that deleted them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from raftkv.errors import RaftKVError
from shards.model import accounts, drive, registry

if TYPE_CHECKING:
    from .app import Portal

log = logging.getLogger("portal.heartbeat")


def bootstrap_admin(portal: Portal) -> None:
    """Create the cluster's admin account with the configured password, unless it exists.

    Safe to run from every frontend at once: creation is a CPUT on an absent
    cell, so exactly one wins and the others see :class:`accounts.UserExists`.
    """
    password = portal.config.admin_password
    if password is None:
        return
    try:
        accounts.create_user(portal.client(), portal.config.cluster.admin_user, password,
                             admin=True)
        log.info("created the admin account %r", portal.config.cluster.admin_user)
    except accounts.UserExists:
        pass


class Background:
    """The background threads of one process; started again in a forked child."""

    def __init__(self, portal: Portal, *, interval: float) -> None:
        self.portal = portal
        self.interval = interval
        self.started = time.time()
        self._lock = threading.Lock()
        self._pid = 0
        self._stop = threading.Event()
        self._heartbeat: registry.Heartbeat | None = None
        self._purges: set[str] = set()
        self._purger: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Start the threads unless they already run in this process (cheap; called per request)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits this object but not its threads.
            self._pid = os.getpid()
            self._stop = threading.Event()
            if self.portal.config.admin_password is not None:
                threading.Thread(target=self._bootstrap, name="portal-admin-bootstrap",
                                 daemon=True).start()
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
            self._purges.add(user)
            if self._purger is None or not self._purger.is_alive():
                self._purger = threading.Thread(target=self._purge, name="portal-drive-purge",
                                                daemon=True)
                self._purger.start()

    def _purge(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self._purges:
                    self._purger = None
                    return
                user = self._purges.pop()
            try:
                drive.purge(self.portal.client(), user)
            except RaftKVError as exc:
                log.warning("drive clean-up of %s: %s: %s; retrying", user,
                            type(exc).__name__, exc)
                with self._lock:
                    self._purges.add(user)
                self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop the threads (tests); a worker's daemon threads simply die with it."""
        self._stop.set()
        if self._heartbeat is not None and self._pid == os.getpid():
            self._heartbeat.stop()
        self._heartbeat, self._pid = None, 0

    def _bootstrap(self) -> None:
        while not self._stop.is_set():
            try:
                bootstrap_admin(self.portal)
                return
            except RaftKVError as exc:
                log.warning("creating the admin account: %s: %s; retrying",
                            type(exc).__name__, exc)
            self._stop.wait(self.interval)
