"""etcd for side-by-side runs: 3 members on loopback, and a small JSON-gateway client.

Uses Debian's ``etcd-server`` (3.4).  The client talks to etcd's v3 gRPC JSON
gateway (``POST /v3/kv/put``, ``/v3/kv/range``) over one keep-alive
``http.client`` connection per thread, so the bench needs no gRPC stack.  A
range request is linearizable unless it asks for ``serializable``.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from tests._procs import Proc, free_port, wait_for

MEMBERS = 3


class EtcdError(RuntimeError):
    """etcd answered with an HTTP error, or not at all."""


def etcd_binary() -> str | None:
    """The path of ``etcd``, or None if it is not installed."""
    return shutil.which("etcd")


class EtcdCluster:
    """Three etcd members as processes under ``root``, each with its own data dir."""

    def __init__(self, root: Path, binary: str = "etcd") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        peer_ports = [free_port() for _ in range(MEMBERS)]
        self.client_ports = [free_port() for _ in range(MEMBERS)]
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(peer_ports))
        self.procs = []
        for i, (peer, client) in enumerate(zip(peer_ports, self.client_ports, strict=True)):
            argv = [binary, "--name", f"e{i}", "--data-dir", str(root / f"e{i}"),
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--listen-client-urls", f"http://127.0.0.1:{client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{client}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "raftcloud-bench",
                    "--logger", "zap", "--log-level", "warn"]
            self.procs.append(Proc(f"etcd{i}", argv, root))

    def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until all report healthy."""
        for proc in self.procs:
            proc.start()
        for port in self.client_ports:
            wait_for(lambda p=port: _healthy(p), timeout, f"etcd on port {port} to be healthy",
                     interval=0.1)

    def leader_port(self) -> int:
        """The client port of the member that leads (the gateway sends uint64 as strings)."""
        for port in self.client_ports:
            status = _request(port, "/v3/maintenance/status", {})
            if status["header"]["member_id"] == status["leader"]:
                return port
        raise EtcdError("no etcd member says it is the leader")

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.procs)


class EtcdClient:
    """Puts and linearizable gets; one persistent HTTP connection per calling thread."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self._local = threading.local()

    def put(self, key: str, value: bytes) -> None:
        self._post("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(value)})

    def get(self, key: str) -> bytes | None:
        kvs = self._post("/v3/kv/range", {"key": _b64(key.encode())}).get("kvs")
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.port, self.timeout)
        try:
            return _exchange(conn, path, body)
        except (OSError, http.client.HTTPException):
            conn.close()
            del self._local.conn
            raise


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _connect(port: int, timeout: float) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.connect()
    # http.client sends headers and a bytes body in one write, but let small
    # requests leave at once anyway, as the raftkv client's do.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _exchange(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise EtcdError(f"{path}: HTTP {response.status}: {data[:200]!r}")
    return json.loads(data)


def _request(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn = _connect(port, 2.0)
    try:
        return _exchange(conn, path, body)
    finally:
        conn.close()


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read()).get("health") == "true"
    finally:
        conn.close()
