"""Folders shared with named users (shards.model.drive.grants) on the real state machine:
the two rows and their order, the access check by walking parents, modes, bounds."""

from __future__ import annotations

import pytest

from shards.model import accounts, drive, erase
from shards.model.drive import FILE, FOLDER, ROOT, grants
from shards.model.errors import NoSuchItem

from .._drive import small_tree, stored
from .._memstore import MemClient

OWNER, BOB, EVE = "alice", "bob", "eve"


@pytest.fixture
def client() -> MemClient:
    return MemClient()


def put_file(client, parent: str, name: str, content: bytes = b"hello"):
    return stored(client, OWNER, parent, name, content, ctype="text/plain")


def tree(client):
    return small_tree(client, OWNER)


def test_a_grant_is_the_owners_cell_and_the_recipients_pointer(client):
    t = tree(client)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    assert list(client.get_row(grants.grants_row(OWNER))) == [f"g:{t['docs'].id}/{BOB}"]
    assert list(client.get_row(grants.sharedwithme_row(BOB))) == [f"{OWNER}/{t['docs'].id}"]
    [(g, folder)] = grants.shared_with(client, BOB)
    assert (g.owner, g.mode, folder.name) == (OWNER, grants.READ, "docs")
    assert [x.recipient for x in grants.folder_grants(client, OWNER, t["docs"].id)] == [BOB]
    assert grants.shared_folders(client, OWNER) == {t["docs"].id: 1}
    assert grants.shared_with(client, EVE) == []


def test_access_reaches_exactly_the_shared_tree(client):
    t = tree(client)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    got = grants.access(client, BOB, OWNER, t["docs"].id, FILE, t["plan"].id)
    assert got.item.name == "plan.txt" and [f.name for f in got.path] == ["docs", "work"]
    for kind, item_id in ((FILE, t["secret"].id), (FOLDER, t["private"].id), (FOLDER, ROOT)):
        with pytest.raises(NoSuchItem):
            grants.access(client, BOB, OWNER, t["docs"].id, kind, item_id)
    with pytest.raises(NoSuchItem):  # a stranger: no grant
        grants.access(client, EVE, OWNER, t["docs"].id, FOLDER, t["docs"].id)
    with pytest.raises(NoSuchItem):  # a grant on docs does not open private by naming it
        grants.access(client, BOB, OWNER, t["private"].id, FOLDER, t["private"].id)
    drive.move(client, OWNER, FILE, t["plan"].id, t["private"].id)  # moved out: unreachable
    with pytest.raises(NoSuchItem):
        grants.access(client, BOB, OWNER, t["docs"].id, FILE, t["plan"].id)


def test_read_only_refuses_writes_and_read_write_allows_them(client):
    t = tree(client)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    with pytest.raises(grants.NotAllowed):
        grants.access(client, BOB, OWNER, t["docs"].id, FOLDER, t["docs"].id, write=True)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.WRITE)  # the mode changes in place
    assert len(grants.folder_grants(client, OWNER, t["docs"].id)) == 1
    got = grants.access(client, BOB, OWNER, t["docs"].id, FOLDER, t["work"].id, write=True)
    assert got.grant.writable and got.item.id == t["work"].id


def test_revoke_stops_access_at_once_and_leave_too(client):
    t = tree(client)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.WRITE)
    grants.grant(client, OWNER, t["docs"].id, EVE, grants.READ)
    assert grants.revoke(client, OWNER, t["docs"].id, BOB)
    with pytest.raises(NoSuchItem):
        grants.access(client, BOB, OWNER, t["docs"].id, FOLDER, t["docs"].id)
    assert grants.shared_with(client, BOB) == [] and not grants.revoke(client, OWNER,
                                                                       t["docs"].id, BOB)
    assert grants.leave(client, EVE, OWNER, t["docs"].id)
    with pytest.raises(NoSuchItem):
        grants.access(client, EVE, OWNER, t["docs"].id, FOLDER, t["docs"].id)
    assert client.get_row(grants.grants_row(OWNER)) == {}


