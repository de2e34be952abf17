"""The webmail's folders over HTTP on a real store: the folder list and its unread counts,
star, move, Trash with its undo, restore, delete for good, empty the Trash, a user's own
folders, drafts, the search box, and the Trash sweep of the frontend's background loop."""

from __future__ import annotations

import re
import time

import pytest

from portal.heartbeat import TrashSweeper
from shards.model import mail, mailbox

from .test_webmail import Person, _csrf, app, people

pytestmark = pytest.mark.cluster
__all__ = ["app", "people"]  # the fixtures, shared with test_webmail


@pytest.fixture
def person(app, client):
    return Person(app, client, "fold")


def _deliver(client, who: Person, subject: str, sender: str = "Ann <ann@example.test>") -> str:
    raw = (f"From: {sender}\r\nTo: {who.address}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}.{who.name}@example.test>\r\n\r\nhello\r\n")
    return mailbox.deliver(client, who.name, raw.encode())


def _counts(page: str) -> dict[str, int]:
    """The folder list's lines: label -> unread count (0 when it shows none)."""
    found = {}
    for label, count in re.findall(
            r'class="tab[^"]*"[^>]*>([^<]+)</a>(?:<span class="count">'
            r'<span class="visually-hidden">, unread: </span>(\d+)</span>)?', page):
        found[label] = int(count or 0)
    return found


def _where(client, who: Person, msg_id: str) -> tuple[int, int, tuple[str, ...]] | None:
    record = mail.locate(client, who.name, msg_id)
    return None if record is None else (record.fid, record.uid, record.flags)


def _post(who: Person, path: str, data: dict, page: str = "/mail"):
    return who.http.post(path, data={"csrf": _csrf(who.http, page), **data})


def test_the_folder_list_counts_unread_mail_and_opening_marks_it_read(client, person):
    ids = [_deliver(client, person, f"note {n}") for n in range(3)]
    page = person.http.get("/mail").text
    assert list(_counts(page)) == ["Inbox", "Sent", "Drafts", "Junk", "Trash"]
    assert _counts(page)["Inbox"] == 3 and page.count('<tr class="unread">') == 3
    fid, uid, _flags = _where(client, person, ids[0])
    assert person.http.get(f"/mail/{ids[0]}?at={fid}.{uid}").status_code == 200
    deadline = time.monotonic() + 10
    while mail.SEEN not in _where(client, person, ids[0])[2]:  # written off the request
        assert time.monotonic() < deadline, "the read mark never landed"
        time.sleep(0.05)
    page = person.http.get("/mail").text
    assert _counts(page)["Inbox"] == 2 and page.count('<tr class="unread">') == 2
    mailbox.deliver(client, person.name, f"From: {person.address}\r\nTo: Bo <bo@example.test>"
                    "\r\nSubject: out\r\n\r\nx".encode(), folder="sent", unread=False)
    sent = person.http.get("/mail/f/2").text
    assert '<th class="who">To</th>' in sent and '<th class="who">From</th>' not in sent
    assert '<td class="sender">Bo &lt;bo@example.test&gt;</td>' in sent
    assert person.http.get("/mail/f/999").status_code == 404


def test_star_from_the_list_and_from_the_reader(client, person):
    msg_id = _deliver(client, person, "shiny")
    fid, uid, _ = _where(client, person, msg_id)
    starred = _post(person, "/mail/f/1/star", {"star": str(uid)})
    assert starred.status_code == 303 and "done=starred" in starred.headers["Location"]
    assert mail.FLAGGED in _where(client, person, msg_id)[2]
    assert f'name="unstar" value="{uid}"' in person.http.get("/mail").text
    reader = person.http.get(f"/mail/{msg_id}?at={fid}.{uid}").text
    assert "★ Starred" in reader and 'name="on" value="0"' in reader
    off = _post(person, f"/mail/{msg_id}/star", {"on": "0"})
    assert off.status_code == 303 and "done=unstarred" in off.headers["Location"]
    assert mail.FLAGGED not in _where(client, person, msg_id)[2]
    toggled = _post(person, f"/mail/{msg_id}/star", {"on": "toggle"})  # a reader that did not know
    assert toggled.status_code == 303 and mail.FLAGGED in _where(client, person, msg_id)[2]
    assert _post(person, "/mail/f/1/star", {"star": "x1"}).status_code == 404


