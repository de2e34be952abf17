"""The host supervisors' control API (``raftcloud up``, in :mod:`deploy.launcher`): its
addresses, its token, and a client.

Each host's supervisor serves ``GET /processes`` and ``POST /processes/<name>/stop|start``
at the address the cluster file's ``[control]`` table gives for that host
(:func:`control_addresses`), behind ``Authorization: Bearer <token>``
(:func:`control_token`).  Both ends of the API use these two functions: the
launcher serves with them and the admin console calls with them.  They live
here, not in ``deploy/``, because the admin console (``portal/``) may not
import ``deploy/``, while ``deploy/`` sits above ``shards/`` and may import this.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from typing import Any
from urllib.parse import quote

from raftkv.cluster import ClusterConfig, derive_key, split_addr
from raftkv.errors import ConfigError, UnavailableError

__all__ = ["ControlError", "SupervisorClient", "control_addresses", "control_token",
           "supervisor_for"]


def control_token(secret: bytes) -> str:
    """The bearer token of every host supervisor's control API, derived from the secret."""
    return hmac.new(derive_key(secret, "control"), b"raftcloud-control",
                    hashlib.sha256).hexdigest()


def control_addresses(cluster: ClusterConfig) -> dict[str, str]:
    """The ``[control]`` table: host name -> its supervisor's ``host:port``.

    :raises ConfigError: a value that is not a ``host:port`` address.
    """
    addresses: dict[str, str] = {}
    for host, addr in cluster.table("control").items():
        if not isinstance(addr, str):
            raise ConfigError(f"control.{host} must be a host:port address, got {addr!r}")
        split_addr(addr)
        addresses[str(host)] = addr
    return addresses


class ControlError(UnavailableError):
    """The supervisor could not be reached, or refused the call."""


class SupervisorClient:
    """One host's supervisor.

    :param addr: its control address (``host:port``), from the cluster file.
    :param secret: the cluster secret.
    :param timeout: seconds for one call (a stop waits for the process to die).
    """

    def __init__(self, addr: str, secret: bytes, *, timeout: float = 5.0) -> None:
        self.addr = addr
        self._host, self._port = split_addr(addr)
        self._token = control_token(secret)
        self.timeout = timeout

    def _call(self, method: str, path: str) -> Any:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self._token}",
                                                "Content-Length": "0"})
            response = conn.getresponse()
            body = response.read(1 << 20)
        except OSError as exc:
            raise ControlError(f"no supervisor at {self.addr}: {exc}") from exc
        finally:
            conn.close()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if response.status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise ControlError(f"supervisor at {self.addr} answered {response.status}: "
                               f"{error or 'no reason given'}")
        return answer

    def processes(self) -> list[dict[str, Any]]:
        """``[{"name", "kind", "alive", "pid", "addr", ...}]`` of every process on that host."""
        answer = self._call("GET", "/processes")
        return [p for p in answer if isinstance(p, dict)] if isinstance(answer, list) else []

    def stop(self, name: str) -> None:
        """kill -9 the process: a real crash."""
        self._call("POST", f"/processes/{quote(name, safe='')}/stop")

    def start(self, name: str) -> None:
        """Start the process again (it recovers from its data directory)."""
        self._call("POST", f"/processes/{quote(name, safe='')}/start")


def supervisor_for(cluster: ClusterConfig, host: str, *,
                   timeout: float = 5.0) -> SupervisorClient:
    """The supervisor of ``host``.

    :raises ConfigError: the cluster file names no control address for it.
    """
    addr = control_addresses(cluster).get(host)
    if not addr:
        raise ConfigError(f"the cluster file names no supervisor ([control]) for host {host!r}")
    return SupervisorClient(addr, cluster.secret, timeout=timeout)
