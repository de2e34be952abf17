"""The cluster file's ``[web]`` table: scheme, cookie domain, trusted proxies, upload size."""

from __future__ import annotations

import dataclasses

import pytest

from portal.config import PortalConfig, web_settings
from raftkv.cluster import ClusterConfig, GroupConfig, ReplicaConfig
from raftkv.errors import ConfigError


def _config(**web) -> PortalConfig:
    replica = ReplicaConfig(name="g1a", group=1, raft="127.0.0.1:1", client="127.0.0.1:2")
    cluster = ClusterConfig(name="unit", groups=(GroupConfig(id=1, replicas=(replica,)),),
                            secret=b"s" * 32, tables={"web": web})
    config = PortalConfig(cluster=cluster, **web_settings(cluster.table("web")))
    config.validate()
    return config


def test_defaults_keep_plain_http_working():
    config = _config()
    assert (config.scheme, config.cookie_domain, config.trusted_proxies) == ("http", None, ())
    assert not config.cookie_secure


def test_all_keys_are_parsed():
    config = _config(scheme="HTTPS", cookie_domain="Example.ORG",
                     trusted_proxies=["10.0.0.1", "192.168.0.0/16", "::1"])
    assert config.scheme == "https" and config.cookie_secure
    assert config.cookie_domain == "example.org"
    assert config.trusted_proxies == ("10.0.0.1", "192.168.0.0/16", "::1")


def test_the_largest_upload_is_set_in_bytes():
    assert _config().max_upload == 256 * 1024 * 1024
    assert _config(max_upload=4 << 30).max_upload == 4 << 30


@pytest.mark.parametrize("web", [
    {"schem": "https"},                        # a typo must not silently mean "http"
    {"scheme": "ftp"},
    {"scheme": True},
    {"cookie_domain": "exa mple.org"},
    {"cookie_domain": "example.org; Path=/x"},
    {"cookie_domain": 3},
    {"trusted_proxies": "10.0.0.1"},           # a string, not a list
    {"trusted_proxies": ["10.0.0.300"]},
    {"trusted_proxies": ["proxy.example.org"]},
    {"trusted_proxies": [10]},
    {"max_upload": "1G"},                      # bytes, not a size with a unit
    {"max_upload": 512},
    {"max_upload": True},
])
def test_bad_web_tables_are_refused(web):
    with pytest.raises(ConfigError):
        _config(**web)


def test_validate_checks_directly_built_configs():
    config = dataclasses.replace(_config(), scheme="gopher")
    with pytest.raises(ConfigError):
        config.validate()
