"""Who a connection counts as, for the per-address caps of every listener (smtpd, imapd).

Here, below the apps, so that sibling listeners share one rule rather than copies.
"""

from __future__ import annotations

import ipaddress
from typing import Any

IPV6_PREFIX = 56  # bits of an IPv6 address counted as one client (an end site's allocation)


def address_key(peer: Any) -> str:
    """The key a client is counted under: its IP address, an IPv6 /56 as one."""
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)
