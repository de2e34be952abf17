"""The WebDAV servers bench.dav compares, each started privately on a loopback port.

* Apache 2 (Debian's ``apache2``) with ``mod_dav`` and ``mod_dav_fs`` serving a
  directory under the bench's temporary directory, from a config file the
  bench writes (modules loaded by absolute path, its own PidFile, ErrorLog,
  runtime directory and lock database; nothing under /etc/apache2 or /var is
  read or written), HTTP Basic against a one-line password file.
* Ours: ``/dav/`` of a frontend on a cloud of its own (``raftcloud up`` with
  one storage group of 3 replicas and one ``[[frontend]]`` with gunicorn's
  deployed defaults), a user made through the account model, and an app
  password for that user, as a device would have.

Each ``start_*`` function takes an ExitStack that stops what it started, and
answers a :class:`Server`: the WebDAV root's URL and whom to sign in as.  The
bench talks to both through rclone alone.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests._procs import Proc, free_port, port_open, wait_for
from tests.cluster import launched

USER = "bench"                 # the login on every server (our account rules allow it)
START_TIMEOUT = 60.0           # seconds a server may take to listen
APACHE_MODULES = Path("/usr/lib/apache2/modules")
# What the private Apache loads: an MPM, Basic sign-in against a file, and WebDAV on a directory.
MODULES = ("mpm_event", "authn_core", "authn_file", "authz_core", "authz_user", "auth_basic",
           "dav", "dav_fs")
FRONTEND_WORKERS, FRONTEND_THREADS = 2, 8   # a [[frontend]]'s defaults (deploy/processes.py)
OWN_QUOTA = 1 << 40            # the bench user's drive quota: the default (1 GiB) holds no run
OWN_MAX_FILE = 16 << 30        # [web] max_upload: the default (256 MiB) refuses the 1 GiB file
NO_APACHE = ("apache2 with mod_dav_fs not found (apt-get install apache2; the bench uses "
             "its own config, not the system's)")
NO_DAV = ("portal.dav is not importable here (the WebDAV door is not in this tree yet): "
          "skipping ours")


class ServerError(RuntimeError):
    """A server could not be started or set up; the message says why, with its log."""


@dataclass(frozen=True)
class Server:
    """One WebDAV server the bench measures."""

    key: str           # what --only names it, and rclone's remote name
    label: str         # the table's row label
    url: str           # the WebDAV root, ending in "/"
    user: str
    password: str
    pid: int           # the process that started the server's others (its CPU is their sum)


def apache_binary() -> str | None:
    """The path of ``apache2`` when it and mod_dav_fs are installed, else None."""
    # Debian puts it in /usr/sbin, which a non-root PATH may lack.
    binary = shutil.which("apache2", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None or not all((APACHE_MODULES / f"mod_{m}.so").exists() for m in MODULES):
        return None
    return binary


def dav_importable() -> bool:
    try:
        return importlib.util.find_spec("portal.dav") is not None
    except ImportError:
        return False  # portal itself missing


def apache_config(root: Path, port: int, max_body: int, run_as: tuple[str, str] | None) -> str:
    """A complete apache2.conf whose every path lies under ``root``: WebDAV at ``/dav/`` on
    ``root/www/dav``, Basic sign-in against ``root/htpasswd``, request bodies up to
    ``max_body`` bytes; ``run_as`` (user, group) when started as root."""
    loads = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in MODULES)
    user = "" if run_as is None else f"User {run_as[0]}\nGroup {run_as[1]}\n"
    return f"""\
# bench.dav's private Apache: loopback, no TLS, every file under this directory.
ServerRoot {root}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {root}/run/apache2.pid
DefaultRuntimeDir {root}/run
Mutex file:{root}/run default
ErrorLog {root}/error.log
LogLevel warn
{user}{loads}
DavLockDB {root}/run/davlock
Timeout 60
LimitRequestBody {max_body}
DocumentRoot {root}/www
<Directory />
  Require all denied
  AllowOverride None
  Options None
