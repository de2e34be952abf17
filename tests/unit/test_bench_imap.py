"""bench.imap without servers: the messages it makes, Dovecot's private config, the table."""

from __future__ import annotations

import email
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import click
import pytest

from bench import imap, imap_servers
from bench.imap import Fill, Summary, aim_line, message, parse_only, summarize, table
from bench.imap_servers import MailOwner, Server, dovecot_config, tree_cpu_seconds


def test_messages_are_the_same_for_the_same_seed_and_differ_between_seeds() -> None:
    assert message(19, 7) == message(19, 7)
    assert message(19, 7)[0] != message(20, 7)[0]
    assert message(19, 7)[0] != message(19, 8)[0]


def test_messages_are_3_to_20_kb_crlf_mail_with_the_fetched_headers() -> None:
    made = [message(19, i) for i in range(400)]
    sizes = [len(raw) for raw, _date, _seen in made]
    assert min(sizes) >= imap.MIN_SIZE and max(sizes) < imap.MAX_SIZE + 200
    assert 5_000 < statistics.median(sizes) < 11_000  # log-uniform: most are small
    ids = set()
    for raw, date, _seen in made:
        assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
        parsed = email.message_from_bytes(raw)
        for name in ("From", "To", "Subject", "Date", "Message-ID"):
            assert parsed[name], name
        assert email.utils.parsedate_to_datetime(parsed["Date"]) == date
        ids.add(parsed["Message-ID"])
    assert len(ids) == len(made)
    seen = sum(s for _raw, _date, s in made)
    assert 0.5 * len(made) < seen < 0.8 * len(made)


OWNERS = [MailOwner(65534, 65534, "dovecot"), MailOwner(1000, 1000, "someone")]


@pytest.mark.parametrize("owner", OWNERS)
def test_dovecots_config_keeps_every_path_under_its_directory_and_listens_on_loopback(
        tmp_path: Path, owner: MailOwner) -> None:
    text = dovecot_config(tmp_path, 21234, owner)
    paths = re.findall(r"(?<![\w~])/[\w./-]+", text)
    assert paths and all(Path(p).is_relative_to(tmp_path) for p in paths), paths
    for setting in ("base_dir", "state_dir", "log_path"):
        assert re.search(rf"^{setting} = {re.escape(str(tmp_path))}/", text, re.M), setting
    assert re.findall(r"address = (\S+)", text) == ["127.0.0.1"]
    assert "listen = 127.0.0.1\n" in text and "port = 21234" in text
    assert "ssl = no" in text and "port = 0" in text  # no imaps listener
    login = "dovenull" if owner.internal_user == "dovecot" else owner.internal_user
    assert f"default_login_user = {login}\n" in text
    assert f"default_internal_user = {owner.internal_user}\n" in text


def test_selects_exists_count_is_read_whatever_imaplib_hands_over() -> None:
    assert imap._exists([b"10000"]) == 10_000
    assert imap._exists([b"3", b"5"]) == 5  # EXISTS said twice: the later one holds
    assert imap._exists([None]) == imap._exists([]) == imap._exists([b"x"]) == -1


def test_only_names_servers_in_the_tables_order() -> None:
    assert parse_only(None, None, "ours, dovecot") == ["dovecot", "ours"]  # type: ignore[arg-type]
    for bad in ("", "dovecot,postfix", " , "):
        with pytest.raises(click.BadParameter):
            parse_only(None, None, bad)  # type: ignore[arg-type]


def server(key: str) -> Server:
    return Server(key, f"{key} label", "127.0.0.1", 1, "bench", "pw", 1)