def test_move_a_selection_and_from_the_reader(client, person):
    ids = [_deliver(client, person, f"work {n}") for n in range(3)]
    made = _post(person, "/mail/folders/new", {"name": "Work"})
    assert made.status_code == 303 and "done=mail-folder-created" in made.headers["Location"]
    work = int(made.headers["Location"].split("/mail/f/")[1].split("?")[0])
    uids = [str(_where(client, person, i)[1]) for i in ids[:2]]
    moved = _post(person, "/mail/f/1/act", {"action": "move", "to": str(work), "uid": uids})
    assert moved.status_code == 303 and "done=mail-moved-n&n=2" in moved.headers["Location"]
    assert [_where(client, person, i)[0] for i in ids] == [work, work, mail.INBOX]
    page = person.http.get(f"/mail/f/{work}").text
    assert "work 0" in page and "work 1" in page and "work 2" not in page
    assert _counts(page)["Work"] == 2
    back = _post(person, f"/mail/{ids[0]}/move", {"to": "1"})
    assert back.status_code == 303 and _where(client, person, ids[0])[0] == mail.INBOX
    assert _post(person, "/mail/f/1/act", {"action": "move", "to": "1", "uid": ["1"]}
                 ).status_code == 400  # into the folder it is in
    assert _post(person, "/mail/f/1/act", {"action": "move", "to": "77777", "uid": uids}
                 ).status_code == 404
    assert _post(person, "/mail/f/1/act", {"action": "dance", "uid": uids}).status_code == 400
    assert _post(person, "/mail/f/1/act", {"action": "move", "to": str(work),
                                           "uid": [str(n) for n in range(101)]}).status_code == 400
    assert _post(person, "/mail/f/1/act", {"action": "move", "to": str(work)}).status_code == 400


def test_delete_goes_to_trash_with_an_undo_and_restore_goes_home(client, person):
    msg_id = _deliver(client, person, "oops")
    made = _post(person, "/mail/folders/new", {"name": "Keep"})
    keep = int(made.headers["Location"].split("/mail/f/")[1].split("?")[0])
    _post(person, f"/mail/{msg_id}/move", {"to": str(keep)})
    uid = _where(client, person, msg_id)[1]
    trashed = _post(person, f"/mail/f/{keep}/act", {"action": "trash", "uid": [str(uid)]})
    where = trashed.headers["Location"]
    assert trashed.status_code == 303 and "done=mail-trashed" in where and "undo=" in where
    fid, trash_uid, _ = _where(client, person, msg_id)
    assert fid == mail.TRASH and mail.locate(client, person.name, msg_id).origin == keep
    page = person.http.get(where).text
    assert "Moved to Trash." in page
    undo = re.search(r'<form method="post" action="/mail/f/4/act" class="undo">(.*?)</form>',
                     page, re.S).group(1)
    assert f'name="uid" value="{trash_uid}"' in undo and f'name="back" value="{keep}"' in undo
    restored = _post(person, "/mail/f/4/act", {"action": "restore", "uid": [str(trash_uid)],
                                                "back": str(keep)})
    assert restored.status_code == 303 and restored.headers["Location"].startswith(f"/mail/f/{keep}")
    assert _where(client, person, msg_id)[0] == keep
    # From the reader; then its folder goes, and a restore brings it to the Inbox.
    assert _post(person, f"/mail/{msg_id}/delete", {"confirm": "yes"}).status_code == 303
    assert _where(client, person, msg_id)[0] == mail.TRASH
    trash = person.http.get("/mail/f/4").text
    assert "oops" in trash and "Empty trash" in trash and 'value="restore"' in trash
    asked = person.http.get(f"/mail/f/{keep}/delete")
    assert asked.status_code == 200 and "for good?" in asked.text
    assert _post(person, f"/mail/f/{keep}/delete", {"confirm": "yes"}).status_code == 303
    assert "Keep" not in _counts(person.http.get("/mail").text)
    _post(person, "/mail/f/4/act", {"action": "restore",
                                    "uid": [str(_where(client, person, msg_id)[1])]})
    assert _where(client, person, msg_id)[0] == mail.INBOX
    assert mail.locate(client, person.name, msg_id).origin is None