</Directory>
<Directory {root}/www/dav>
  Dav On
  AuthType Basic
  AuthName "bench"
  AuthUserFile {root}/htpasswd
  Require valid-user
</Directory>
"""


def htpasswd_line(user: str, password: str) -> str:
    """``user``'s line in an Apache password file: {SHA} is cheap per request, as our door's
    remembered credentials are (the file lies in a temporary directory of this bench)."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()  # noqa: S324
    return f"{user}:{{SHA}}{digest}\n"


def start_apache(stack: ExitStack, root: Path, binary: str, max_body: int) -> Server:
    """Apache with mod_dav_fs on ``root/www/dav``; as root, its workers run as ``nobody``,
    which owns that directory and the lock database's (the caller makes ``root``'s parents
    traversable)."""
    dav, run = root / "www" / "dav", root / "run"
    for folder in (dav, run):
        folder.mkdir(parents=True)
    run_as = None
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        run_as = (nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name)
        for path in (dav, run):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        for path in (root, root / "www"):
            path.chmod(0o711)
    password = secrets.token_urlsafe(12)
    (root / "htpasswd").write_text(htpasswd_line(USER, password))
    port = free_port()
    conf = root / "apache2.conf"
    conf.write_text(apache_config(root, port, max_body, run_as))
    proc = Proc("apache2", [binary, "-f", str(conf), "-DFOREGROUND"], root,
                env={"APACHE_RUN_DIR": str(run), "APACHE_LOG_DIR": str(root)}).start()
    stack.callback(proc.stop)
    error_log = root / "error.log"
    try:
        wait_for(lambda: port_open(f"127.0.0.1:{port}") or not proc.alive, START_TIMEOUT,
                 f"apache2 to listen on port {port}", interval=0.1)
    except TimeoutError as exc:
        raise ServerError(f"{exc}\n{proc.log()}") from None
    if not proc.alive:
        log = error_log.read_text(errors="replace") if error_log.exists() else ""
        raise ServerError(f"apache2 exited at start:\n{proc.log()}{log[-3000:]}")
    return Server("apache", f"Apache {_apache_version(binary)} mod_dav_fs", f"http://127.0.0.1:{port}/dav/",
                  USER, password, _pid(proc))


def _apache_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(r"Apache/([\d.]+)", out.stdout)
    return found.group(1) if found else "?"


def start_ours(stack: ExitStack, root: Path) -> Server:
    """``/dav/`` of one frontend on a new cloud (one group of 3 replicas on loopback, started
    by ``raftcloud up`` as the suite's whole-cloud tests start it), a user with a quota that
    holds the run, and an app password of theirs."""
    from raftkv.cluster import load_cluster
    from shards import Client
    from shards.model import accounts, apppasswords, quota

    port = free_port()
    extra = (f'\n[[frontend]]\nname = "web1"\nlisten = "127.0.0.1:{port}"\n'
             f"workers = {FRONTEND_WORKERS}\nthreads = {FRONTEND_THREADS}\n"
             f"\n[web]\nmax_upload = {OWN_MAX_FILE}\n")
    try:
        launcher, config, _data = stack.enter_context(launched(root, extra))
    except (AssertionError, TimeoutError) as exc:
        raise ServerError(f"the cloud did not start: {exc}") from None
    cluster = load_cluster(config)
    with Client(cluster) as client:
        accounts.create_user(client, USER, f"bench {secrets.token_urlsafe(12)}")
        quota.set_limit(client, USER, OWN_QUOTA)
        password = apppasswords.create(client, USER, "bench.dav",
                                       cluster.derive_key(apppasswords.KEY_PURPOSE))
    return Server("ours", f"raftcloud /dav/ (gunicorn {FRONTEND_WORKERS}×{FRONTEND_THREADS}, "
                  "3 replicas)", f"http://127.0.0.1:{port}/dav/", USER, password, _pid(launcher))


def _pid(proc: Proc) -> int:
    if proc.popen is None:
        raise ServerError(f"{proc.name} was not started")
    return proc.popen.pid
