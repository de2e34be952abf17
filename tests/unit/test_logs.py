"""The shared log setup (raftkv/logs.py) and the launcher's rotating child logs (deploy/logfiles.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.logfiles import ChildLog, LogSettings
from raftkv.errors import ConfigError
from raftkv.logs import LOG_FORMAT_ENV, setup_logging

LINE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|ERROR) replica g1a test\.logs: "


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_text_lines_carry_time_level_process_and_stay_one_line() -> None:
    out = io.StringIO()
    setup_logging("replica g1a", stream=out, fmt="text")
    log = logging.getLogger("test.logs")
    log.info("two\nlines")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(re.match(LINE, line) for line in lines), lines
    assert lines[0].endswith("two\\nlines")
    assert "ValueError: boom" in lines[1] and "Traceback" in lines[1]


@pytest.mark.usefixtures("restore_root")
def test_json_when_the_environment_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    out = io.StringIO()
    setup_logging("smtpd", stream=out)
    logging.getLogger("test.logs").warning("queue %d\nlong", 3)
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["level"] == "WARNING" and event["process"] == "smtpd"
    assert event["logger"] == "test.logs" and event["message"] == "queue 3\nlong"
    assert event["time"].endswith("Z")


@pytest.mark.usefixtures("restore_root")
def test_setting_up_twice_logs_once_and_masks_password_shapes() -> None:
    out = io.StringIO()
    setup_logging("portal web1", stream=out, fmt="text")
    setup_logging("portal web1", stream=out, fmt="text")
    logging.getLogger("x").info("login password=hunter2 token: abc&next=1")
    (line,) = out.getvalue().splitlines()
    assert "hunter2" not in line and "abc" not in line
    assert "password=<redacted> token: <redacted>&next=1" in line


def test_log_settings_refuse_unknown_keys_and_bad_values() -> None:
    assert LogSettings.of({}) == LogSettings()
    assert LogSettings.of({"format": "json", "backups": 2}).backups == 2
    for bad in ({"fmt": "json"}, {"format": "xml"}, {"max_bytes": 0}, {"backups": True}):
        with pytest.raises(ConfigError):
            LogSettings.of(bad)


def test_child_output_is_copied_and_rotated_within_bounds(tmp_path: Path) -> None:
    """A child writing ~60 KB through a 10 KB, 3-backup log: four files at most, each bounded,
    the newest lines kept in order, every file 0600."""
    child_log = ChildLog(tmp_path / "c1.log", LogSettings(max_bytes=10_000, backups=3))
    script = "import sys\nfor i in range(1000): print(f'line {i:04d} ' + 'x' * 50)\n" \
             "print('no newline at the end', end='')"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    child_log.follow(child, "c1")
    assert child.wait(30) == 0
    child_log.close(timeout=10)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["c1.log", "c1.log.1", "c1.log.2", "c1.log.3"]
    for f in files:
        assert f.stat().st_size <= 10_000
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    kept = "".join((tmp_path / n).read_text() for n in
                   ("c1.log.3", "c1.log.2", "c1.log.1", "c1.log")).splitlines()
    assert kept[-1] == "no newline at the end"
    numbers = [int(line.split()[1]) for line in kept[:-1]]
    assert numbers == list(range(numbers[0], 1000)) and numbers[0] > 0