def test_delete_forever_and_empty_trash_ask_first(client, person):
    ids = [_deliver(client, person, f"junk {n}") for n in range(4)]
    uids = [str(_where(client, person, i)[1]) for i in ids]
    _post(person, "/mail/f/1/act", {"action": "trash", "uid": uids})
    in_trash = [str(_where(client, person, i)[1]) for i in ids]
    asked = _post(person, "/mail/f/4/act", {"action": "forever", "uid": in_trash[:2]})
    assert asked.status_code == 200 and "Delete 2 messages for good?" in asked.text
    assert all(_where(client, person, i) for i in ids)
    gone = _post(person, "/mail/f/4/act", {"action": "forever", "confirm": "yes",
                                           "uid": in_trash[:2]})
    assert gone.status_code == 303 and "done=mail-deleted-n&n=2" in gone.headers["Location"]
    assert [_where(client, person, i) for i in ids[:2]] == [None, None]
    assert mailbox.get_message(client, person.name, ids[0]) is None  # the bytes went too
    question = person.http.get("/mail/trash/empty")
    assert question.status_code == 200 and "2 messages will be deleted for good" in question.text
    emptied = _post(person, "/mail/trash/empty", {"confirm": "yes"})
    assert emptied.status_code == 303 and "done=mail-deleted-n&n=2" in emptied.headers["Location"]
    assert mail.list_newest(client, person.name, mail.TRASH, limit=None) == []
    # Outside Trash "forever" is not offered, and the reader's delete asks without confirm.
    other = _deliver(client, person, "stay")
    assert _post(person, "/mail/f/1/act", {"action": "forever", "confirm": "yes",
                                           "uid": [str(_where(client, person, other)[1])]}
                 ).status_code == 400
    assert "Move this message to Trash?" in _post(person, f"/mail/{other}/delete", {}).text
    assert _where(client, person, other)[0] == mail.INBOX


def test_a_users_folders_nest_rename_and_delete(client, person):
    top = _post(person, "/mail/folders/new", {"name": "Projects"})
    projects = int(top.headers["Location"].split("/mail/f/")[1].split("?")[0])
    sub = _post(person, "/mail/folders/new", {"name": "2026", "parent": str(projects)})
    year = int(sub.headers["Location"].split("/mail/f/")[1].split("?")[0])
    assert mail.get_folder(client, person.name, year).name == "Projects/2026"
    page = person.http.get("/mail").text
    assert re.search(rf'<li class="depth-1">\s*<a href="/mail/f/{year}" class="tab">2026</a>',
                     page)
    renamed = _post(person, f"/mail/f/{projects}/rename", {"name": "Clients"})
    assert renamed.status_code == 303 and "done=mail-folder-renamed" in renamed.headers["Location"]
    assert mail.get_folder(client, person.name, year).name == "Clients/2026"
    for path, data in ((f"/mail/f/{mail.INBOX}/rename", {"name": "Mine"}),
                       (f"/mail/f/{mail.SENT}/delete", {"confirm": "yes"}),
                       (f"/mail/f/{projects}/delete", {"confirm": "yes"}),  # it has a subfolder
                       ("/mail/folders/new", {"name": "a//b"}),
                       ("/mail/folders/new", {"name": "Clients"}),  # taken
                       ("/mail/folders/new", {"name": ""})):
        refused = _post(person, path, data)
        assert refused.status_code == 400 and 'role="alert"' in refused.text, (path, data)
    assert mail.get_folder(client, person.name, projects) is not None
    assert _post(person, f"/mail/f/{year}/delete", {"confirm": "yes"}).status_code == 303
    assert mail.get_folder(client, person.name, year) is None
    assert _post(person, "/mail/f/4242/rename", {"name": "x"}).status_code == 404


