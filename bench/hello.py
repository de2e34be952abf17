"""The least a werkzeug app can do, served by the same gunicorn as the portal (bench.portal)."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response


@Request.application
def app(request: Request) -> Response:
    return Response("Hello, World!", mimetype="text/plain")
