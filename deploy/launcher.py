"""``raftcloud``: launch a host's share of the cluster and supervise it.

``raftcloud up`` starts every process the cluster file places on this host,
waits until each answers, prints the URLs and one ready line, and stops them all
on Ctrl-C or SIGTERM.  It restarts nothing by itself.  While it runs it serves
a small control API (for the admin console and for ``raftcloud status|down``)::

    GET  /processes                  -> [{"name", "kind", "alive", "pid", "addr"}, ...]
    GET  /supervisor                 -> {"pid", "data_dir", "config"}: this launcher
    POST /processes/<name>/stop      -> kill -9: a real crash
    POST /processes/<name>/start     -> spawn it again; it recovers from its data dir
    POST /shutdown                   -> stop everything, like Ctrl-C

Every call needs ``Authorization: Bearer <token>``, the token being derived from
the cluster secret (:func:`shards.control.control_token`, which the admin
console's client uses too).  The launcher imports none of the apps: it reads
the cluster file (:mod:`deploy.processes`) and spawns processes.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from raftkv.backupfile import BackupDamaged
from raftkv.boundedhttp import BoundedHTTPServer, BoundedRequestHandler
from raftkv.cluster import SECRET_FILE_ENV, ClusterConfig, split_addr
from raftkv.errors import ConfigError
from raftkv.logs import setup_logging
from raftkv.metrics import (
    DEFAULT_BASE_PORT,
    METRICS_ADDR_ENV,
    MULTIPROC_DIR_ENV,
    SCRAPE_FILE,
    base_port,
    scrape_config,
    targets,
)
from shards.cliopts import (
    EXIT_CODES_HELP,
    ExitCode,
    GlobalOption,
    fail,
    global_options,
    with_global_options,
)
from shards.control import control_addresses, control_token
from shards.locate import LOCAL_DATA_DIR, SECRET_NAME, Located, locate, nearest
from shards.restore import RestoreRefused, restore_backup
from shards.site import Site

from .logfiles import LogSettings
from .processes import process_specs, ready_lines
from .procs import ProcessSpec, Supervisor, wait_ready
from .running import DataDirLock, ports_in_use, wait_exited

DEFAULT_CONFIG = Path(__file__).with_name("local.toml")

log = logging.getLogger("deploy.launcher")


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
    about: dict[str, Any]   # GET /supervisor: this launcher's pid, data dir and cluster file

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
        elif self.path == "/supervisor":
            self._reply(200, self.about)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        parts = self.path.strip("/").split("/")
        if parts == ["shutdown"]:
            log.info("control API: shutdown")
            self._reply(202, {"ok": True})
            self.on_shutdown.set()
        elif len(parts) == 3 and parts[0] == "processes" and parts[2] in ("stop", "start"):
            name, verb = parts[1], parts[2]
            if name not in self.supervisor.names():
                self._reply(404, {"error": f"no process {name!r} on this host"})
                return
            log.info("control API: %s %s", verb, name)
            if verb == "stop":
                self.supervisor.crash(name)
            else:
                self.supervisor.start(name)
            self._reply(200, {"ok": True, "process": name, "did": verb})
        else:
            self._reply(404, {"error": "not found"})


def _serve_control(addr: str, supervisor: Supervisor, token: str, on_shutdown: threading.Event,
                   *, head_timeout: float = CONTROL_HEAD_TIMEOUT,
                   max_connections: int = CONTROL_MAX_CONNECTIONS,
                   about: dict[str, Any] | None = None) -> BoundedHTTPServer:
    handler = type("Handler", (_ControlHandler,), {
        "supervisor": supervisor, "token": token, "on_shutdown": on_shutdown,
        "about": about or {"pid": os.getpid()}})
    server = BoundedHTTPServer(split_addr(addr), handler, head_timeout=head_timeout,
                               io_timeout=head_timeout, max_connections=max_connections)
    threading.Thread(target=server.serve_forever, daemon=True, name="control").start()
    return server


OPTIONS = (
    GlobalOption(("--config", "config_path"), "The cluster file [default: $RAFTCLOUD_CONFIG, "
                 "else the deploy/local.toml of the checkout around the current directory, "
                 "else the installed one].", type=click.Path(dir_okay=False, path_type=Path)),
    GlobalOption(("--data-dir",), "Where every process keeps its data [default: var; status "
                 "and down: the nearest var/ from here upwards].",
                 type=click.Path(file_okay=False, path_type=Path)),
    GlobalOption(("-v", "--verbose"), "Say which cluster file and secret are used.",
                 count=True),
)


@click.group(epilog=EXIT_CODES_HELP)
@with_global_options(OPTIONS)
def main() -> None:
    """Run a raftcloud cluster, or one host's share of it.  Global options go before or
    after the command."""


def _locate(obj: dict[str, Any], data_dir: Path) -> Located:
    try:
        located = locate(obj["config_path"], data_dir=data_dir, fallback_config=DEFAULT_CONFIG)
    except ConfigError as exc:
        fail(str(exc), ExitCode.NO_CLUSTER)
    if obj["verbose"]:
        click.echo(f"raftcloud: {located.describe()}", err=True)
    return located


def _load(located: Located) -> ClusterConfig:
    try:
        return located.load()
    except ConfigError as exc:
        fail(str(exc), ExitCode.NO_CLUSTER)


@main.command()
@click.option("--host", default=None, help="Start only this host's processes (default: all).")
@click.option("--metrics", is_flag=True, help="Every process serves Prometheus metrics (at "
              f"the [metrics] table's base_port, else {DEFAULT_BASE_PORT}, and up), and a "
              f"scrape configuration is written to DATA_DIR/{SCRAPE_FILE}; on by itself when "
              "the cluster file has a [metrics] table.")
@click.pass_obj
def up(obj: dict[str, Any], host: str | None, metrics: bool) -> None:
    """Start the cloud in the foreground; Ctrl-C stops it.  Refuses to start over a running
    cloud (the same data dir, or the cluster file's ports taken)."""
    data_dir = (obj["data_dir"] or LOCAL_DATA_DIR).resolve()
    # Journals, chunks, logs, keys: nobody but this user reads them.  Every child
    # inherits the umask; a data dir made by an older version is closed too.
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    located = _locate(obj, data_dir)
    config_path = located.config.resolve()
    env = {"RAFTCLOUD_CONFIG": str(config_path)}
    if located.secret_file is not None:
        if located.secret_file == data_dir / SECRET_NAME:
            _secret_file(data_dir)  # no secret given: make one for this data dir
        env[SECRET_FILE_ENV] = str(located.secret_file)  # absolute: the children's too
    cluster = _load(located)
    try:
        logs = LogSettings.of(cluster.table("logs"))
        setup_logging("launcher", fmt=logs.format)
        everything = process_specs(cluster, config_path, data_dir, None)
        everything = _with_metrics(everything, cluster, data_dir, metrics)
        control_addr = control_addresses(cluster).get(host or "local")
        admin_user = Site.of(cluster).admin_user
    except ConfigError as exc:
        fail(str(exc), ExitCode.NO_CLUSTER)
    mine = [s for s in everything if host is None or s.host == host]
    lock = DataDirLock(data_dir)
    holder = lock.claim(control_addr)
    if holder is not None:
        fail(f"raftcloud is already running on {data_dir} (pid {holder.pid}, control "
             f"{holder.control}); `raftcloud down` stops it", ExitCode.RUNNING)
    try:
        taken = ports_in_use(_addresses(cluster, mine, control_addr))
        if taken:
            fail(_who_holds(taken, control_addr, cluster), ExitCode.RUNNING)
        _run(mine, everything, data_dir, env, control_addr, cluster, admin_user, config_path,
             logs)
    finally:
        lock.release()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--new-secret", is_flag=True, help="Restore even if the cluster's secret is not "
              "the one the backup was saved with (app passwords in it stop working).")
