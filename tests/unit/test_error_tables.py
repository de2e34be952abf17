"""The error tree and its two tables (docs/architecture.md, "Errors"): every class of
raftkv.errors crosses the wire, every group means one HTTP status and one SMTP reply."""

from __future__ import annotations

import inspect

import msgpack
import pytest

from portal import errors as http
from raftkv import errors
from raftkv.errors import (
    ConditionFailed,
    ConfigError,
    ConfigurationPending,
    NoLeader,
    NotLeader,
    OutcomeUnknown,
    OverLimit,
    ProtocolError,
    RaftKVError,
    Refused,
    TooLarge,
    UnavailableError,
    WrongShard,
    from_wire,
)
from raftkv.store import Store
from shards.model import errors as model
from smtpd import replies
from smtpd.replies import Rejected, smtp_reply

STORE_CLASSES = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                 if issubclass(cls, RaftKVError) and cls.__module__ == errors.__name__]
MODEL_CLASSES = [cls for _, cls in inspect.getmembers(model, inspect.isclass)
                 if issubclass(cls, RaftKVError) and cls.__module__ == model.__name__]


class _Unknown(RaftKVError):
    """An error of the tree that no row names."""


def _wire(exc: RaftKVError) -> RaftKVError:
    """``exc`` through the wire: to_wire, msgpack both ways, from_wire."""
    return from_wire(msgpack.unpackb(msgpack.packb(exc.to_wire(), use_bin_type=True), raw=False))


@pytest.mark.parametrize("cls", STORE_CLASSES, ids=lambda c: c.__name__)
def test_every_class_of_raftkv_errors_is_rebuilt_from_the_wire(cls):
    assert cls in errors.WIRE_ERRORS
    back = _wire(cls("it went wrong"))
    assert type(back) is cls and str(back) == "it went wrong"


@pytest.mark.parametrize("exc, fields", [
    (NotLeader("no", leader="10.0.0.2:7201"), {"leader": "10.0.0.2:7201"}),
    (WrongShard("moved", shard=3, config_num=7), {"shard": 3, "config_num": 7}),
    (ConditionFailed("lost", version=42), {"version": 42}),
    (ConfigurationPending("later", config_num=5), {"config_num": 5}),
    (OverLimit("slow down", retry_after=30.5), {"retry_after": 30.5}),
    (OverLimit("slow down"), {"retry_after": None}),
])
def test_attributes_cross_the_wire(exc, fields):
    back = _wire(exc)
    assert type(back) is type(exc)
    assert {name: getattr(back, name) for name in fields} == fields


def test_an_unknown_name_from_the_wire_is_a_protocol_error():
    back = from_wire({"error": "KeyNotFound", "message": "gone"})
    assert type(back) is ProtocolError and "KeyNotFound" in str(back)


def test_a_step_the_group_is_not_ready_for_is_pending_not_a_configuration_error():
    # A group in no configuration yet: an export of configuration 1 must wait.
    answer = Store(8).apply({"op": "export_shard", "config": 1, "shard": 2})
    pending = _wire(from_wire(answer))
    assert isinstance(pending, ConfigurationPending) and isinstance(pending, UnavailableError)
    assert pending.config_num == 0 and not isinstance(pending, ConfigError)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_model_error_is_in_a_group_and_none_is_a_store_error(cls):
    if not cls.__subclasses__():  # the ones raised; a family (DriveError) may be only that
        assert issubclass(cls, (Refused, OverLimit))
    assert cls not in errors.WIRE_ERRORS


# -- HTTP -------------------------------------------------------------------------------


