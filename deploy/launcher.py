"""``raftcloud``: launch a host's share of the cluster and supervise it.

``raftcloud up`` starts every process the cluster file places on this host,
waits until each answers, prints the URLs and one ready line, and stops them all
on Ctrl-C or SIGTERM.  It restarts nothing by itself.  While it runs it serves
a small control API (for the admin console and for ``raftcloud status|down``)::

    GET  /processes                  -> [{"name", "kind", "alive", "pid", "addr"}, ...]
    POST /processes/<name>/stop      -> kill -9: a real crash
    POST /processes/<name>/start     -> spawn it again; it recovers from its data dir
    POST /shutdown                   -> stop everything, like Ctrl-C

Every call needs ``Authorization: Bearer <token>``, the token being derived from
the cluster secret (:func:`shards.control.control_token`, which the admin
console's client uses too).  The launcher imports none of the apps: it reads
the cluster file (:mod:`deploy.processes`) and spawns processes.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import signal
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import click

from raftkv.boundedhttp import BoundedHTTPServer, BoundedRequestHandler
from raftkv.cluster import SECRET_FILE_ENV, load_cluster, split_addr
from raftkv.errors import ConfigError
from shards.control import control_addresses, control_token
from shards.site import Site

from .processes import process_specs, ready_lines
from .procs import Supervisor, wait_ready

DEFAULT_CONFIG = Path(__file__).with_name("local.toml")


def _secret_file(data_dir: Path) -> Path:
    """The cluster secret for this data dir, made on first use (never committed anywhere)."""
    path = data_dir / "cluster.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path


def _admin_password(data_dir: Path) -> tuple[Path, str | None]:
    """The first admin's password file; the password is returned only when just made."""
    path = data_dir / "admin.password"
    if path.exists():
        return path, None
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    return path, password


# The control API serves a few operators: a request head must arrive within
# this many seconds, and few connections are held (raftkv/boundedhttp.py).
CONTROL_HEAD_TIMEOUT = 10.0
CONTROL_MAX_CONNECTIONS = 32


class _ControlHandler(BoundedRequestHandler):
    supervisor: Supervisor
    token: str
    on_shutdown: threading.Event

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return True
        self._reply(401, {"error": "unauthorized"})
        return False

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        if self.path == "/processes":
            self._reply(200, self.supervisor.describe())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        parts = self.path.strip("/").split("/")
        if parts == ["shutdown"]:
            self._reply(202, {"ok": True})
            self.on_shutdown.set()
        elif len(parts) == 3 and parts[0] == "processes" and parts[2] in ("stop", "start"):
            name, verb = parts[1], parts[2]
            if name not in self.supervisor.names():
                self._reply(404, {"error": f"no process {name!r} on this host"})
                return
            if verb == "stop":
                self.supervisor.crash(name)
            else:
                self.supervisor.start(name)
            self._reply(200, {"ok": True, "process": name, "did": verb})
        else:
            self._reply(404, {"error": "not found"})


def _serve_control(addr: str, supervisor: Supervisor, token: str, on_shutdown: threading.Event,
                   *, head_timeout: float = CONTROL_HEAD_TIMEOUT,
                   max_connections: int = CONTROL_MAX_CONNECTIONS) -> BoundedHTTPServer:
    handler = type("Handler", (_ControlHandler,), {
        "supervisor": supervisor, "token": token, "on_shutdown": on_shutdown})
    server = BoundedHTTPServer(split_addr(addr), handler, head_timeout=head_timeout,
                               io_timeout=head_timeout, max_connections=max_connections)
    threading.Thread(target=server.serve_forever, daemon=True, name="control").start()
    return server


@click.group()
def main() -> None:
    """Run a raftcloud cluster, or one host's share of it."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="The cluster file.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var"), show_default=True, help="Where every process keeps its data.")
@click.option("--host", default=None, help="Start only this host's processes (default: all).")
def up(config_path: Path, data_dir: Path, host: str | None) -> None:
    """Start the cloud in the foreground; Ctrl-C stops it."""
    data_dir = data_dir.resolve()
    config_path = config_path.resolve()
    # Journals, chunks, logs, keys: nobody but this user reads them.  Every child
    # inherits the umask; a data dir made by an older version is closed too.
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    env = {"RAFTCLOUD_CONFIG": str(config_path)}
    try:
        cluster = load_cluster(config_path)
    except ConfigError:  # no secret given: make one for this data dir
        env[SECRET_FILE_ENV] = str(_secret_file(data_dir))
        os.environ[SECRET_FILE_ENV] = env[SECRET_FILE_ENV]
        cluster = load_cluster(config_path)
    try:
        everything = process_specs(cluster, config_path, data_dir, None)
        control_addr = control_addresses(cluster).get(host or "local")
        admin_user = Site.of(cluster).admin_user
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    password_file, new_password = _admin_password(data_dir)
    env["RAFTCLOUD_ADMIN_PASSWORD_FILE"] = str(password_file)

    supervisor = Supervisor([s for s in everything if host is None or s.host == host],
                            data_dir / "logs", env)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    control = None
    try:
        if control_addr:
            control = _serve_control(control_addr, supervisor, control_token(cluster.secret), stop)
        # Start everything at once: replicas elect a leader together, and the
        # apps wait for the store by themselves.
        for spec in supervisor.specs:
            supervisor.start(spec.name)
        try:
            wait_ready(supervisor, stop, timeout=90)
        except RuntimeError as exc:
            raise click.ClickException(f"{exc}: {data_dir / 'logs'}") from None
        if stop.is_set():
            return
        _print_ready(ready_lines(everything), control_addr, admin_user, new_password, data_dir)
        while not stop.wait(1.0):
            pass
    finally:
        click.echo("raftcloud: stopping", err=True)
        supervisor.stop_all()
        if control is not None:
            control.shutdown()


def _print_ready(lines: list[str], control_addr: str | None, admin_user: str,
                 new_password: str | None, data_dir: Path) -> None:
    for line in lines:
        click.echo(line)
    if control_addr:
        click.echo(f"  control:    http://{control_addr}/processes")
    if new_password:
        click.echo(f"  admin login: {admin_user} / {new_password}  (shown once)")
    else:
        click.echo(f"  admin login: {admin_user} / see {data_dir / 'admin.password'}")
    click.echo("raftcloud is ready", err=False)
    sys.stdout.flush()


def _control_call(config_path: Path, data_dir: Path, method: str, path: str) -> Any:
    os.environ.setdefault(SECRET_FILE_ENV, str(data_dir.resolve() / "cluster.secret"))
    cluster = load_cluster(config_path)
    addr = control_addresses(cluster).get("local")
    if not addr:
        raise click.ClickException("the cluster file names no control address")
    request = urllib.request.Request(f"http://{addr}{path}", method=method, headers={
        "Authorization": f"Bearer {control_token(cluster.secret)}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)
    except OSError as exc:
        raise click.ClickException(f"no raftcloud supervisor at {addr}: {exc}") from exc


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var"))
def status(config_path: Path, data_dir: Path) -> None:
    """Show the processes of a running `raftcloud up`."""
    for proc in _control_call(config_path, data_dir, "GET", "/processes"):
        state = "up" if proc["alive"] else "DOWN"
        click.echo(f"{proc['name']:12} {proc['kind']:9} {state:5} {proc['addr']}")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var"))
def down(config_path: Path, data_dir: Path) -> None:
    """Stop a running `raftcloud up`."""
    _control_call(config_path, data_dir, "POST", "/shutdown")
    click.echo("raftcloud: stopping")


if __name__ == "__main__":
    main()
