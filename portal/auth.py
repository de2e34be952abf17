"""Account pages: signup, login, logout, change password; and the login_required guard.

Password attempts go through :func:`shards.model.ratelimit.check_password`,
the same limiter SMTP AUTH uses, counted in the store per client address, per
(account, address) and per account, so the limits hold however many frontends
and protocols an attacker spreads the guesses over.  Signups are counted per
address too.  The address is ``request.remote_addr`` (the app believes a
forwarded-for header only from the proxies it trusts).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from werkzeug.exceptions import Forbidden
from werkzeug.utils import redirect

from raftkv.errors import ReadOnly
from shards.model import accounts, apppasswords, ratelimit
from shards.model.errors import AccountError
from shards.readonly import current_only

from .errors import http_message, http_status
from .pages import NOTICES, with_notice

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request

# Names people trust in mail (RFC 2142 roles); nobody gets them by signing up.
SIGN_IN_READ_ONLY = ("Signing in to this account is not possible right now: the part of the "
                     "storage cluster that holds it is recovering. Please try again in a few "
                     "minutes. If you are already signed in elsewhere, that session keeps "
                     "working, read-only.")
RESERVED_NAMES = frozenset({"postmaster", "abuse", "root", "hostmaster", "webmaster",
                            "mailer-daemon", "noreply", "no-reply", "admin", "administrator"})

View = Callable[..., "Response"]


def login_required(view: View) -> View:
    """Send anonymous visitors to the login form, coming back here afterwards."""

    @functools.wraps(view)
    def guarded(self: Portal, request: Request, **values: Any) -> Response:
        if not request.session.logged_in:
            return redirect("/login?next=" + quote(request.full_path.rstrip("?")), 303)
        return view(self, request, **values)

    return guarded


def current_user(request: Request) -> str:
    """The logged-in user's name, in a view behind :func:`login_required`."""
    if request.session.user is None:
        raise Forbidden("Please log in first.")
    return request.session.user


# RFC 3986's reserved characters and "%": kept as they are; anything else
# (spaces, non-ASCII, quotes) is percent-encoded, so the Location we emit is
# plain ASCII that no server or browser rewrites.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%"


