"""A backup's freeze on the store (raftkv/freezing.py) and the frozen state read in pages
(raftkv/backup_offers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from raftkv import diskkeys
from raftkv.backup_offers import MAX_OFFERS, Offer, Offers, check_cursor
from raftkv.errors import ConfigurationPending, OverLimit, ProtocolError, UnavailableError
from raftkv.store import Store

T0 = 1_000_000.0


class Group:
    """One store fed entries with times, as a replica's tick thread would."""

    def __init__(self) -> None:
        self.store = Store(4)
        self.index = 0
        self.seq = 0

    def entry(self, at: float, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        self.index += 1
        return self.store.apply_entry([at, *commands], self.index)

    def write(self, at: float, op: str, cid: int = 7, seq: int | None = None,
              **fields: Any) -> dict[str, Any]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.entry(at, {"op": op, "cid": cid, "seq": seq, **fields})[0]


def test_a_frozen_group_refuses_writes_without_keeping_them_and_applies_them_after_the_thaw():
    g = Group()
    assert "error" not in g.write(T0, "put", row="r", col="a", value=b"1")
    assert g.write(T0, "freeze", token=5, seconds=2.0) == {"until": T0 + 2.0}
    refused = g.write(T0 + 0.1, "put", seq=100, row="r", col="a", value=b"2")
    assert refused["error"] == "Frozen"
    assert g.store.read({"op": "get", "row": "r", "col": "a"})["value"] == b"1"
    assert g.write(T0 + 0.2, "thaw", token=5) == {"held": True}
    # The same request again (same client, same sequence number) now applies.
    assert "error" not in g.write(T0 + 0.3, "put", seq=100, row="r", col="a", value=b"2")
    assert g.store.read({"op": "get", "row": "r", "col": "a"})["value"] == b"2"


def test_a_freeze_ends_by_itself_on_the_groups_clock_and_the_thaw_says_so():
    g = Group()
    g.write(T0, "freeze", token=5, seconds=1.0)
    assert g.write(T0 + 0.5, "put", row="r", col="a", value=b"x")["error"] == "Frozen"
    assert "error" not in g.write(T0 + 1.5, "put", row="r", col="a", value=b"x")
    assert g.write(T0 + 1.6, "thaw", token=5) == {"held": False}


def test_one_backup_at_a_time_and_a_stale_thaw_changes_nothing():
    g = Group()
    g.write(T0, "freeze", token=5, seconds=5.0)
    assert g.write(T0 + 0.1, "freeze", token=6, seconds=5.0)["error"] == "Busy"
    assert g.write(T0 + 0.2, "thaw", token=6) == {"held": False}
    assert g.write(T0 + 0.3, "put", row="r", col="a", value=b"x")["error"] == "Frozen"
    # The same backup may renew its own freeze.
    assert g.write(T0 + 0.4, "freeze", token=5, seconds=5.0) == {"until": T0 + 5.4}


@pytest.mark.parametrize("fields", [{"token": 0, "seconds": 1.0}, {"token": "x", "seconds": 1.0},
                                    {"token": 5, "seconds": 0}, {"token": 5, "seconds": 31.0},
                                    {"token": 5, "seconds": float("nan")}, {"token": 5}])
def test_a_malformed_freeze_is_refused_and_freezes_nothing(fields: dict[str, Any]):
    g = Group()
    assert g.write(T0, "freeze", **fields)["error"] == "ProtocolError"
    assert "error" not in g.write(T0, "put", row="r", col="a", value=b"x")


def test_the_freeze_survives_a_reopening_of_the_store(tmp_path):
    g = Group()
    g.store.close()
    g.store = Store(4, path=tmp_path / "state")
    g.write(T0, "freeze", token=5, seconds=5.0)
    g.store.close()
    g.store = Store(4, path=tmp_path / "state")
    assert g.write(T0 + 0.1, "put", row="r", col="a", value=b"x")["error"] == "Frozen"


def _all_pages(offer: Offer) -> list[tuple[str, str, bytes]]:
    cells, after = [], b""
    while True:
        page, last = offer.page(after)
        for key, packed in page:
            name = diskkeys.decode_cell_key(key)
            cells.append((name.row, name.col, diskkeys.unpack_cell(packed).value))
        if last is None:
            return cells
        after = last


def test_an_offer_reads_the_state_at_the_freeze_whatever_applies_after_the_thaw(monkeypatch):
    monkeypatch.setattr("raftkv.backup_offers.PAGE_CELLS", 7)  # several pages
    g = Group()
    for i in range(20):
        g.write(T0, "put", row=f"row{i:02}", col="c", value=b"before")
    g.write(T0, "freeze", token=9, seconds=5.0)
    offers = Offers()
    token, offer = offers.open(g.store.db, 9, 4)
    assert offer.meta["applied_index"] == g.index
    g.write(T0 + 0.1, "thaw", token=9)
    for i in range(20):
        g.write(T0 + 0.2, "put", row=f"row{i:02}", col="c", value=b"after")
    g.write(T0 + 0.2, "put", row="new", col="c", value=b"after")
    cells = _all_pages(offers.get(token))
    assert len(cells) == 20
    assert {value for _row, _col, value in cells} == {b"before"}
    offers.close(token)
    with pytest.raises(UnavailableError):
        offers.get(token)


def test_an_offer_is_refused_unless_the_state_is_frozen_by_that_backup():
    g = Group()
    with pytest.raises(ConfigurationPending):
        Offers().open(g.store.db, 9, 4)
    g.write(T0, "freeze", token=9, seconds=1.0)
    with pytest.raises(ConfigurationPending):
        Offers().open(g.store.db, 8, 4)
    g.write(T0 + 2.0, "noop")  # the clock passes the freeze's end
    with pytest.raises(ConfigurationPending):
        Offers().open(g.store.db, 9, 4)


def test_installing_a_snapshot_ends_an_open_offer_instead_of_waiting_for_it(tmp_path):
    g = Group()
    g.write(T0, "put", row="r", col="c", value=b"x")
    g.write(T0, "freeze", token=9, seconds=5.0)
    token, offer = (offers := Offers()).open(g.store.db, 9, 4)
    image = tmp_path / "image"
    with open(image, "wb") as f:
        g.store.copy_image(f.fileno())
    g.store.install(image, 0)  # would hang here if the swap waited for the offer
    with pytest.raises(UnavailableError, match="installed a snapshot"):
        offers.get(token).page(b"")
    offers.close(token)


def test_a_strangers_backup_requests_get_clear_errors():
    g = Group()
    offers = Offers()
    with pytest.raises(ProtocolError):
        offers.open(g.store.db, "7", 4)  # a token that is no integer
    for token in (b"no such offer", "text", None, 12):
        with pytest.raises(UnavailableError, match="no such backup"):
            offers.get(token)
    with pytest.raises(ProtocolError):
        check_cursor(b"k" * 2000)
    with pytest.raises(ProtocolError):
        check_cursor("a string")
    offers.close(b"no such offer")  # closing what is not there is no error


def test_at_most_a_few_offers_at_once_and_idle_ones_are_closed(monkeypatch):
    g = Group()
    g.write(T0, "freeze", token=9, seconds=5.0)
    offers = Offers()
    tokens = [offers.open(g.store.db, 9, 4)[0] for _ in range(MAX_OFFERS)]
    with pytest.raises(OverLimit):
        offers.open(g.store.db, 9, 4)
    monkeypatch.setattr("raftkv.backup_offers.IDLE", 0.0)
    offers.drop_idle()
    assert len(offers) == 0
    with pytest.raises(UnavailableError):
        offers.get(tokens[0])
