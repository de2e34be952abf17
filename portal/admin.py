"""The admin console: every registered process and every storage replica, alive or down.

The admin flag is re-read from the account on every visit (the one in the
session is only for drawing the nav bar), so taking it away takes effect at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import Forbidden

from raftkv.errors import UnavailableError
from shards.model import accounts, registry

from .auth import current_user, login_required

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request


class AdminViews:
    """Mixin of :class:`portal.app.Portal`: the admin pages."""

    @login_required
    def on_admin(self: Portal, request: Request) -> Response:
        client = self.client()
        if not accounts.is_admin(client, current_user(request)):
            raise Forbidden("The admin console is for administrators only.")
        # Each half is shown even when the other cannot be had: the registry
        # lives in the config group, the replicas answer for themselves.
        nodes: list[Any] | None
        try:
            nodes = sorted(registry.list_nodes(client), key=lambda n: (n.kind, n.name))
        except UnavailableError:
            nodes = None
        try:
            replicas: list[dict[str, Any]] | None = sorted(
                client.status(), key=lambda r: (r.get("group", 0), r.get("name", "")))
        except UnavailableError:
            replicas = None
        return self.render(request, "admin.html", nodes=nodes, replicas=replicas,
                           now=time.time())
