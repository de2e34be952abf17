"""Forwarded headers count only from trusted proxies; the listeners' limits parse strictly."""

from __future__ import annotations

import pytest

from balancer.settings import BalancerSettings
from portal.config import web_listener_limits as listener_limits
from portal.proxies import TrustedProxies
from raftkv.boundedhttp import ListenerLimits
from raftkv.errors import ConfigError
from shards.site import web_scheme


def seen(proxies: tuple[str, ...], peer: str, **headers: str) -> dict:
    """The environ the app behind the middleware sees for one request."""
    got: dict = {}

    def app(environ, start_response):
        got.update(environ)
        return []

    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http",
               **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
    TrustedProxies(app, proxies)(environ, lambda *a: None)
    return got


def test_an_untrusted_peer_keeps_its_address_and_loses_the_headers():
    env = seen(("10.0.0.9",), "203.0.113.7", x_forwarded_for="198.51.100.1",
               x_forwarded_proto="https", forwarded="for=1.2.3.4")
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "http"
    assert not any(k in env for k in ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                                      "HTTP_FORWARDED"))


def test_no_trusted_proxies_means_loopback_is_not_trusted_either():
    env = seen((), "127.0.0.1", x_forwarded_for="198.51.100.1")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and "HTTP_X_FORWARDED_FOR" not in env


@pytest.mark.parametrize(("chain", "client"), [
    ("198.51.100.1", "198.51.100.1"),
    ("6.6.6.6, 198.51.100.1", "198.51.100.1"),             # the client wrote the left entry
    ("198.51.100.1, 10.0.0.8", "198.51.100.1"),            # through two of our proxies
    ("10.0.0.8", "10.0.0.8"),                              # only proxies: the left-most
    ("198.51.100.1, not-an-address", "10.0.0.9"),          # garbage: keep the peer
    ("", "10.0.0.9"),
])
def test_a_trusted_proxy_names_the_right_most_untrusted_client(chain, client):
    env = seen(("10.0.0.9", "10.0.0.8/31"), "10.0.0.9", x_forwarded_for=chain)
    assert env["REMOTE_ADDR"] == client


@pytest.mark.parametrize(("proto", "scheme"), [("https", "https"), ("http, https", "https"),
                                               ("https, http", "http"), ("gopher", "http")])
def test_a_trusted_proxy_sets_the_scheme(proto, scheme):
    assert seen(("10.0.0.0/8",), "10.1.2.3", x_forwarded_proto=proto)["wsgi.url_scheme"] == scheme


def test_a_bad_trusted_proxy_entry_is_a_config_error():
    with pytest.raises(ConfigError):
        TrustedProxies(lambda e, s: [], ("10.0.0.300",))


def test_listener_limits_from_the_web_table():
    assert listener_limits({"scheme": "https"}) == ListenerLimits()
    assert listener_limits({"head_timeout": 2, "max_connections": 50}) == ListenerLimits(
        head_timeout=2, max_connections=50)
    assert listener_limits({"min_rate": 1000}).min_rate == 1000
    for bad in ({"head_timeout": 0}, {"io_timeout": "30"}, {"max_connections": 1.5},
                {"max_connections": True}, {"max_connections": 1}, {"min_rate": 0},
                {"min_rate": "4k"}):
        with pytest.raises(ConfigError):
            listener_limits(bad)


def test_balancer_settings_from_its_tables():
    assert BalancerSettings.from_table({}) == BalancerSettings()
    settings = BalancerSettings.from_table({"head_timeout": 3, "max_connections": 9},
                                           scheme="https")
    assert (settings.scheme, settings.limits.head_timeout, settings.limits.max_connections) \
        == ("https", 3.0, 9)
    with pytest.raises(ConfigError):
        web_scheme("ftp")
    for balancer in ({"head_timeout": -1}, {"max_connections": "many"}):
        with pytest.raises(ConfigError):
            BalancerSettings.from_table(balancer)
