"""bench.seed on a real group: what it writes reads back through the data model as if each
message had been delivered and each file uploaded; and py-spy on a real process."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import profile
from bench.seed import LINK_BATCH, SeedTimeout, fill_folder, fill_inbox
from shards.model import accounts, drive, mailbox
from tests._portal import unique
from tests.cluster import KVCluster

pytestmark = pytest.mark.cluster


def test_a_filled_folder_and_inbox_read_back_as_uploads_and_deliveries(
        kv_cluster: KVCluster) -> None:
    user = unique("seed")
    files = 2 * LINK_BATCH + 7  # several batches, the last one short
    with kv_cluster.client() as client:
        accounts.create_user(client, user, "seed-password-1")
        deadline = time.monotonic() + 60
        ids = fill_inbox(client, user, f"{user}@raftcloud.test", 12, deadline)
        folder_id = fill_folder(client, user, "many", files, deadline)

        messages = mailbox.list_messages(client, user)
        assert sorted(m.id for m in messages) == sorted(ids) and len(set(ids)) == 12
        raw = mailbox.get_message(client, user, ids[3])
        assert raw is not None and b"Subject: " in raw and b"(3)" in raw
        assert mailbox.usage(client, user) == sum(m.size for m in messages)

        listing = drive.list_folder(client, user, folder_id)
        assert sorted(i.name for i in listing.items) == [f"file {i:05}.txt" for i in range(files)]
        assert listing.version > 0
        sizes = {i.name: i.size for i in listing.items}
        # Every name leads to its bytes, the quota counts them all, and the path resolves.
        for name in ("file 00000.txt", f"file {files - 1:05}.txt"):
            item = next(i for i in listing.items if i.name == name)
            found, size, chunks = drive.open_file(client, user, item.id)
            content = b"".join(chunks)
            assert (found.parent, size, len(content)) == (folder_id, sizes[name], sizes[name])
            assert content.startswith(b"file ")
        assert drive.usage(client, user) == sum(sizes.values())
        assert [f.name for f in drive.folder_path(client, user, folder_id)] == ["", "many"]
        # The quota cell's version chain is intact: an ordinary upload still links.
        drive.store_file(client, user, folder_id, "after.txt", io.BytesIO(b"later"),
                         quota=drive.DEFAULT_QUOTA, size=5)
        assert drive.usage(client, user) == sum(sizes.values()) + 5


def test_seeding_stops_at_its_deadline(kv_cluster: KVCluster) -> None:
    user = unique("seed")
    with kv_cluster.client() as client:
        accounts.create_user(client, user, "seed-password-1")
        with pytest.raises(SeedTimeout):
            fill_inbox(client, user, f"{user}@raftcloud.test", 10_000, time.monotonic() + 0.5)
        assert 0 < len(mailbox.list_messages(client, user)) < 10_000
        with pytest.raises(SeedTimeout):
            fill_folder(client, user, "late", 10, time.monotonic() - 1)


BUSY = """
import time
def spin_in_python():
    end = time.monotonic() + 60
    while time.monotonic() < end:
        sum(range(1000))
spin_in_python()
"""


def test_py_spy_records_a_flame_graph_raw_stacks_and_their_summary(tmp_path: Path) -> None:
    binary = profile.py_spy_binary()
    if binary is None:
        pytest.skip(profile.INSTALL_HINT)
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.5)  # py-spy needs the interpreter started to find its version
        recorded = profile.profile(binary, child.pid, tmp_path / "artifacts", "busy", 1, "busy")
    finally:
        child.kill()
        child.wait(10)
    assert recorded.flamegraph.read_text().lstrip().startswith("<?xml")
    assert "spin_in_python" in recorded.flamegraph.read_text()
    assert recorded.summary.read_text() == recorded.text
    assert f"| thread ({child.pid})" in recorded.text  # the main thread's native id
    assert "`spin_in_python (<string>)`" in recorded.text