@click.pass_obj
def restore(obj: dict[str, Any], file: Path, new_secret: bool) -> None:
    """Build a new cluster in the data dir from FILE, a backup `raftkv-ctl snapshot save`
    wrote; `raftcloud up` with the same data dir then starts it.  The cluster file says
    where its replicas live; its groups must have the backup's ids and shard count."""
    data_dir = (obj["data_dir"] or LOCAL_DATA_DIR).resolve()
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    located = _locate(obj, data_dir)
    made_secret = None
    if located.secret_file == data_dir / SECRET_NAME and not (data_dir / SECRET_NAME).exists():
        made_secret = _secret_file(data_dir)  # a new cluster's own, as `up` would make it
    cluster = _load(located)
    lock = DataDirLock(data_dir)
    holder = lock.claim(None)
    if holder is not None:
        fail(f"raftcloud is running on {data_dir} (pid {holder.pid}): restore into a new "
             "data dir", ExitCode.RUNNING)
    restored = None
    try:
        with open(file, "rb") as stream:
            restored = restore_backup(stream, cluster, data_dir, new_secret=new_secret)
    except BackupDamaged as exc:
        fail(f"{file} cannot be restored: {exc}; nothing was written", ExitCode.FAILED)
    except RestoreRefused as exc:
        fail(f"not restoring: {exc}", ExitCode.FAILED)
    except OSError as exc:
        fail(f"restoring {file} failed: {exc}; nothing was left behind", ExitCode.FAILED)
    finally:
        lock.release()
        if restored is None and made_secret is not None:
            made_secret.unlink(missing_ok=True)  # nothing restored: nothing made
    config = "" if restored.config_num is None else f", configuration {restored.config_num}"
    click.echo(f"restored {restored.groups} groups, {restored.cells} cells and "
               f"{restored.chunks} chunks into {data_dir}{config}; start it with "
               f"`raftcloud up --data-dir {data_dir}`")