def safe_next(target: str | None) -> str:
    """Where to go after logging in: ``target`` as a same-site path, else ``/``.

    Judged on what a browser would make of it, not on the raw string: browsers
    drop tabs and newlines anywhere in a URL and read ``\\`` as ``/``, so
    ``/<TAB>/evil.example`` is ``//evil.example``, another site.  Any control
    character or backslash is refused outright (no legitimate path of ours has
    one), and the value returned is exactly the header the server emits.
    """
    if not isinstance(target, str) or not target.startswith("/"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    location = quote(target, safe=_URL_SAFE)
    parts = urlsplit(location)
    if parts.scheme or parts.netloc or location.startswith("//"):
        return "/"
    return location


def describe_wait(seconds: float) -> str:
    """A wait as a person reads it: "40 seconds", "3 minutes"."""
    if seconds < 90:
        count, unit = max(1, math.ceil(seconds)), "second"
    else:
        count, unit = math.ceil(seconds / 60), "minute"
    return f"{count} {unit}{'s' if count != 1 else ''}"


class AuthViews:
    """Mixin of :class:`portal.app.Portal`: the account pages."""

    @functools.cached_property
    def auth_limits(self: Portal) -> ratelimit.Limits:
        """The cluster file's ``[auth]`` limits (checked at startup by PortalConfig.validate)."""
        return ratelimit.Limits.from_table(self.config.cluster.table("auth"))

    def on_signup(self: Portal, request: Request) -> Response:
        if request.session.logged_in:
            return redirect("/", 303)
        if request.method != "POST":
            return self.render(request, "signup.html")
        name = request.form.get("username", "").strip().lower()
        password = request.form.get("password", "")
        error = None
        if name in RESERVED_NAMES or name == self.config.site.admin_user:
            error = f"The name {name!r} is reserved."
        elif password != request.form.get("password2", ""):
            error = "The two passwords differ."
        else:
            try:
                accounts.check_new_account(name, password)
                wait = ratelimit.take_signup_slot(self.client(), request.remote_addr or "?",
                                                  self.auth_limits)
                if wait > 0:
                    return self._limited(request, "signup.html", wait, username=name,
                                         error="Too many accounts were made from your address. "
                                         f"Try again in {describe_wait(wait)}.")
                accounts.create_user(self.client(), name, password)
            except AccountError as exc:
                return self.render(request, "signup.html", status=http_status(exc),
                                   error=http_message(exc), username=name)
        if error:
            return self.render(request, "signup.html", status=400, error=error, username=name)
        request.session = self.sessions.login(request.session, name, admin=False)
        return redirect(with_notice("/", "welcome"), 303)

    def on_login(self: Portal, request: Request) -> Response:
        next_url = safe_next(request.values.get("next"))
        if request.session.logged_in:
            return redirect(next_url, 303)
        if request.method != "POST":
            return self.render(request, "login.html", next=next_url)
        name = request.form.get("username", "").strip().lower()
        try:
            # The account is read through the log or not at all: a password checked
            # against a stale copy could be one changed since.  The first read finds
            # out fast if the account's group has lost its majority; the counters'
            # writes to it are then refused at once (shards.readonly).
            with current_only():
                accounts.user_exists(self.client(), name)
                verdict = ratelimit.check_password(self.client(), name,
                                                   request.form.get("password", ""),
                                                   request.remote_addr or "?", self.auth_limits)
                if verdict.right:
                    return self.complete_login(request, name, next_url)
        except ReadOnly:
            return self.render(request, "login.html", status=503, next=next_url, username=name,
                               error=SIGN_IN_READ_ONLY)
        if verdict.limited:
            return self._limited(request, "login.html", verdict.retry_after, next=next_url,
                                 username=name, error="Too many failed log-ins. "
                                 f"Try again in {describe_wait(verdict.retry_after)}.")
        # One message for unknown names and wrong passwords: no probing for accounts.
        return self.render(request, "login.html", status=403, next=next_url, username=name,
                           error="Wrong user name or password.")

    def _limited(self: Portal, request: Request, template: str, wait: float,
                 **context: Any) -> Response:
        """The form again with a 429 and a Retry-After: a limit holds, nothing was checked."""
        response = self.render(request, template, status=429, **context)
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response

    def on_logout(self: Portal, request: Request) -> Response:
        request.session = self.sessions.logout(request.session)
        return redirect(with_notice("/", "logged-out"), 303)

    @login_required
    def on_password(self: Portal, request: Request) -> Response:
        if request.method != "POST":
            return self.render(request, "password.html")
        user = current_user(request)
        new = request.form.get("new", "")
        if new != request.form.get("new2", ""):
            return self.render(request, "password.html", status=400,
                               error="The two new passwords differ.")
        old = request.form.get("old", "")
        try:
            accounts.check_password_rules(new)
        except AccountError as exc:
            return self.render(request, "password.html", status=http_status(exc),
                               error=http_message(exc))
        # The old password goes through the login's limiter first: a stolen
        # session must not be a way to guess it without limit and take over.
        verdict = ratelimit.check_password(self.client(), user, old,
                                           request.remote_addr or "?", self.auth_limits)
        if verdict.limited:
            return self._limited(request, "password.html", verdict.retry_after,
                                 error="Too many wrong passwords. "
                                 f"Try again in {describe_wait(verdict.retry_after)}.")
        if not verdict.right:
            return self.render(request, "password.html", status=400,
                               error="The current password is not correct.")
        try:
            accounts.change_password(self.client(), user, old, new)
        except AccountError as exc:
            return self.render(request, "password.html", status=http_status(exc),
                               error=http_message(exc))
        # A new password ends every session, including ones a thief may hold;
        # this browser gets a fresh one so the user stays logged in here.
        self.sessions.revoke_all(user)
        apppasswords.revoke_all(self.client(), user)
        request.session = self.sessions.login(request.session, user, admin=request.session.admin)
        return self.render(request, "password.html", done=True,
                           notice=NOTICES["password-changed"])

    def complete_login(self: Portal, request: Request, name: str, next_url: str) -> Response:
        """The password was right: start the session, or with two-factor sign-in on, ask
        for the code first (:mod:`portal.account`: a pending login, not a session)."""
        if self.needs_second_factor(name):
            return self.ask_for_code(request, name, next_url)
        self.start_session(request, name)
        return redirect(next_url, 303)
