"""Real gunicorn frontends for integration tests, and a plain HTTP client with cookies.

A frontend runs as deployed: ``gunicorn -c portal/gunicorn_conf.py portal:create_app()``,
configured from the environment (a cluster file with its ``[[frontend]]`` table, the
cluster's secret file), on a fresh loopback port.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ._procs import Proc, free_port, port_open, python_cmd, wait_for

if TYPE_CHECKING:
    from .cluster import KVCluster

GUNICORN_CONF = "python:portal.gunicorn_conf"


def frontend_table(name: str, addr: str) -> str:
    return f'\n[[frontend]]\nname = "{name}"\nlisten = "{addr}"\n'


def gunicorn(name: str, addr: str, config: Path, secret_file: Path, log_dir: Path, *,
             workers: int = 1, threads: int = 4, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> Proc:
    """The frontend ``name`` of ``config`` as a process on ``addr`` (not started yet)."""
    return Proc(name, python_cmd("gunicorn", "-c", GUNICORN_CONF, "--bind", addr,
                                 "--workers", str(workers), "--threads", str(threads),
                                 "portal:create_app()"), log_dir, env={
        **(env or {}), "RAFTCLOUD_CONFIG": str(config), "RAFTCLOUD_FRONTEND": name,
        "RAFTCLOUD_SECRET_FILE": str(secret_file)}, cwd=cwd)


@contextmanager
def serving(procs: Sequence[tuple[Proc, str]]) -> Iterator[None]:
    """Start each (process, address), wait until every one listens, stop them at the end;
    on a failure inside, their logs are printed first."""
    try:
        for proc, addr in procs:
            proc.start()
            wait_for(lambda a=addr: port_open(a), 30, f"{proc.name} to listen")
        yield
    except BaseException:
        for proc, _ in procs:
            print(f"--- {proc.name}\n{proc.log()}")
        raise
    finally:
        for proc, _ in procs:
            proc.stop()


@contextmanager
def running_frontend(kv: KVCluster, root: Path, name: str, *, workers: int = 1, threads: int = 4,
             env: dict[str, str] | None = None) -> Iterator[tuple[str, Proc]]:
    """One gunicorn frontend named ``name`` on the store of ``kv``: (its address, its process)."""
    addr = f"127.0.0.1:{free_port()}"
    config = root / "cluster.toml"
    config.write_text(kv.path.read_text() + frontend_table(name, addr))
    proc = gunicorn(name, addr, config, kv.root / "secret", root, workers=workers,
                    threads=threads, env=env)
    with serving([(proc, addr)]):
        yield addr, proc


Answer = tuple[int, dict[str, str], bytes]  # status, headers (names in lower case), body


class CookieClient:
    """Someone's cookies on one frontend, over plain HTTP/1.1: a new connection per
    request, no redirect followed."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | str | None = None,
                ctype: str | None = None) -> Answer:
        """A body without ``ctype`` is sent as a form (x-www-form-urlencoded)."""
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} \
            if self.cookies else {}
        if body is not None:
            headers["Content-Type"] = ctype or "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body, headers)
            answer = conn.getresponse()
            data = answer.read()
            for cookie in answer.headers.get_all("Set-Cookie") or []:
                name, _, rest = cookie.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)