def _with_metrics(specs: list[ProcessSpec], cluster: ClusterConfig, data_dir: Path,
                  asked: bool) -> list[ProcessSpec]:
    """``specs``, each told where to serve its metrics when they are on (``--metrics`` or
    a ``[metrics]`` table); the scrape configuration of them all written to the data dir."""
    base = base_port(cluster.table("metrics"), DEFAULT_BASE_PORT if asked else None)
    if base is None:
        return specs
    found = targets([(s.name, s.kind, s.addr) for s in specs], base)
    (data_dir / SCRAPE_FILE).write_text(scrape_config(found))
    return [dataclasses.replace(s, env={**s.env, METRICS_ADDR_ENV: t.addr, **(
        # gunicorn's workers write their samples there, its master serves their sum
        {MULTIPROC_DIR_ENV: str(data_dir / s.name / "metrics")} if s.kind == "frontend" else {})})
            for s, t in zip(specs, found, strict=True)]


def _addresses(cluster: ClusterConfig, specs: list[ProcessSpec],
               control_addr: str | None) -> list[tuple[str, str]]:
    """Every address the processes of ``specs`` and the control API will listen on."""
    addrs = [(s.name, s.addr) for s in specs]
    addrs += [(f"{s.name} metrics", s.env[METRICS_ADDR_ENV]) for s in specs
              if METRICS_ADDR_ENV in s.env]
    names = {s.name for s in specs}
    addrs += [(f"{r.name} raft", r.raft) for r in cluster.replicas() if r.name in names]
    if control_addr:
        addrs.append(("control", control_addr))
    return addrs


def _who_holds(taken: list[tuple[str, str]], control_addr: str | None,
               cluster: ClusterConfig) -> str:
    """One line: the ports in use, and the running cloud's pid and data dir if it says."""
    ports = ", ".join(f"{addr} ({what})" for what, addr in taken[:5])
    if len(taken) > 5:
        ports += f" and {len(taken) - 5} more"
    owner = "something else listens there"
    if control_addr and ("control", control_addr) in taken:
        try:
            about = _request(control_addr, control_token(cluster.secret), "GET", "/supervisor")
            owner = (f"a raftcloud runs there: pid {about.get('pid')}, data dir "
                     f"{about.get('data_dir')}; `raftcloud down` stops it")
        except urllib.error.HTTPError as exc:
            owner = ("another raftcloud (with another secret) holds the control port"
                     if exc.code == 401 else f"the control port answers {exc.code}")
        except OSError:
            pass
    return f"not starting: ports in use: {ports}; {owner}"


def _run(mine: list[ProcessSpec], everything: list[ProcessSpec], data_dir: Path,
         env: dict[str, str], control_addr: str | None, cluster: ClusterConfig,
         admin_user: str, config_path: Path, logs: LogSettings) -> None:
    """Start ``mine``, say they are ready, and supervise them until stopped."""
    password_file, new_password = _admin_password(data_dir)
    env["RAFTCLOUD_ADMIN_PASSWORD_FILE"] = str(password_file)
    supervisor = Supervisor(mine, data_dir / "logs", env, logs)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    control = None
    try:
        if control_addr:
            control = _serve_control(control_addr, supervisor, control_token(cluster.secret), stop,
                                     about={"pid": os.getpid(), "data_dir": str(data_dir),
                                            "config": str(config_path)})
        # Start everything at once: replicas elect a leader together, and the
        # apps wait for the store by themselves.
        for spec in supervisor.specs:
            supervisor.start(spec.name)
        try:
            wait_ready(supervisor, stop, timeout=90)
        except RuntimeError as exc:
            fail(f"{exc}: {data_dir / 'logs'}", ExitCode.FAILED)
        if stop.is_set():
            return
        log.info("every process answers: %s", ", ".join(supervisor.names()))
        lines = ready_lines(everything)
        if any(METRICS_ADDR_ENV in s.env for s in everything):
            lines.append(f"  metrics:    scrape configuration in {data_dir / SCRAPE_FILE}")
        _print_ready(lines, control_addr, admin_user, new_password, data_dir)
        while not stop.wait(1.0):
            pass
    finally:
        click.echo("raftcloud: stopping", err=True)
        log.info("stopping every process")
        supervisor.stop_all()
        if control is not None:
            control.shutdown()
        log.info("stopped")
        click.echo("raftcloud: stopped", err=True)


