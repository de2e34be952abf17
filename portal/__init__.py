"""portal -- the web frontends (top layer): accounts, webmail, drive and admin console.

A werkzeug WSGI app served by gunicorn's gthread workers; it keeps no state
of its own and reaches the store only through :mod:`shards`.  gunicorn runs
``portal:create_app()``, which reads its configuration from the environment
(:meth:`PortalConfig.from_env`); tests pass a :class:`PortalConfig`.
"""

from __future__ import annotations

from collections.abc import Callable

from shards import Client

from .app import Portal as Portal
from .config import PortalConfig as PortalConfig
from .proxies import TrustedProxies


def create_app(config: PortalConfig | None = None, *,
               client_factory: Callable[[], Client] | None = None) -> Portal:
    """Build the portal app.

    :param config: the portal's configuration; ``None`` reads it from the
        environment (the gunicorn entry point).
    :param client_factory: makes the store client, once per process; by
        default a :class:`shards.Client` for ``config.cluster``.
    :raises raftkv.errors.ConfigError: the configuration cannot work.
    """
    if config is None:
        config = PortalConfig.from_env()
    config.validate()
    cluster = config.cluster
    app = Portal(config, client_factory or (lambda: Client(cluster)))
    # Outermost, so every part of the app (static files too) sees the real client.
    app._wsgi = TrustedProxies(app._wsgi, config.trusted_proxies)  # noqa: SLF001
    app.start()
    return app
