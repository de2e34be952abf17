"""Debian's rclone keeps a tree of 500 files in nested folders in sync with /dav/ of a real
frontend (gunicorn on the shared 3-replica store), signed in with an app password: up, local
edits, additions, deletions and renames, up again, and back down to a fresh folder."""

from __future__ import annotations

import importlib.util
import random
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.dav import Rclone, tree_of
from bench.dav_servers import Server
from shards.model import accounts

from .._frontend import running_frontend
from .._portal import app_password

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("rclone") is None,
                       reason="Debian's rclone is not installed (apt-get install rclone)"),
    pytest.mark.skipif(importlib.util.find_spec("portal.dav") is None,
                       reason="portal.dav is not importable: no WebDAV door in this tree yet"),
]

FILES = 500
RCLONE_TIME_LIMIT = 300.0   # seconds one rclone call may take


@pytest.fixture(scope="module")
def frontend(kv_cluster, tmp_path_factory) -> Iterator[str]:
    """A frontend as deployed: gunicorn, two workers (so requests of one sync land on both),
    four threads each."""
    with running_frontend(kv_cluster, tmp_path_factory.mktemp("dav-rclone"), "fe-rclone",
                          workers=2) as (addr, _):
        yield addr


@pytest.fixture
def rclone(frontend, kv_cluster, client, tmp_path) -> Rclone:
    """rclone with a remote ``dav:`` for a new user, signed in with their app password."""
    user = f"rc{secrets.token_hex(4)}"
    accounts.create_user(client, user, f"pw {secrets.token_hex(8)}")
    password = app_password(client, kv_cluster.cluster, user, "rclone")
    server = Server("dav", "ours", f"http://{frontend}/dav/", user, password, pid=0)
    binary = shutil.which("rclone")
    assert binary is not None
    return Rclone.for_servers(binary, tmp_path, [server], transfers=4,
                              time_limit=RCLONE_TIME_LIMIT)


def make_tree(root: Path) -> None:
    """500 files (0 to 20 KiB) in folders up to three deep, a few names with a space or
    letters beyond ASCII."""
    rng = random.Random(20)
    for i in range(FILES):
        folder = Path(f"p{i % 5}") / f"q{i // 5 % 4}" / ("r" if i % 3 == 0 else "")
        name = f"file {i}.txt" if i % 50 == 0 else f"f{i}-é.bin" if i % 70 == 1 else f"f{i}.bin"
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(20_480)))


def change_tree(root: Path) -> dict[str, int]:
    """Edits, additions, deletions and renames on the local side; what rclone should do."""
    rng = random.Random(21)
    gone = root / "p4" / "q3" / "r"   # a whole folder deleted, last
    files = sorted(p for p in root.rglob("*") if p.is_file() and gone not in p.parents)
    rng.shuffle(files)
    edited, deleted, renamed = files[:10], files[10:25], files[25:30]
    for path in edited:
        # Longer, not just different: rclone cannot set times on a plain WebDAV server, so it
        # compares sizes alone (a same-size edit would pass unseen on any such server).
        path.write_bytes(path.read_bytes()[:100] + rng.randbytes(300))
    for path in deleted:
        path.unlink()
    for i, path in enumerate(renamed):
        path.rename(path.with_name(f"renamed {i}-{path.name}"))
    (root / "new" / "deeper").mkdir(parents=True)
    for i in range(20):
        (root / "new" / ("deeper" if i % 2 else "") / f"n{i}.bin").write_bytes(rng.randbytes(1000 + i))
    gone_files = sum(1 for p in gone.rglob("*") if p.is_file())
    shutil.rmtree(gone)
    return {"transfers": 10 + 5 + 20, "deletes": 15 + 5 + gone_files}


def sync(rclone: Rclone, source: str, target: str) -> dict[str, Any]:
    return rclone.run("sync", source, target).stats


def test_rclone_syncs_a_tree_up_changes_and_back_identically(rclone, tmp_path):
    local, back = tmp_path / "local", tmp_path / "back"
    make_tree(local)
    assert tree_of(local).files == FILES

    first = sync(rclone, str(local), "dav:tree")
    assert (first["transfers"], first["errors"]) == (FILES, 0)
    again = sync(rclone, str(local), "dav:tree")
    assert (again["transfers"], again["deletes"], again["checks"]) == (0, 0, FILES)

    expected = change_tree(local)
    second = sync(rclone, str(local), "dav:tree")
    assert (second["transfers"], second["deletes"], second["errors"]) == (
        expected["transfers"], expected["deletes"], 0)
    again = sync(rclone, str(local), "dav:tree")  # nothing left to do, twice in a row
    assert (again["transfers"], again["deletes"]) == (0, 0)
    assert again["checks"] == tree_of(local).files

    down = sync(rclone, "dav:tree", str(back))
    assert down["transfers"] == tree_of(local).files
    assert tree_of(back) == tree_of(local)   # the same names, the same bytes
    # The deleted folder went too, not only its files; the new ones came.
    folders = rclone.run("lsf", "-R", "--dirs-only", "dav:tree").out.split()
    assert "p4/q3/" in folders and "p4/q3/r/" not in folders
    assert "new/deeper/" in folders and len(folders) == 5 + 5 * 4 + 5 * 4 - 1 + 2
    again = sync(rclone, "dav:tree", str(back))
    assert (again["transfers"], again["deletes"]) == (0, 0)