@pytest.mark.parametrize("exc, status", [
    (NoLeader("election"), 503), (OutcomeUnknown("timed out"), 503),
    (ConfigurationPending("later"), 503), (ConditionFailed(), 409), (WrongShard(), 503),
    (TooLarge("over the cap"), 413), (Refused("no"), 400), (OverLimit("slow down"), 429),
    (ProtocolError("bad frame"), 503), (ConfigError("bad file"), 503), (_Unknown("?"), 503),
    (model.NoSuchItem("There is no such file in your drive."), 404),
    (model.NoSuchAppPassword("No such app password."), 404),
    (model.NameTaken("Taken."), 409), (model.BadName("Bad."), 400),
    (model.QuotaExceeded("Full.", used=1, quota=1), 413),
    (model.CannotDelete("The administrator account cannot be deleted."), 403),
    (model.UserExists("Taken."), 400), (model.WrongPassword("Wrong."), 400),
    (model.TwoFactorError("Wrong code."), 400), (model.AppPasswordError("Too many."), 400),
    (model.MailboxFull("bob"), 400), (model.SenderMailboxFull("ann"), 400),
    (model.SendLimitExceeded("Wait.", permanent=False, retry_after=60), 400),
])
def test_each_error_has_one_http_status(exc, status):
    assert http.http_status(exc) == status
    assert http.http_error(exc).code == status


def test_store_errors_show_a_fixed_sentence_and_refusals_their_own():
    assert http.http_message(model.NameTaken("There is already a.txt here.")) == \
        "There is already a.txt here."
    assert "try again" in http.http_message(_Unknown("internal detail")).lower()
    assert "internal detail" not in http.http_message(_Unknown("internal detail"))
    assert "internal" not in http.http_message(NoLeader("internal"))


@pytest.mark.parametrize("exc, wait", [
    (NoLeader(), str(http.RETRY_AFTER)), (_Unknown(), str(http.RETRY_AFTER)),
    (OverLimit("slow", retry_after=90.2), "91"), (OverLimit("slow"), None),
    (Refused("no"), None), (ConditionFailed(), None),
])
def test_retry_after_is_sent_for_what_is_worth_retrying(exc, wait):
    assert dict(http.http_error(exc).get_headers()).get("Retry-After") == wait


@pytest.mark.parametrize("table", [[cls for cls, _ in http.HTTP_TABLE],
                                   [cls for cls, _, _ in replies.SMTP_TABLE]],
                         ids=["http", "smtp"])
def test_no_row_of_a_table_is_hidden_by_an_earlier_one(table):
    for i, cls in enumerate(table):
        assert not any(issubclass(cls, earlier) for earlier in table[:i]), cls
    assert table[-1] is RaftKVError  # the catch-all, for errors no row names


# -- SMTP -------------------------------------------------------------------------------


@pytest.mark.parametrize("exc, reply", [
    (NoLeader("election"), replies.TRY_LATER), (OutcomeUnknown(), replies.TRY_LATER),
    (ConfigurationPending(), replies.TRY_LATER), (ConditionFailed(), replies.TRY_LATER),
    (WrongShard(), replies.TRY_LATER), (ProtocolError("bad frame"), replies.TRY_LATER),
    (_Unknown("?"), replies.TRY_LATER), (RuntimeError("a bug of ours"), replies.TRY_LATER),
    (TooLarge("over the cap"), replies.TOO_BIG),
    (Rejected(replies.RELAY_DENIED), replies.RELAY_DENIED),
    (model.MailboxFull("bob"), replies.MAILBOX_FULL),
    (model.SenderMailboxFull("ann"), replies.SENDER_MAILBOX_FULL),
])
def test_each_error_has_one_smtp_reply(exc, reply):
    assert smtp_reply(exc) == reply


def test_refusals_are_permanent_and_limits_temporary_in_smtp():
    assert smtp_reply(Refused("You may not.")) == "550 5.7.1 You may not."
    assert smtp_reply(OverLimit("Later.\r\nInjected: x")) == "451 4.7.1 Later.Injected: x"
    hopeless = model.SendLimitExceeded("At most 3.", permanent=True, retry_after=0)
    assert smtp_reply(hopeless) == "550 5.7.1 At most 3."
    wait = model.SendLimitExceeded("Wait an hour.", permanent=False, retry_after=60)
    assert smtp_reply(wait) == "451 4.7.1 Wait an hour."
    for exc in (Refused("x"), OverLimit("x"), model.QuotaExceeded("x", used=1, quota=1)):
        assert smtp_reply(exc)[0] in "45"
