"""bench.dav's parts that need no server: sizes, the files, the tree digest, Apache's config,
rclone's log, the table and the aims."""

from __future__ import annotations

import json

import click
import pytest

from bench.dav import (
    Summary,
    _errors,
    _last_stats,
    aim_lines,
    make_large,
    make_small,
    parse_size,
    ratio,
    summarize,
    table,
    tree_of,
)
from bench.dav_servers import Server, apache_config, htpasswd_line


@pytest.mark.parametrize(("text", "size"), [("4096", 4096), ("1GiB", 1 << 30), ("64MiB", 64 << 20),
                                            ("1g", 1 << 30), ("8 KiB", 8192), ("3k", 3072)])
def test_sizes_in_binary_units(text, size):
    assert parse_size(None, None, text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1TB", "1.5GiB", "GiB"])
def test_a_bad_size_is_refused(text):
    with pytest.raises(click.BadParameter):
        parse_size(None, None, text)


def test_the_same_seed_makes_the_same_files_nested(tmp_path):
    make_small(tmp_path / "a", 60, seed=3)
    make_small(tmp_path / "b", 60, seed=3)
    make_small(tmp_path / "c", 60, seed=4)
    a = tree_of(tmp_path / "a")
    assert a == tree_of(tmp_path / "b") and a.digest != tree_of(tmp_path / "c").digest
    assert a.files == 60 and 60 * 1024 <= a.size <= 60 * 8192
    sizes = {p.stat().st_size for p in (tmp_path / "a").rglob("*.bin")}
    assert len(sizes) > 30   # not one size for all
    assert {p.parent.relative_to(tmp_path / "a").as_posix().count("/")
            for p in (tmp_path / "a").rglob("*.bin")} == {1}   # two folders deep
    make_large(tmp_path / "big" / "x.bin", (1 << 20) + 5, seed=3)
    assert (tmp_path / "big" / "x.bin").stat().st_size == (1 << 20) + 5


def test_the_digest_sees_a_changed_byte_a_renamed_file_and_a_missing_one(tmp_path):
    make_small(tmp_path, 10, seed=1)
    before = tree_of(tmp_path)
    path = next(tmp_path.rglob("*.bin"))
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert tree_of(tmp_path).digest != before.digest
    path.write_bytes(data)
    assert tree_of(tmp_path) == before
    renamed = path.rename(path.with_name("other.bin"))
    assert tree_of(tmp_path).digest != before.digest
    renamed.unlink()
    assert tree_of(tmp_path).files == 9


def test_apaches_config_keeps_to_its_directory_and_loopback(tmp_path):
    conf = apache_config(tmp_path, 18080, 5 << 20, ("nobody", "nogroup"))
    assert "Listen 127.0.0.1:18080\n" in conf and "LimitRequestBody 5242880\n" in conf
    assert "User nobody\nGroup nogroup\n" in conf
    for line in conf.splitlines():
        for word in line.split():
            path = word.strip("<>").removeprefix("file:")  # Mutex file:DIR
            if path.startswith("/") and path not in ("/", "/Directory") and not path.startswith(
                    "/usr/lib/apache2/modules/"):
                assert path.startswith(str(tmp_path)), line
    assert "Include" not in conf   # nothing of /etc/apache2
    assert "\nUser " not in apache_config(tmp_path, 1, 1, None)


def test_the_password_file_line_is_apaches_sha_form():
    # htpasswd -bs bench secret
    assert htpasswd_line("bench", "secret") == "bench:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"


def test_rclones_last_stats_and_its_errors_are_read_from_its_json_log():
    log = "\n".join([
        json.dumps({"level": "info", "msg": "x", "stats": {"transfers": 3, "errors": 0}}),
        "not json at all",
        json.dumps({"level": "error", "msg": "Failed to copy: 413", "object": "a/b.bin"}),
        json.dumps({"level": "info", "msg": "y", "stats": {"transfers": 4, "errors": 1}}),
        json.dumps({"level": "error", "msg": "Attempt 1/1 failed with 1 errors"}),
    ])
    assert _last_stats(log) == {"transfers": 4, "errors": 1}
    assert _errors(log) == "a/b.bin: Failed to copy: 413"
    assert _errors("Failed to create file system\nusage") == "Failed to create file system; usage"
    page = ("<!DOCTYPE HTML PUBLIC '-//W3C//DTD HTML 4.01//EN'>\n<html><head>\n<title>409 "
            "Conflict</title>\n</head><body>\n<h1>409 Conflict</h1>\n<p>Changed | at once.</p>"
            "\n</body></html>: 409 Conflict")
    assert _errors(json.dumps({"level": "error", "object": "f.bin", "msg": page})) == (
        "f.bin: 409 Conflict Changed / at once. : 409 Conflict")
    assert _last_stats("") == {}


def _runs(key: str, seconds: list[float], workload: str = "small-up") -> list[dict]:
    return [{"run": i, "server": key, "workload": workload, "seconds": s, "files": 1000,
             "bytes": 4_000_000, "client_cpu_s": 1.0, "server_cpu_s": 2.0}
            for i, s in enumerate(seconds)]


def test_medians_ratios_and_the_table():
    servers = [Server("apache", "Apache", "u", "b", "p", 1), Server("ours", "Ours", "u", "b", "p", 2)]
    runs = _runs("apache", [10, 11, 30]) + _runs("ours", [20, 44, 25])
    summary = summarize(servers, runs, ("small-up", "large-up"),
                        {"ours": {"large-up": "run 1: rclone copy exited 1: 413"}})
    assert summary["apache"]["small-up"].seconds == 11
    assert summary["ours"]["small-up"].files_per_s == pytest.approx(40)
    assert ratio(summary, "ours", "small-up") == pytest.approx(0.44)
    assert ratio(summary, "ours", "large-up") is None
    rows = table(summary).splitlines()
    assert rows[0].startswith("| server | workload | median s | files/s | MB/s | × Apache")
    assert rows[2] == "| Apache | small-up | 11.00 | 90.9 | 0.4 | 1.00 | 1.0, 2.0 | none |"
    assert rows[4] == "| Ours | small-up | 25.00 | 40.0 | 0.2 | 0.44 | 1.0, 2.0 | none |"
    assert rows[5].endswith("| – | – | – | – | –, – | run 1: rclone copy exited 1: 413 |")


def test_the_aims_say_met_missed_or_not_measured():
    def row(seconds: float) -> Summary:
        return Summary("x", "w", seconds)
    summary = {"apache": {w: row(10) for w in ("small-up", "small-down", "large-up",
                                               "large-down")},
               "ours": {"small-up": row(20), "small-down": row(40), "large-up": row(15)}}
    large, small = aim_lines(summary, 1000, 1 << 30)
    assert large.endswith("not measured.")
    assert small == ("Aim (issue 20): small files at ≥ 0.3× Apache's files/s: up 0.50×, "
                     "down 0.25×, **missed**.")
    summary["ours"]["large-down"] = Summary("x", "w", 12, problems=["run 2: failed"])
    large, small = aim_lines(summary, 50, 1 << 20)
    assert large.startswith("Aim (issue 20): large files at ≥ 0.5× Apache's MB/s: up 0.67×, "
                            "down 0.83×, met (the aim is for 1 GiB; this run: 1,048,576 bytes) "
                            "(some rounds failed: see problems).")
    assert small.endswith("(the aim is for 1,000 files; this run: 50 files).")

