"""The Security page: your sessions, two-factor sign-in, app passwords, deleting your
account; and the second step of a login with two-factor sign-in.

Every change here is a POST with the CSRF token (checked by the app before a
view runs).  What proves the user -- the password, a code -- goes through the
same limiters as the login form, so a stolen session cannot be used to guess
the password here instead.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest
from werkzeug.utils import redirect

from shards.model import accounts, apppasswords, erase, ratelimit, twofactor
from shards.model.errors import AppPasswordError, CannotDelete, TwoFactorError

from .auth import current_user, describe_wait, login_required, safe_next
from .errors import http_message, http_status
from .pagestore import together
from .sessions import index_row, session_key

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request
    from .pagestore import Key

CODE_FIELD_MAX = 64  # characters of a code field looked at (a recovery code has 14)


def _field(request: Request, name: str, limit: int = 1024) -> str:
    value = request.form.get(name, "")
    if len(value) > limit:
        raise BadRequest(f"The field {name!r} is too long.")
    return value


class AccountViews:
    """Mixin of :class:`portal.app.Portal`: /account and /login/code."""

    # -- logging in ------------------------------------------------------------------

    def needs_second_factor(self: Portal, user: str) -> bool:
        return twofactor.is_enabled(self.client(), user)

    def start_session(self: Portal, request: Request, user: str) -> None:
        """Log this browser in as ``user`` (a new sid), remembering how to describe it."""
        request.session = self.sessions.login(
            request.session, user, admin=accounts.is_admin(self.client(), user),
            addr=request.remote_addr, agent=request.user_agent.string)

    def ask_for_code(self: Portal, request: Request, user: str, next_url: str) -> Response:
        """The password was right and the account has two factors: ask for a code.

        The pending login is bound to this browser's sid, so a token copied
        elsewhere is worthless; the browser stays anonymous until the code.
        """
        token = twofactor.start_pending(self.client(), user, session_key(request.session.sid),
                                        next_url)
        return self.render(request, "login_code.html", username=user, token=token,
                           next=next_url)

    def on_login_code(self: Portal, request: Request) -> Response:
        if request.session.logged_in:
            return redirect("/", 303)
        user = _field(request, "username", 64).strip().lower()
        token = _field(request, "token", 64)
        code = _field(request, "code", CODE_FIELD_MAX)
        client = self.client()
        pending = twofactor.take_try(client, user, token, session_key(request.session.sid))
        if pending is None:
            return self.render(request, "login.html", status=403, username=user,
                               next=safe_next(request.form.get("next")),
                               error="This sign-in has expired. Please log in again.")
        # Counted per account, not per pending login: logging in again to get a
        # fresh pending login gives a guesser who knows the password no more codes.
        verdict = ratelimit.check_code(client, user, code, self.auth_limits, twofactor.use_code)
        context: dict[str, Any] = {"username": user, "next": pending.next}
        if verdict.limited:
            return self._code_limited(request, "login_code.html", verdict.retry_after,
                                      token=token, **context)
        if not verdict.right:
            if pending.tries_left <= 0:
                twofactor.end_pending(client, user, token)
                return self.render(request, "login.html", status=403, **context,
                                   error="Too many wrong codes. Please log in again.")
            return self.render(request, "login_code.html", status=403, token=token, **context,
                               error=f"That code is not right ({pending.tries_left} "
                                     f"{'tries' if pending.tries_left != 1 else 'try'} left).")
        twofactor.end_pending(client, user, token)
        self.start_session(request, user)
        return redirect(safe_next(pending.next), 303)

    # -- the page ----------------------------------------------------------------------

    def cells_account(self: Portal, user: str) -> list[Key]:
        """The account page's cells, confirmed with the session (portal.pagestore): the
        account record, its second factor, its app passwords."""
        row = accounts.account_row(user)
        return [(row, accounts.ACCOUNT_COL), (row, twofactor.TOTP_COL),
                apppasswords.cell_of(user)]

    @login_required
    def on_account(self: Portal, request: Request, **context: Any) -> Response:
        user = current_user(request)
        client = self.client()
        # The sessions index (one row: portal.sessions) with the cells not yet confirmed.
        keys = self.cells_account(user)
        index, _ = together(lambda: client.get_row(index_row(user)),
                            lambda: client.confirm(keys))
        if erase.is_deleting(client, user):
            return self.render(request, "account_delete.html", resume=True)
        two_factor, recovery_left = twofactor.status(client, user)
        return self.render(
            request, "account.html", status=context.pop("status", 200),
            sessions=self.sessions.described(user, request.session, index),
            two_factor=two_factor, recovery_left=recovery_left,
            app_passwords=apppasswords.list_for(client, user),
            app_passwords_max=apppasswords.MAX_PER_USER,
            is_admin_account=self._is_admin_account(user), **context)

    @login_required
    def on_account_end_session(self: Portal, request: Request) -> Response:
        user = current_user(request)
        key = _field(request, "session", 64)
        if key == session_key(request.session.sid):
            return self.on_account(request, status=400,
                                   error="To end this session, log out.")
        if not self.sessions.end(user, key):
            return self.on_account(request, status=404, error="No such session (already ended?).")
        return self.on_account(request, message="The session was ended.")

    @login_required
    def on_account_end_others(self: Portal, request: Request) -> Response:
        ended = self.sessions.revoke_others(current_user(request), keep=request.session)
        return self.on_account(request, message=f"Ended {ended} other session(s).")

    # -- two-factor sign-in ----------------------------------------------------------

    @login_required
    def on_account_2fa_begin(self: Portal, request: Request) -> Response:
        """Start enrolment; it needs the password, so a stolen session cannot put its
        own authenticator on the account."""
        user = current_user(request)
        refused = self._check_password(request, user)
        if refused is not None:
            return refused
        try:
            secret = twofactor.begin_enrolment(self.client(), user)
        except TwoFactorError as exc:
            return self.on_account(request, status=http_status(exc), error=http_message(exc))
        return self._enrol_page(request, user, secret)

    @login_required
    def on_account_2fa_confirm(self: Portal, request: Request) -> Response:
        user = current_user(request)
        client = self.client()
        try:
            codes = twofactor.confirm_enrolment(client, user, _field(request, "code",
                                                                      CODE_FIELD_MAX))
        except TwoFactorError as exc:
            secret = twofactor.pending_secret(client, user)
            if secret is None:
                return self.on_account(request, status=http_status(exc), error=http_message(exc))
            return self._enrol_page(request, user, secret, status=http_status(exc),
                                    error=http_message(exc))
        # A second factor now guards the account: sessions opened without one end.
        self.sessions.revoke_others(user, keep=request.session)
        response = self.render(request, "account_recovery.html", codes=codes)
        response.headers["Cache-Control"] = "no-store"  # the codes are shown once
        return response

    @login_required
    def on_account_2fa_disable(self: Portal, request: Request) -> Response:
        user = current_user(request)
        code = _field(request, "code", CODE_FIELD_MAX).strip()
        if code:
            verdict = ratelimit.check_code(self.client(), user, code, self.auth_limits,
                                           twofactor.use_code)
            if verdict.limited:
                return self._code_limited(request, "account.html", verdict.retry_after)
            proved = verdict.right
        else:
            refused = self._check_password(request, user)
            if refused is not None:
                return refused
            proved = True
        if not proved:
            return self.on_account(request, status=403, error="That code is not right.")
        twofactor.disable(self.client(), user)
        return self.on_account(request, message="Two-factor sign-in is off.")

    def _enrol_page(self: Portal, request: Request, user: str, secret: str, *,
                    status: int = 200, error: str | None = None) -> Response:
        domain = self.config.site.domains[0] if self.config.site.domains else "raftcloud"
        uri = twofactor.provisioning_uri(secret, f"{user}@{domain}",
                                         f"raftcloud {self.config.cluster.name}")
        response = self.render(request, "account_2fa.html", status=status, secret=secret,
                               uri=uri, error=error)
        response.headers["Cache-Control"] = "no-store"  # the secret is the second factor
        return response

    def _code_limited(self: Portal, request: Request, template: str, wait: float,
                      **context: Any) -> Response:
        """A 429 with Retry-After: too many wrong codes for the account, this one unchecked."""
        error = f"Too many wrong codes. Try again in {describe_wait(wait)}."
        if template == "account.html":
            response = self.on_account(request, status=429, error=error)
        else:
            response = self.render(request, template, status=429, error=error, **context)
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response

    # -- app passwords (mail clients, later WebDAV: doors that cannot ask for a code) ------

    @functools.cached_property
    def app_password_key(self: Portal) -> bytes:
        """The HMAC key of app passwords; smtpd derives the same one."""
        return self.config.cluster.derive_key(apppasswords.KEY_PURPOSE)

    @login_required
    def on_account_app_password_new(self: Portal, request: Request) -> Response:
        """Make an app password, shown once on the answer (never stored, never cached).

        It needs the account password: a stolen session must not be able to
        mint a lasting credential that outlives the session.
        """
        user = current_user(request)
        name = _field(request, "name", apppasswords.NAME_MAX * 4)
        refused = self._check_password(request, user)
        if refused is not None:
            return refused
        try:
            secret = apppasswords.create(self.client(), user, name, self.app_password_key)
        except AppPasswordError as exc:
            return self.on_account(request, status=http_status(exc), error=http_message(exc))
        response = self.on_account(request, new_app_password=secret,
                                   new_app_password_name=" ".join(name.split()))
        response.headers["Cache-Control"] = "no-store"
        return response

    @login_required
    def on_account_app_password_revoke(self: Portal, request: Request) -> Response:
        user = current_user(request)
        try:
            name = apppasswords.revoke(self.client(), user, _field(request, "id", 64))
        except AppPasswordError as exc:  # none such: 404
            return self.on_account(request, status=http_status(exc), error=http_message(exc))
        return self.on_account(request, message=f'The app password "{name}" was revoked.')

    # -- deleting the account --------------------------------------------------------

    @login_required
    def on_account_delete(self: Portal, request: Request) -> Response:
        user = current_user(request)
        client = self.client()
        resume = erase.is_deleting(client, user)
        if self._is_admin_account(user):
            return self.render(request, "account_delete.html", status=403,
                               error="The administrator account cannot be deleted.")
        if request.method != "POST":
            return self.render(request, "account_delete.html", resume=resume)
        if not resume:
            # The account is marked before anything goes, and from then on it has
            # no password: a retry needs only this session (see shards.model.erase).
            if _field(request, "confirm", 64).strip().lower() != user:
                return self.render(request, "account_delete.html", status=400,
                                   error="Type your user name to confirm.")
            refused = self._check_password(request, user, template="account_delete.html")
            if refused is not None:
                return refused
        self.sessions.revoke_others(user, keep=request.session)
        try:
            erase.erase_account(client, user, domains=self.config.site.domains,
                                end_sessions=lambda: self.sessions.revoke_all(user),
                                keep_rows=[index_row(user)])
        except CannotDelete as exc:
            return self.render(request, "account_delete.html", status=http_status(exc),
                               error=http_message(exc))
        request.session = self.sessions.logout(request.session)
        return self.render(request, "account_deleted.html", name=user)

    def _is_admin_account(self: Portal, user: str) -> bool:
        return user == self.config.site.admin_user or accounts.is_admin(self.client(), user)

    def _check_password(self: Portal, request: Request, user: str,
                        template: str = "account.html") -> Response | None:
        """None if the form's password is ``user``'s; else the page to answer with."""
        verdict = ratelimit.check_password(self.client(), user, _field(request, "password"),
                                           request.remote_addr or "?", self.auth_limits)
        if verdict.right and not verdict.limited:
            return None
        status, error = 403, "The password is not right."
        if verdict.limited:
            status, error = 429, "Too many wrong passwords. Try again later."
        if template == "account.html":
            response = self.on_account(request, status=status, error=error)
        else:
            response = self.render(request, template, status=status, error=error)
        if verdict.limited:
            response.headers["Retry-After"] = str(max(1, math.ceil(verdict.retry_after)))
        return response
