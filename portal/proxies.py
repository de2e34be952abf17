"""Believe ``X-Forwarded-For`` and ``X-Forwarded-Proto`` from the proxies the cluster file names,
and from no one else.

Per-address limits (failed logins, signups) key on ``REMOTE_ADDR``.  Behind a
proxy that is the proxy's address, so every client would share one budget;
believing the header from anyone would let each guess claim a fresh address.
So: only when the peer is in ``[web] trusted_proxies`` does the client address
become the right-most ``X-Forwarded-For`` entry that is not itself a trusted
proxy (entries left of it were written by the client and prove nothing), and
the scheme the right-most ``X-Forwarded-Proto``.  From any other peer these
headers are removed, so nothing further in may read them by mistake.

werkzeug's ``ProxyFix`` trusts a fixed number of hops whoever the peer is, so
it cannot express this.  gunicorn's ``forwarded_allow_ips`` is set from the
same list (portal/gunicorn_conf.py), for the scheme gunicorn derives itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from raftkv.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Every forwarding header an untrusted peer might use to pass itself off.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                      "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")


def parse_networks(proxies: Iterable[str]) -> tuple[_Network, ...]:
    """:raises ConfigError: an entry that is neither an address nor a network."""
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies)
    except ValueError as exc:
        raise ConfigError(f"web.trusted_proxies: {exc}") from None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """WSGI middleware: forwarding headers are honoured from trusted peers, dropped from others."""

    def __init__(self, app: WSGIApplication, proxies: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(proxies)

    def trusted(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in net for net in self.networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.networks and self.trusted(environ.get("REMOTE_ADDR") or ""):
            self._apply(environ)
        else:
            for name in FORWARDING_HEADERS:
                environ.pop(name, None)
        return self.app(environ, start_response)

    def _apply(self, environ: WSGIEnvironment) -> None:
        hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        # Right to left, past our own proxies, to the first address they did not write.
        while hops and self.trusted(hops[-1]) and len(hops) > 1:
            hops.pop()
        if hops and _address(hops[-1]) is not None:
            environ["REMOTE_ADDR"] = str(_address(hops[-1]))
        protos = [p.strip().lower() for p in environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")]
        if protos[-1] in ("http", "https"):
            environ["wsgi.url_scheme"] = protos[-1]
