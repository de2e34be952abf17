"""Several hosts on one machine: one network namespace per host on a private bridge.

As docs/testing.md says: the bridge gets its own address before anything is
started, so no packet for the lab's 10.x subnet ever leaves by the default
route.  A partition is a pair of blackhole routes (no iptables needed): the two
hosts' packets to each other are dropped at the sender, while the test process
on the bridge still reaches both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# ``ip netns exec NAME`` mounts the files of /etc/netns/NAME over /etc's for the command:
# a lab's own /etc/hosts, so its hosts find each other by name (ip-netns(8)).
NETNS_ETC = Path("/etc/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


class NetnsLab:
    """``hosts`` namespaces named ``<prefix>1..N``, addresses 10.201.<subnet>.1..N."""

    def __init__(self, hosts: int) -> None:
        tag = os.getpid() % 10000
        self.prefix = f"rk{tag}h"
        self.bridge = f"rk{tag}br"
        self.subnet = f"10.201.{tag % 250}"
        self.hosts = [f"{self.prefix}{i}" for i in range(1, hosts + 1)]
        self._cuts: list[tuple[str, str]] = []

    @staticmethod
    def available() -> bool:
        """Root with iproute2, and namespaces allowed here."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return False
        probe = f"rkprobe{os.getpid() % 10000}"
        if _ip("netns", "add", probe, check=False).returncode != 0:
            return False
        _ip("netns", "del", probe, check=False)
        return True

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", host]

    def up(self) -> None:
        self.down()  # what a killed run with the same names may have left behind
        # Another lab (another pid, the same pid % 250) may hold the subnet: two bridges
        # with one /24 would send our packets to the wrong one.  Take the next free one.
        for _ in range(250):
            if not _ip("-4", "route", "show", f"{self.subnet}.0/24").stdout.strip():
                break
            self.subnet = f"10.201.{(int(self.subnet.rsplit('.', 1)[1]) + 1) % 250}"
        # The bridge's own address first: from then on the subnet is routed here.
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, host in enumerate(self.hosts, start=1):
            veth = f"{self.prefix}v{i}"
            _ip("netns", "add", host)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", host, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "up")
            _ip("-n", host, "link", "set", "lo", "up")

    def name_hosts(self, names: dict[str, str]) -> None:
        """Every host of the lab resolves each name of ``names`` to its address (host name
        -> lab host), through its own /etc/hosts; removed again by :meth:`down`."""
        lines = ["127.0.0.1 localhost"] + [f"{self.address(host)} {name}"
                                           for name, host in names.items()]
        for host in self.hosts:
            (NETNS_ETC / host).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / host / "hosts").write_text("\n".join(lines) + "\n")

    def cut(self, a: str, b: str) -> None:
        """Drop everything between hosts ``a`` and ``b``, both ways."""
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src, "route", "add", "blackhole", f"{self.address(dst)}/32")
            self._cuts.append((src, dst))

    def isolate(self, host: str) -> None:
        """Cut ``host`` off from every other host (the bridge still reaches it)."""
        for other in self.hosts:
            if other != host:
                self.cut(host, other)

    def heal(self) -> None:
        for src, dst in self._cuts:
            _ip("-n", src, "route", "del", "blackhole", f"{self.address(dst)}/32", check=False)
        self._cuts.clear()

    def down(self) -> None:
        """Kill whatever still runs in the namespaces, then remove them and the bridge."""
        for host in self.hosts:
            pids = _ip("netns", "pids", host, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", host, check=False)
            shutil.rmtree(NETNS_ETC / host, ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)