def test_drafts_are_saved_replaced_opened_and_gone_once_sent(client, person, people):
    bob = people[1]
    form = person.http.get("/mail/compose").text
    message_id = re.search(r'name="message_id" value="([^"]+)"', form).group(1)
    fields = {"to": bob.address, "subject": "plans", "body": "first thoughts",
              "message_id": message_id.replace("&lt;", "<").replace("&gt;", ">")}
    first = _post(person, "/mail/drafts/save", fields, "/mail/compose")
    assert first.status_code == 200 and "Draft saved." in first.text
    draft = re.search(r'name="draft" value="([^"]+)"', first.text).group(1)
    second = person.http.post("/mail/drafts/save", headers={"Accept": "application/json"},
                              data={"csrf": _csrf(person.http, "/mail/compose"), **fields,
                                    "body": "second thoughts", "draft": draft})
    assert second.status_code == 200 and second.json["draft"] != draft
    drafts = mail.list_newest(client, person.name, mail.DRAFTS, limit=None)
    assert [d.id for d in drafts] == [second.json["draft"]]  # one draft per compose session
    assert mail.DRAFT in drafts[0].flags and drafts[0].seen
    listed = person.http.get("/mail/f/3").text
    assert f'href="/mail/compose?draft={second.json["draft"]}"' in listed
    assert '<th class="who">To</th>' in listed
    opened = person.http.get(f"/mail/compose?draft={second.json['draft']}").text
    assert "second thoughts" in opened and bob.address in opened
    assert f'value="{message_id}"' in opened  # sent under the draft's Message-ID
    sent = person.send({**fields, "body": "final", "draft": second.json["draft"]})
    assert sent.status_code == 303
    assert mail.list_newest(client, person.name, mail.DRAFTS, limit=None) == []
    bob.find(client, "plans")
    assert person.http.get("/mail/compose?draft=nope").status_code == 404
    header = _post(person, "/mail/drafts/save", {"subject": "a\r\nBcc: x@example.test"},
                   "/mail/compose")
    assert header.status_code == 400


def test_the_search_box_finds_by_words_sender_and_subject(client, person):
    _deliver(client, person, "invoice march", sender="Billing <bills@shop.test>")
    _deliver(client, person, "lunch", sender="Zoe <zoe@example.test>")
    found = person.http.get("/mail/search?q=invoice").text
    assert "invoice march" in found and "lunch" not in found and "1 message found" in found
    assert "lunch" in person.http.get("/mail/search?q=hello+from:zoe").text  # a body word too
    by_sender = person.http.get("/mail/search?q=from:zoe").text
    assert "lunch" in by_sender and "invoice" not in by_sender
    assert "Nothing found" in person.http.get("/mail/search?q=from:nobody").text
    assert "Nothing found" in person.http.get("/mail/search?q=lunch&f=2").text  # not in Sent
    assert person.http.get("/mail/search?q=lunch&f=999").status_code == 404
    refused = person.http.get("/mail/search?q=a")  # a word too short for the index
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    assert person.http.get("/mail/search?q=%22unbalanced").status_code == 200
    assert 'role="search"' in person.http.get("/mail").text  # the box is on every mail page


def test_mail_trashed_30_days_ago_is_swept_by_the_background_loop(app, client, person):
    old, new = _deliver(client, person, "ancient"), _deliver(client, person, "recent")
    _post(person, f"/mail/{old}/delete", {"confirm": "yes"})
    sweeper = TrashSweeper(app, interval=3600)
    sweeper.clock = lambda: time.time() + 31 * 86400  # a month on
    for _ in range(4 * app.config.cluster.shards + 4):  # bounded: a few rounds of every shard
        sweeper.step()
        if person.name in sweeper.last_step:
            break
    else:
        pytest.fail("the sweep never reached the user")
    assert _where(client, person, old) is None and _where(client, person, new) is not None
    assert mailbox.get_message(client, person.name, old) is None