def test_a_crash_between_the_two_writes_is_harmless(client):
    t = tree(client)
    # A pointer whose grant never landed (or was revoked before the pointer went): opens
    # nothing, and the list drops it.
    client.put(grants.sharedwithme_row(BOB), f"{OWNER}/{t['private'].id}", b"\x80")
    assert grants.shared_with(client, BOB) == []
    assert client.get_row(grants.sharedwithme_row(BOB)) == {}
    with pytest.raises(NoSuchItem):
        grants.access(client, BOB, OWNER, t["private"].id, FOLDER, t["private"].id)
    # A grant whose pointer was lost: granting again writes it.
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    client.delete(grants.sharedwithme_row(BOB), f"{OWNER}/{t['docs'].id}")
    assert grants.shared_with(client, BOB) == []
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    assert [f.name for _, f in grants.shared_with(client, BOB)] == ["docs"]


def test_bad_grants_are_refused(client, monkeypatch):
    t = tree(client)
    with pytest.raises(grants.NotAllowed):
        grants.grant(client, OWNER, t["docs"].id, OWNER, grants.READ)
    with pytest.raises(grants.NotAllowed):
        grants.grant(client, OWNER, t["docs"].id, BOB, "x")
    with pytest.raises(NoSuchItem):
        grants.grant(client, OWNER, t["a"].id, BOB, grants.READ)  # a file, not a folder
    with pytest.raises(NoSuchItem):
        grants.grant(client, OWNER, "../etc", BOB, grants.READ)
    monkeypatch.setattr(grants, "MAX_PER_FOLDER", 2)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    grants.grant(client, OWNER, t["docs"].id, EVE, grants.READ)
    with pytest.raises(grants.TooManyGrants):
        grants.grant(client, OWNER, t["docs"].id, "carol", grants.READ)
    monkeypatch.setattr(grants, "MAX_PER_RECIPIENT", 1)
    with pytest.raises(grants.TooManyGrants):
        grants.grant(client, OWNER, t["work"].id, BOB, grants.READ)


def test_a_deleted_shared_folder_leaves_the_list(client):
    t = tree(client)
    grants.grant(client, OWNER, t["work"].id, BOB, grants.READ)
    drive.delete_folder(client, OWNER, t["work"].id)
    assert grants.shared_with(client, BOB) == []
    with pytest.raises(NoSuchItem):
        grants.access(client, BOB, OWNER, t["work"].id, FOLDER, t["work"].id)


def test_move_targets_are_the_shared_tree_only(client):
    t = tree(client)
    names = [names for _, names in grants.within(client, OWNER, t["docs"].id)]
    assert names == [[], ["work"]]


def test_deleting_the_recipients_account_takes_their_grants_from_the_owners_rows(client):
    t = tree(client)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.WRITE)
    grants.grant(client, OWNER, t["work"].id, BOB, grants.READ)
    grants.grant(client, OWNER, t["docs"].id, EVE, grants.READ)
    assert grants.leave_all(client, BOB) == 2
    assert [g.recipient for g in grants.folder_grants(client, OWNER, t["docs"].id)] == [EVE]
    assert grants.folder_grants(client, OWNER, t["work"].id) == []
    with pytest.raises(NoSuchItem):  # a new account of the same name finds nothing
        grants.access(client, BOB, OWNER, t["docs"].id, FOLDER, t["docs"].id)


def test_erasing_an_account_leaves_what_was_shared_with_it(client):

    t = tree(client)
    accounts.create_user(client, BOB, "a long password")
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    erase.erase_account(client, BOB, domains=["example.test"], end_sessions=lambda: None)
    assert grants.folder_grants(client, OWNER, t["docs"].id) == []


def test_granted_is_the_check_for_walking_down_by_names(client):
    t = tree(client)
    with pytest.raises(NoSuchItem):
        grants.granted(client, BOB, OWNER, t["docs"].id)
    grants.grant(client, OWNER, t["docs"].id, BOB, grants.READ)
    assert grants.granted(client, BOB, OWNER, t["docs"].id).mode == grants.READ
    with pytest.raises(grants.NotAllowed):
        grants.granted(client, BOB, OWNER, t["docs"].id, write=True)
    with pytest.raises(NoSuchItem):
        grants.granted(client, BOB, OWNER, "../x")
