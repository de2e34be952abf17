"""The backup's cut, on stand-in groups: which refusals are tried again."""

from __future__ import annotations

from typing import Any

import pytest

from raftkv.errors import OverLimit, TooLarge
from shards import backup


class Group:
    """A group's backup calls: the freeze refused ``refusals`` times with ``error``."""

    def __init__(self, refusals: int, error: Exception) -> None:
        self.refusals, self.error = refusals, error
        self.freezes = self.thaws = 0

    def freeze(self, token: int, seconds: float) -> float:
        self.freezes += 1
        if self.freezes <= self.refusals:
            raise self.error
        return seconds

    def backup_open(self, token: int) -> dict[str, Any]:
        return {"offer": b"o", "addr": "127.0.0.1:1", "meta": {}}

    def thaw(self, token: int) -> bool:
        self.thaws += 1
        return True


class Cluster:
    def config_group(self) -> None:
        return None


def saved(group: Group, monkeypatch: pytest.MonkeyPatch, tmp_path) -> backup.Saved:
    monkeypatch.setattr(backup, "_groups", lambda client: {1: group})
    monkeypatch.setattr(backup, "RETRY_PAUSE", 0.0)
    monkeypatch.setattr(backup, "_write", lambda *args: backup.Saved(1, 0, 0, 0, 0.0, 0))
    monkeypatch.setattr(backup, "_close_all", lambda opened: None)
    return backup.save_backup(Cluster(), tmp_path / "b.backup")  # type: ignore[arg-type]


def test_a_freeze_refused_while_a_peer_has_not_said_its_format_is_tried_again(
        monkeypatch, tmp_path) -> None:
    # A replica that just reconnected has not said which Raft formats it speaks: the
    # group cannot write a freeze until it has (raftkv.formats); that passes.
    group = Group(2, OverLimit("the group writes Raft format 2 until every replica runs "
                               "code of format 5 or later (an upgrade in progress)"))
    done = saved(group, monkeypatch, tmp_path)
    assert done.attempts == 3 and group.freezes == 3
    assert group.thaws == 3, "every refused cut thawed what it froze"


def test_other_refusals_end_the_backup(monkeypatch, tmp_path) -> None:
    group = Group(1, TooLarge("no"))
    with pytest.raises(TooLarge):
        saved(group, monkeypatch, tmp_path)
    assert group.freezes == 1
