"""Account pages: signup, login, logout, change password; and the login_required guard.

Failed logins are counted in the store (:mod:`shards.model.ratelimit`), per
account and per client address, so the limits hold however many frontends an
attacker spreads the guesses over.  The address is the TCP peer: the balancer
redirects rather than proxies, so no forwarded-for header is ever trusted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from werkzeug.exceptions import Forbidden
from werkzeug.utils import redirect

from shards.model import accounts, ratelimit

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request

# Names people trust in mail (RFC 2142 roles); nobody gets them by signing up.
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


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


class AuthViews:
    """Mixin of :class:`portal.app.Portal`: the account pages."""

    def on_signup(self: Portal, request: Request) -> Response:
        if request.session.logged_in:
            return redirect("/", 303)
        if request.method != "POST":
            return self.render(request, "signup.html")
        name = request.form.get("username", "").strip().lower()
        password = request.form.get("password", "")
        error = None
        if name in RESERVED_NAMES or name == self.config.cluster.admin_user:
            error = f"The name {name!r} is reserved."
        elif password != request.form.get("password2", ""):
            error = "The two passwords differ."
        else:
            try:
                accounts.create_user(self.client(), name, password)
            except accounts.AccountError as exc:
                error = str(exc)
        if error:
            return self.render(request, "signup.html", status=400, error=error, username=name)
        request.session = self.sessions.login(request.session, name, admin=False)
        return redirect("/", 303)

    def on_login(self: Portal, request: Request) -> Response:
        next_url = safe_next(request.values.get("next"))
        if request.session.logged_in:
            return redirect(next_url, 303)
        if request.method != "POST":
            return self.render(request, "login.html", next=next_url)
        name = request.form.get("username", "").strip().lower()
        client = self.client()
        config = self.config
        limits = [(ratelimit.address_key(request.remote_addr or "?"), config.login_limit_address)]
        if accounts.valid_username(name):
            limits.append((ratelimit.account_key(name), config.login_limit_account))
        wait = max(ratelimit.blocked_for(client, key, limit=limit, window=config.login_window)
                   for key, limit in limits)
        if wait > 0:
            response = self.render(
                request, "login.html", status=429, next=next_url, username=name,
                error=f"Too many failed log-ins. Try again in {math.ceil(wait / 60)} minute(s).")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        if not accounts.verify_password(client, name, request.form.get("password", "")):
            for key, _ in limits:
                ratelimit.record_failure(client, key, window=config.login_window)
            # One message for unknown names and wrong passwords: no probing for accounts.
            return self.render(request, "login.html", status=403, next=next_url, username=name,
                               error="Wrong user name or password.")
        ratelimit.reset(client, ratelimit.account_key(name))
        return self.complete_login(request, name, next_url)

    def on_logout(self: Portal, request: Request) -> Response:
        request.session = self.sessions.logout(request.session)
        return redirect("/", 303)

    @login_required
    def on_password(self: Portal, request: Request) -> Response:
        if request.method != "POST":
            return self.render(request, "password.html")
        user = current_user(request)
        new = request.form.get("new", "")
        if new != request.form.get("new2", ""):
            return self.render(request, "password.html", status=400,
                               error="The two new passwords differ.")
        try:
            accounts.change_password(self.client(), user, request.form.get("old", ""), new)
        except accounts.AccountError as exc:
            return self.render(request, "password.html", status=400,
                               error=str(exc))
        # A new password ends every session, including ones a thief may hold;
        # this browser gets a fresh one so the user stays logged in here.
        self.sessions.revoke_all(user)
        request.session = self.sessions.login(request.session, user, admin=request.session.admin)
        return self.render(request, "password.html", done=True)

    def complete_login(self: Portal, request: Request, name: str, next_url: str) -> Response:
        """The password was right: start the session (and any further sign-in step)."""
        request.session = self.sessions.login(request.session, name,
                                              admin=accounts.is_admin(self.client(), name))
        return redirect(next_url, 303)
