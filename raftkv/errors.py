"""One error hierarchy for the whole cloud, grouped by what the caller should do.

::

    RaftKVError
    ├── ConfigError              fix the configuration; at start-up, fail; never retry
    ├── UnavailableError         retry, after a pause, perhaps at another replica
    │   ├── NoLeader, NotLeader, ClientClosed, UploadExpired
    │   ├── Timeout
    │   │   └── OutcomeUnknown   a write: retry only with the same request id
    │   ├── ConfigurationPending a group is not where a reconfiguration step needs it yet
    │   └── Frozen               a backup holds the group's writes for a moment: send again
    ├── ConditionFailed          re-read, then retry
    ├── WrongShard               route elsewhere: refresh the shard map
    ├── Refused                  the request is wrong or not allowed: do not retry it as it is
    │   ├── TooLarge
    │   └── Busy                 another backup is being taken
    ├── OverLimit                over a limit: retry later (``retry_after`` when known)
    └── ProtocolError            a malformed message (a bug, or a stranger): do not retry
        └── AuthenticationFailed

The data model's errors (:mod:`shards.model.errors`) join these groups, so a
wrong password is a ``Refused`` and a full mailbox an ``OverLimit``.  Each
protocol maps the tree in one table: HTTP in :mod:`portal.errors`, SMTP in
:mod:`smtpd.replies` (``docs/architecture.md``, "Errors").  Errors cross the
store's wire by name (:meth:`RaftKVError.to_wire` / :func:`from_wire`), so a
server-side failure arrives at the client as the same class with the same
attributes.
"""

from __future__ import annotations

from typing import Any


class RaftKVError(Exception):
    """Base class of every error of the tree; an unknown one is worth a retry, not a traceback."""

    def to_wire(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": str(self)}


class ConfigError(RaftKVError):
    """A configuration cannot work (the cluster file, a setting, a requested shard
    configuration): fix it; at start-up, fail; never retry."""


class UnavailableError(RaftKVError):
    """Transient: the request may succeed if retried, perhaps elsewhere."""


class NoLeader(UnavailableError):
    """The group has no leader right now (election in progress, or no majority)."""


class NotLeader(UnavailableError):
    """This replica is not the leader; ``leader`` is a hint of who is (or None)."""

    def __init__(self, message: str = "not the leader", leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "leader": self.leader}


class Timeout(UnavailableError):
    """No answer in time.  For a read, simply retry."""


class OutcomeUnknown(Timeout):
    """A write timed out: it may or may not have been applied.

    Retrying it with the *same* request id is safe (exactly-once); issuing it
    anew with a new id is not.
    """


class ClientClosed(UnavailableError):
    """The client was closed while (or before) the call ran."""


class UploadExpired(UnavailableError):
    """A large value's upload intent ran out before its cell was written: upload it again.

    The intent is what keeps the garbage collector away from the chunks of an
    upload in progress; a client renews it while it works, so this happens only
    to an uploader that stalled (or was cut off) for longer than its lease.
    """


class ConfigurationPending(UnavailableError):
    """A step of a shard move that the group cannot take in its present state: it is
    not yet in the step's configuration, is still settling the one before, or has
    passed that step already.  Read the group's state again and retry; the groups'
    reconfigurers move on by themselves (``raftkv/ownership.py``).
    ``config_num`` is the group's configuration, when the refusal names it."""

    def __init__(self, message: str = "configuration pending",
                 config_num: int | None = None) -> None:
        super().__init__(message)
        self.config_num = config_num

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "config_num": self.config_num}


class ReadOnly(UnavailableError):
    """A write refused at once: the group it goes to has lost its majority, and its
    data is served read-only from stale reads until it recovers (``shards/readonly.py``;
    docs/store-promises.md, "Read-only while a group has lost its majority")."""


class Frozen(UnavailableError):
    """A write refused for a moment while a backup freezes the group (raftkv/freezing.py):
    it did not apply, and the client sends the same request again shortly."""


class WrongShard(RaftKVError):
    """The replica does not own the row's shard in its current configuration."""

    def __init__(self, message: str = "wrong shard", shard: int | None = None,
                 config_num: int | None = None) -> None:
        super().__init__(message)
        self.shard = shard
        self.config_num = config_num

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "shard": self.shard, "config_num": self.config_num}


class ConditionFailed(RaftKVError):
    """A condition did not hold: re-read, then retry.

    From the store, a CPUT's or a MUTATE_ROW's, and ``version`` is the cell's
    current one; from the data model, a read-modify-write that kept losing to
    others' changes (``version`` 0), so the person who asked is to retry.
    """

    def __init__(self, message: str = "condition failed", version: int = 0) -> None:
        super().__init__(message)
        self.version = version

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "version": self.version}


class Refused(RaftKVError):
    """The request is wrong or not allowed: retrying it as it is cannot help.

    Subclasses say why; a message meant for a person is a sentence they can act on.
    """


class TooLarge(Refused):
    """The request does not fit the size limits (entry cap, frame cap, row limits)."""


class Busy(Refused):
    """Another backup is being taken: one at a time."""


class OverLimit(RaftKVError):
    """Over a limit (a quota, a rate): retry later, or once room is made.

    ``retry_after`` is the wait in seconds when it is known, else None.
    """

    def __init__(self, message: str = "over a limit", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "retry_after": self.retry_after}


class ProtocolError(RaftKVError):
    """A malformed message, frame or handshake."""


class AuthenticationFailed(ProtocolError):
    """The peer does not know the cluster secret."""


WIRE_ERRORS: tuple[type[RaftKVError], ...] = (
    RaftKVError, ConfigError, UnavailableError, NoLeader, NotLeader, Timeout, OutcomeUnknown,
    ClientClosed, UploadExpired, ConfigurationPending, ReadOnly, Frozen, WrongShard, ConditionFailed,
    Refused, TooLarge, Busy, OverLimit, ProtocolError, AuthenticationFailed)
"""Every class of this module: the ones an answer may name."""

_BY_NAME: dict[str, type[RaftKVError]] = {cls.__name__: cls for cls in WIRE_ERRORS}


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def from_wire(payload: dict[str, Any]) -> RaftKVError:
    """Rebuild an error sent by :meth:`RaftKVError.to_wire`; unknown names become ProtocolError."""
    name = payload.get("error")
    message = str(payload.get("message", ""))
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        return ProtocolError(f"unknown error from server: {name!r}: {message}")
    if cls is NotLeader:
        leader = payload.get("leader")
        return NotLeader(message, leader=leader if isinstance(leader, str) else None)
    if cls is WrongShard:
        return WrongShard(message, shard=_optional_int(payload.get("shard")),
                          config_num=_optional_int(payload.get("config_num")))
    if cls is ConfigurationPending:
        return ConfigurationPending(message, config_num=_optional_int(payload.get("config_num")))
    if cls is ConditionFailed:
        return ConditionFailed(message, version=int(payload.get("version") or 0))
    if cls is OverLimit:
        wait = payload.get("retry_after")
        return OverLimit(message, retry_after=float(wait) if isinstance(
            wait, (int, float)) and not isinstance(wait, bool) else None)
    return cls(message)
