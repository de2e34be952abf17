"""The data model's errors, each in the group of :mod:`raftkv.errors` that says what to do.

A request a user can fix is :class:`~raftkv.errors.Refused` (what it names does
not exist: :class:`NotFound`); a quota or a rate is
:class:`~raftkv.errors.OverLimit`.  The message of each is a sentence for the
user.  The families (:class:`AccountError`, :class:`DriveError`, ...) let a
page catch what its feature can refuse; the apps map every class through
their one table (``docs/architecture.md``, "Errors").
"""

from __future__ import annotations

from raftkv.errors import OverLimit, RaftKVError, Refused


class NotFound(Refused):
    """What the request names does not exist (for this user): do not retry."""


# -- accounts (shards.model.accounts, erase) ----------------------------------------------


class AccountError(Refused):
    """Base class of the account errors a user can cause; the message is a user-facing sentence."""


class InvalidUsername(AccountError):
    """The name breaks the rules of :func:`shards.model.accounts.valid_username`."""


class InvalidPassword(AccountError):
    """The new password is too short or too long."""


class UserExists(AccountError):
    """Someone already has this name (possibly by winning a race a moment ago)."""


class WrongPassword(AccountError):
    """The current password given for a change is wrong (or the user is gone)."""


class CannotDelete(AccountError):
    """This account may not be deleted (the administrator)."""


# -- second factors (shards.model.twofactor, apppasswords) --------------------------------


class TwoFactorError(Refused):
    """A two-factor step refused: already on, not begun, or a wrong code."""


class AppPasswordError(Refused):
    """An app password request the user can fix (a bad name, the most allowed exist already)."""


class NoSuchAppPassword(AppPasswordError, NotFound):
    """No app password has that id (revoked already?)."""


# -- the drive (shards.model.drive) -------------------------------------------------------


class DriveError(RaftKVError):
    """Something asked of the drive cannot be done; the message is a sentence for the user.

    Only a family: each subclass also joins the group that says what to do.
    """


class NoSuchItem(DriveError, NotFound):
    """No such file or folder in this user's drive (or it was just deleted)."""


class NameTaken(DriveError, Refused):
    """The folder already holds something with that name."""


class BadName(DriveError, Refused):
    """The name cannot be stored (empty, a '/', too long)."""


class BadMove(DriveError, Refused):
    """A folder cannot move into itself or below itself; the root cannot move at all."""


class TooDeep(DriveError, Refused):
    """The change would nest folders deeper than :data:`shards.model.drive.MAX_DEPTH`."""


class QuotaExceeded(DriveError, OverLimit):
    """The file would take the user over their quota (``used`` of ``quota`` bytes)."""

    def __init__(self, message: str, *, used: int, quota: int) -> None:
        super().__init__(message)
        self.used = used
        self.quota = quota


# -- mail (shards.model.mail, mailbox, outbound, sendlimit) -------------------------------------


class MailboxFull(OverLimit):
    """The message does not fit in the quota of ``user``'s mailbox; ``address``, when
    the caller knows one, names it in the message."""

    def __init__(self, user: str, address: str | None = None) -> None:
        super().__init__(self.sentence(address or user))
        self.user = user
        self.address = address

    @staticmethod
    def sentence(mailbox: str) -> str:
        return f"the mailbox of {mailbox} is full."


class MailError(RaftKVError):
    """Something asked of a mailbox's folders or messages cannot be done; the message is a
    sentence for the user (:mod:`shards.model.mail`).  Only a family, as :class:`DriveError`."""


class NoSuchFolder(MailError, NotFound):
    """No folder of that name or id (deleted meanwhile?)."""


class FolderExists(MailError, Refused):
    """A folder of that name exists already (possibly made a moment ago)."""


class BadFolderName(MailError, Refused):
    """The folder name breaks the rules of :func:`shards.model.mail.layout.check_folder_name`."""


class FolderRefused(MailError, Refused):
    """The folder cannot be renamed or deleted (a special folder, one with subfolders), or
    no more folders may be made."""


class BadFlag(MailError, Refused):
    """A flag or keyword that cannot be stored (not an IMAP atom, too long, too many)."""


class SenderMailboxFull(MailboxFull):
    """The sender's own mailbox has no room for the Sent copy: nothing is sent."""

    @staticmethod
    def sentence(mailbox: str) -> str:
        return ("your mailbox is over its quota (the Sent copy would not fit). "
                "Delete some mail, then send again.")


class SendLimitExceeded(OverLimit):
    """The account may not send this message now; the message is a sentence for the user.

    Waiting ``retry_after`` seconds helps, unless ``permanent``: more recipients
    than a whole hour allows, which no wait can fix.
    """

    def __init__(self, message: str, *, permanent: bool, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.permanent = permanent
