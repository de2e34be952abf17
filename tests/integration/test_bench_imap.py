"""bench.imap end to end on a small folder: Dovecot (private, from its own config) and pymap's
dict backend started, filled, selected and fetched through imaplib; nothing timed is checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.imap_servers import dovecot_binary, pymap_installed

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
# Where Debian's Dovecot keeps its state and sockets: a private instance writes neither.
SYSTEM_PATHS = (Path("/var/lib/dovecot"), Path("/run/dovecot"), Path("/var/run/dovecot"))


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.imap", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def listing(path: Path) -> list[tuple[str, float]] | None:
    if not path.exists():
        return None
    return sorted((p.name, p.stat().st_mtime) for p in path.iterdir())


@pytest.fixture
def servers() -> str:
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    return "dovecot,pymap-dict" if pymap_installed() else "dovecot"


def test_the_bench_fills_selects_and_fetches_every_message_on_each_server(servers: str) -> None:
    before = {p: listing(p) for p in SYSTEM_PATHS}
    run = bench("--messages", "50", "--repeats", "1", "--only", servers, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    keys = servers.split(",")
    assert out["failed"] == {} and out["skipped"] == {}
    assert 50 * 3_000 <= out["bytes"] <= 50 * 20_200
    for key in keys:
        assert out["fill"][key]["appended"] == 50 and out["fill"][key]["error"] is None
        summary = out["summary"][key]
        assert summary["problems"] == [] and summary["append_per_s"] > 0
        assert summary["select_ms"] > 0 and summary["fetch_s"] > 0
        assert summary["server_cpu_s"] >= 0
    assert sorted(r["server"] for r in out["runs"]) == sorted(keys)
    for r in out["runs"]:
        assert (r["exists"], r["fetched"], r["wrong"]) == (50, 50, 0), r
    assert {p: listing(p) for p in SYSTEM_PATHS} == before


def test_the_table_names_each_server_and_a_server_past_its_time_is_reported(
        servers: str) -> None:
    run = bench("--messages", "20", "--repeats", "2", "--only", servers)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| server | APPEND msg/s | × Dovecot |")
    assert rows[1].startswith("| Dovecot 2.") and rows[1].endswith("| none |")
    assert "| 1.00 |" in rows[1]
    assert len(rows) == 1 + len(servers.split(","))  # the line under the head is "|---|..."
    assert "20 messages" in run.stdout and "median of 2 run(s)" in run.stdout
    assert "not measured" in run.stdout  # ours was not asked for

    # No time to fill: stopped after the first APPEND, and the exit status says so.
    late = bench("--messages", "20", "--repeats", "1", "--only", "dovecot",
                 "--fill-time-limit", "0.0001", "--json")
    assert late.returncode == 1, late.stderr[-3000:]
    out = json.loads(late.stdout)
    assert out["fill"]["dovecot"]["appended"] == 1
    assert out["failed"]["dovecot"] == ("stopped after 1 APPEND(s): past "
                                        "--fill-time-limit (0.0001 s)")
    assert out["runs"] == [] and out["summary"]["dovecot"]["fetch_s"] is None
