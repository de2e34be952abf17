"""The pages of folders shared with named users (portal.drive_sharedwith) on the in-memory
store: the owner shares and removes on the Sharing page, the recipient browses, downloads
and (read-write) changes things inside; outside ids, strangers and revoked grants are 404s."""

from __future__ import annotations

import io

from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from shards.model import drive
from shards.model.drive import ROOT

from .._memstore import MemClient
from .._portal import csrf_of, post, signed_up, unit_portal


def setup():
    store = MemClient()
    app = unit_portal(store)
    owner, owner_name = signed_up(app)
    bob, bob_name = signed_up(app)
    docs = drive.create_folder(store, owner_name, ROOT, "docs")
    private = drive.create_folder(store, owner_name, ROOT, "private")
    a = drive.store_file(store, owner_name, docs.id, "a.txt", io.BytesIO(b"alpha"), size=5,
                         quota=1 << 20)
    secret = drive.store_file(store, owner_name, private.id, "secret.txt", io.BytesIO(b"no"),
                              size=2, quota=1 << 20)
    return store, app, (owner, owner_name), (bob, bob_name), docs, private, a, secret


def share(owner, folder_id: str, who: str, mode: str):
    return post(owner, f"/drive/d/{folder_id}/sharing/add", {"who": who, "mode": mode},
                f"/drive/d/{folder_id}/sharing")


def upload(http, base: str, folder: str, name: str, content: bytes):
    boundary, body = encode_multipart({
        "csrf": csrf_of(http, base), "folder": folder,
        "file": FileStorage(io.BytesIO(content), filename=name, content_type="text/plain")})
    return http.post(f"{base}/upload", data=body,
                     content_type=f"multipart/form-data; boundary={boundary}")


def test_read_only_reads_and_every_write_is_a_403():
    store, _, (owner, owner_name), (bob, bob_name), docs, _, a, _ = setup()
    assert share(owner, docs.id, bob_name, "read").status_code == 303
    base = f"/drive/with/{owner_name}/{docs.id}"
    assert base in bob.get("/drive/with").text
    page = bob.get(base)
    assert page.status_code == 200 and "a.txt" in page.text and owner_name in page.text
    assert "/upload" not in page.text and "Rename" not in page.text
    assert bob.get(f"{base}/f/{a.id}").data == b"alpha"
    for action, fields in (("mkdir", {"folder": docs.id, "name": "x"}),
                           ("rename", {"item": f"f:{a.id}", "name": "b.txt"}),
                           ("delete", {"item": f"f:{a.id}"})):
        assert post(bob, f"{base}/{action}", fields, base).status_code == 403, action
    assert upload(bob, base, docs.id, "up.txt", b"x").status_code == 403
    assert [i.name for i in drive.list_folder(store, owner_name, docs.id).items] == ["a.txt"]


def test_read_write_changes_the_owners_drive_on_the_owners_quota():
    store, _, (owner, owner_name), (bob, bob_name), docs, private, a, secret = setup()
    share(owner, docs.id, bob_name, "write")
    base = f"/drive/with/{owner_name}/{docs.id}"
    before = drive.usage(store, owner_name)
    assert upload(bob, base, docs.id, "up.txt", b"from bob").status_code == 303
    assert drive.usage(store, owner_name) == before + 8 and drive.usage(store, bob_name) == 0
    again = upload(bob, base, docs.id, "up.txt", b"other")  # a name taken: said, not replaced
    assert again.status_code == 409 and "already something named" in again.text
    assert post(bob, f"{base}/rename", {"item": f"f:{a.id}", "name": "b.txt"}, base
                ).status_code == 303
    assert post(bob, f"{base}/delete", {"item": f"d:{docs.id}"}, base).status_code == 403
    assert post(bob, f"{base}/move", {"item": f"f:{a.id}", "target": private.id}, base
                ).status_code == 404
    assert post(bob, f"{base}/delete", {"item": f"f:{secret.id}"}, base).status_code == 404
    assert bob.get(f"{base}/f/{secret.id}").status_code == 404
    assert bob.get(f"{base}/d/{private.id}").status_code == 404
    assert sorted(i.name for i in drive.list_folder(store, owner_name, docs.id).items) == [
        "b.txt", "up.txt"]


def test_a_stranger_and_a_revoked_grant_see_nothing():
    _, app, (owner, owner_name), (bob, bob_name), docs, _, a, _ = setup()
    eve, _ = signed_up(app)
    share(owner, docs.id, bob_name, "read")
    base = f"/drive/with/{owner_name}/{docs.id}"
    assert eve.get(base).status_code == 404 and eve.get(f"{base}/f/{a.id}").status_code == 404
    assert post(owner, f"/drive/d/{docs.id}/sharing/revoke", {"user": bob_name},
                f"/drive/d/{docs.id}/sharing").status_code == 303
    assert bob.get(base).status_code == 404 and bob.get(f"{base}/f/{a.id}").status_code == 404
    assert base not in bob.get("/drive/with").text
