from __future__ import annotations

from raftkv import errors, protocol
from raftkv.keys import hash_tag, shard_of


def test_frame_round_trip() -> None:
    frame = protocol.encode({"id": 1, "op": "put", "value": b"\x00\xff"})
    length = protocol.check_length(frame[:4])
    assert protocol.decode_body(frame[4:4 + length]) == {"id": 1, "op": "put", "value": b"\x00\xff"}


def test_errors_cross_the_wire_with_their_attributes() -> None:
    for exc in (errors.NotLeader("x", leader="h:1"), errors.ConditionFailed("y", version=7),
                errors.WrongShard("z", shard=3, config_num=9), errors.OutcomeUnknown("w")):
        back = errors.from_wire(exc.to_wire())
        assert type(back) is type(exc) and back.to_wire() == exc.to_wire()
    assert isinstance(errors.from_wire({"error": "os.system"}), errors.ProtocolError)


def test_hash_tags_keep_a_users_rows_together() -> None:
    assert hash_tag("{alice}/mail") == "alice"
    assert hash_tag("{}x") == "{}x"
    assert shard_of("{alice}/mail") == shard_of("{alice}/drive")
    assert 0 <= shard_of("anything", 64) < 64