def _print_ready(lines: list[str], control_addr: str | None, admin_user: str,
                 new_password: str | None, data_dir: Path) -> None:
    for line in lines:
        click.echo(line)
    if control_addr:
        click.echo(f"  control:    http://{control_addr}/processes")
    # The new password only on a terminal: an output read by a journal or a CI
    # log keeps it, and the file holds it anyway (docs/operations.md, "Logs").
    if new_password and sys.stdout.isatty():
        click.echo(f"  admin login: {admin_user} / {new_password}  (shown once)")
    else:
        click.echo(f"  admin login: {admin_user} / see {data_dir / 'admin.password'}")
    click.echo("raftcloud is ready", err=False)
    sys.stdout.flush()


def _request(addr: str, token: str, method: str, path: str, timeout: float = 5.0) -> Any:
    """One call to a supervisor's control API.  :raises OSError: (HTTPError for a refusal)."""
    request = urllib.request.Request(f"http://{addr}{path}", method=method, headers={
        "Authorization": f"Bearer {token}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the refused response's socket; callers need only its code
        raise
    with response:
        return json.load(response)


class _Control:
    """The supervisor of this host, as ``raftcloud status`` and ``down`` reach it."""

    def __init__(self, obj: dict[str, Any]) -> None:
        # Without --data-dir: the data dir of the checkout around us, where its secret is.
        data_dir = obj["data_dir"]
        if data_dir is None:
            found = nearest(LOCAL_DATA_DIR / SECRET_NAME, Path.cwd())
            data_dir = found.parent if found is not None else LOCAL_DATA_DIR
        self.located = _locate(obj, data_dir)
        cluster = _load(self.located)
        addr = control_addresses(cluster).get("local")
        if not addr:
            fail("the cluster file names no [control] address for this host",
                 ExitCode.NO_CLUSTER)
        self.addr = addr
        self.token = control_token(cluster.secret)

    def call(self, method: str, path: str) -> Any:
        try:
            return _request(self.addr, self.token, method, path)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                fail(f"the supervisor at {self.addr} does not know your secret "
                     f"(secret {self.located.secret_from})", ExitCode.WRONG_SECRET)
            fail(f"the supervisor at {self.addr} answered {exc.code} to {path}", ExitCode.FAILED)
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                fail(f"the supervisor at {self.addr} did not answer in time", ExitCode.TIMEOUT)
            fail(f"no raftcloud supervisor at {self.addr} ({reason}): is it up?",
                 ExitCode.NOT_LISTENING)


@main.command()
@click.pass_obj
def status(obj: dict[str, Any]) -> None:
    """Show the processes of a running `raftcloud up`."""
    for proc in _Control(obj).call("GET", "/processes"):
        state = "up" if proc["alive"] else "DOWN"
        click.echo(f"{proc['name']:12} {proc['kind']:9} {state:5} {proc['addr']}")


@main.command()
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds to wait for every process to exit.")
@click.pass_obj
def down(obj: dict[str, Any], timeout: float) -> None:
    """Stop a running `raftcloud up`, and wait until every process has exited."""
    control = _Control(obj)
    processes = control.call("GET", "/processes")
    supervisor = control.call("GET", "/supervisor")
    # Each child leads its own process group (deploy/procs.py): gunicorn's workers too.
    groups = [p["pid"] for p in processes if p["alive"] and p["pid"]]
    control.call("POST", "/shutdown")
    click.echo(f"raftcloud: stopping {len(groups)} processes and the supervisor "
               f"(pid {supervisor['pid']})", err=True)
    left = wait_exited([supervisor["pid"]], groups, timeout)
    if left:
        fail(f"still running after {timeout:.0f}s: pids {', '.join(map(str, left))}",
             ExitCode.TIMEOUT)
    click.echo("raftcloud: stopped")


global_options(main, OPTIONS)

if __name__ == "__main__":
    main()
