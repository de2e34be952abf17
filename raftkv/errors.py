"""One error hierarchy for the whole store, grouped by what the caller should do.

Every layer above raftkv (shards, portal, smtpd, balancer) catches these and maps
them to its own protocol in one place.  Errors cross the wire by name
(:func:`to_wire` / :func:`from_wire`), so a server-side failure arrives at the
client as the same class with the same attributes.
"""

from __future__ import annotations

from typing import Any


class RaftKVError(Exception):
    """Base class of every error raised by raftkv and shards."""

    def to_wire(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": str(self)}


class ConfigError(RaftKVError):
    """The configuration is invalid: fail at start-up, do not retry."""


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


class WrongShard(RaftKVError):
    """The replica does not own the row's shard in its current configuration."""

    def __init__(self, message: str = "wrong shard", shard: int | None = None,
                 config_num: int | None = None) -> None:
        super().__init__(message)
        self.shard = shard
        self.config_num = config_num

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "shard": self.shard, "config_num": self.config_num}


class KeyNotFound(RaftKVError, KeyError):
    """The cell does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "key not found"


class ConditionFailed(RaftKVError):
    """A CPUT or MUTATE_ROW condition did not hold; ``version`` is the cell's current one."""

    def __init__(self, message: str = "condition failed", version: int = 0) -> None:
        super().__init__(message)
        self.version = version

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "version": self.version}


class TooLarge(RaftKVError):
    """The request does not fit the size limits (entry cap, frame cap, row limits)."""


class ProtocolError(RaftKVError):
    """A malformed message, frame or handshake."""


class AuthenticationFailed(ProtocolError):
    """The peer does not know the cluster secret."""


_BY_NAME: dict[str, type[RaftKVError]] = {
    cls.__name__: cls
    for cls in (RaftKVError, ConfigError, UnavailableError, NoLeader, NotLeader, Timeout,
                OutcomeUnknown, ClientClosed, UploadExpired, WrongShard, KeyNotFound,
                ConditionFailed, TooLarge, ProtocolError, AuthenticationFailed)
}


def from_wire(payload: dict[str, Any]) -> RaftKVError:
    """Rebuild an error sent by :meth:`RaftKVError.to_wire`; unknown names become ProtocolError."""
    name = payload.get("error")
    message = str(payload.get("message", ""))
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        return ProtocolError(f"unknown error from server: {name!r}: {message}")
    if cls is NotLeader:
        return NotLeader(message, leader=payload.get("leader"))
    if cls is WrongShard:
        return WrongShard(message, shard=payload.get("shard"), config_num=payload.get("config_num"))
    if cls is ConditionFailed:
        return ConditionFailed(message, version=int(payload.get("version") or 0))
    return cls(message)