def test_medians_ratios_and_problems_in_the_table() -> None:
    servers = [server("dovecot"), server("pymap-dict"), server("ours")]
    fills = {"dovecot": Fill(100, 0.5), "pymap-dict": Fill(100, 1.0),
             "ours": Fill(40, 2.0, "APPEND failed after 40 messages: boom")}
    runs = [{"server": "dovecot", "select_s": s, "fetch_s": f, "fetch_cpu_s": 0.1,
             "server_cpu_s": c, "wrong": 0}
            for s, f, c in ((0.001, 0.2, 0.01), (0.003, 0.4, 0.05), (0.002, 0.3, 0.02))]
    runs += [{"server": "pymap-dict", "select_s": 0.004, "fetch_s": 0.9, "fetch_cpu_s": 0.2,
              "server_cpu_s": 0.7, "wrong": 1}]
    summary = summarize(servers, fills, runs, {"ours": "SELECT or FETCH failed: x"})
    assert summary["dovecot"] == Summary("dovecot label", 200, 2.0, 0.3, 0.1, 0.02, [])
    assert summary["pymap-dict"].problems == ["1 answer(s) with the wrong number of messages"]
    assert summary["ours"].append_per_s is None and summary["ours"].fetch_s is None
    late = summarize([server("dovecot")], {"dovecot": Fill(1, 9.0, "stopped")}, [],
                     {"dovecot": "stopped"})
    assert late["dovecot"].problems == ["stopped"] and late["dovecot"].append_per_s is None
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in
            table(summary).splitlines()[2:]}
    assert rows["dovecot label"][1:8] == ["200", "1.00", "2.0", "1.00", "0.300", "1.00",
                                          "0.10, 0.02"]
    assert rows["pymap-dict label"][1:8] == ["100", "0.50", "4.0", "2.00", "0.900", "3.00",
                                             "0.20, 0.70"]
    assert rows["ours label"][1:8] == ["–"] * 6 + ["–, –"]
    assert rows["ours label"][8] == ("APPEND failed after 40 messages: boom; "
                                     "SELECT or FETCH failed: x |")


def test_without_dovecot_there_are_numbers_but_no_ratios() -> None:
    summary = {"pymap-dict": Summary("pymap", 10.0, 1.0, 0.5, 0.1, 0.3)}
    row = table(summary).splitlines()[2].split(" | ")
    assert row[1:8] == ["10", "–", "1.0", "–", "0.500", "–", "0.10, 0.30"]


def test_the_aim_is_compared_for_our_fetch_only() -> None:
    ref = Summary("dovecot", fetch_s=1.0)
    assert "2.50×, met." in aim_line({"dovecot": ref, "ours": Summary("o", fetch_s=2.5)}, 10_000)
    missed = aim_line({"dovecot": ref, "ours": Summary("o", fetch_s=3.5)}, 50)
    assert "3.50×, **missed** (the aim is for 10,000 messages; this run had 50)" in missed
    assert aim_line({"dovecot": ref}, 10_000).endswith("not measured.")


def test_a_server_that_is_not_there_is_skipped_with_the_reason(monkeypatch) -> None:
    monkeypatch.setattr(imap, "dovecot_binary", lambda: None)
    monkeypatch.setattr(imap, "pymap_installed", lambda: False)
    monkeypatch.setattr(imap, "imapd_importable", lambda: False)
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    with ExitStack() as stack:
        assert imap.start_servers(stack, Path("/nonexistent"), list(imap.SERVERS),
                                  skipped, failed) == []
    assert failed == {}
    assert skipped == {"dovecot": imap_servers.NO_DOVECOT, "pymap-dict": imap_servers.NO_PYMAP,
                       "ours": imap_servers.NO_IMAPD}
    assert "apt-get install dovecot-imapd" in skipped["dovecot"]



def test_a_process_trees_cpu_counts_its_children_and_their_children() -> None:
    burn = "sum(range(20_000_000)); print('burnt', flush=True); import time; time.sleep(60)"
    # Its own session, so that one killpg stops the grandchild too.
    with subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                           f"subprocess.run([sys.executable, '-c', {burn!r}])"],
                          stdout=subprocess.PIPE, text=True, start_new_session=True) as child:
        try:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], 60)
            assert ready and child.stdout.readline() == "burnt\n"
            grandchild_cpu = tree_cpu_seconds(child.pid)
            assert grandchild_cpu >= 0.1  # the grandchild's burn, under the child
            assert tree_cpu_seconds(os.getpid()) >= grandchild_cpu + time.process_time() - 0.05
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
    assert tree_cpu_seconds(2**22 + 1) == 0  # no such process
