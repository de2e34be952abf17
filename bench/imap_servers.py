"""The IMAP servers bench.imap compares, each started privately on a loopback port.

* Dovecot (Debian's ``dovecot-imapd``): its own config file in a temporary
  directory (runtime, state, log, a passwd-file user and its Maildir all under
  it; nothing under /etc or /var is read or written), no TLS, plaintext login
  allowed: loopback only.
* pymap's in-memory ``dict`` backend, run through pymap's own entry point.
* raftcloud-imapd on a cloud of its own (``raftcloud up`` with one storage group
  of 3 replicas and an ``[imapd]`` table), and a user made through the account model.

Each ``start_*`` function takes an ExitStack that stops what it started, and
answers a :class:`Server`: where to connect and as whom.  The bench talks to
all three through ``imaplib`` alone.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from tests._procs import Proc, free_port, port_open, wait_for
from tests.cluster import launched

USER = "bench"                 # the login on every server (our account rules allow it)
START_TIMEOUT = 60.0           # seconds a server may take to listen
NO_DOVECOT = ("dovecot not found on PATH (apt-get install dovecot-imapd; "
              "the bench uses its own config, not the system's)")
NO_PYMAP = "pymap is not installed (pip install pymap==0.36.7, or the bench extra)"
NO_IMAPD = ("raftcloud-imapd is not importable here (the imapd package is not in this tree "
            "yet): skipping ours")


class ServerError(RuntimeError):
    """A server could not be started or set up; the message says why, with its log."""


@dataclass(frozen=True)
class Server:
    """One IMAP server the bench measures."""

    key: str           # what --only names it
    label: str         # the table's row label
    host: str
    port: int
    user: str
    password: str
    pid: int           # the process that started the server's others (its CPU is their sum)


def dovecot_binary() -> str | None:
    """The path of ``dovecot``, or None if it is not installed."""
    # Debian puts it in /usr/sbin, which a non-root PATH may lack.
    return shutil.which("dovecot", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def pymap_installed() -> bool:
    return importlib.util.find_spec("pymap") is not None


def imapd_importable() -> bool:
    return importlib.util.find_spec("imapd") is not None


@dataclass(frozen=True)
class MailOwner:
    """Who owns the Maildir, and whom Dovecot's own processes run as."""

    uid: int
    gid: int
    internal_user: str   # default_internal_user and default_login_user

    @classmethod
    def for_this_process(cls) -> MailOwner:
        """As root: mail belongs to ``nobody`` (Dovecot refuses mail access as uid 0) and
        Dovecot's helpers run as its own Debian users; otherwise everything runs as us."""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            return cls(nobody.pw_uid, nobody.pw_gid, "dovecot")
        me = pwd.getpwuid(os.getuid())
        return cls(me.pw_uid, me.pw_gid, me.pw_name)


def dovecot_config(root: Path, port: int, owner: MailOwner) -> str:
    """A complete dovecot.conf whose every path lies under ``root``."""
    login_user = "dovenull" if owner.internal_user == "dovecot" else owner.internal_user
    return f"""\
# bench.imap's private Dovecot: loopback, no TLS, every file under this directory.
base_dir = {root}/run
state_dir = {root}/state
instance_name = bench-imap-{secrets.token_hex(4)}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {owner.internal_user}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def start_dovecot(stack: ExitStack, root: Path, binary: str) -> Server:
    """Dovecot with a Maildir under ``root``, which must be traversable by the mail owner
    (as root, ``nobody``: the caller makes its parents 0711)."""
    owner = MailOwner.for_this_process()
    home = root / "home" / USER
    for folder in (root / "run", root / "state", home):
        folder.mkdir(parents=True)
    root.chmod(0o711)
    (root / "home").chmod(0o711)
    os.chown(home, owner.uid, owner.gid)
    password = secrets.token_urlsafe(12)
    # passwd-file: user:password:uid:gid:gecos:home:shell:extra
    (root / "users").write_text(f"{USER}:{{PLAIN}}{password}:{owner.uid}:{owner.gid}::{home}::\n")
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(dovecot_config(root, port, owner))
    # -F: stay in the foreground, so stopping the process group stops Dovecot.
    proc = Proc("dovecot-master", [binary, "-F", "-c", str(conf)], root).start()
    stack.callback(proc.stop)
    log = root / "dovecot.log"  # Dovecot's own; the master's stderr is in dovecot-master.log
    _wait_listening(proc, port, lambda: proc.log() + (
        log.read_text(errors="replace") if log.exists() else ""))
    return Server("dovecot", f"Dovecot {_dovecot_version(binary)} (Maildir)", "127.0.0.1",
                  port, USER, password, _pid(proc))


def _dovecot_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.split(" ")[0].strip() or "?"


def start_pymap_dict(stack: ExitStack, root: Path) -> Server:
    """pymap's dict backend: every message in the server's memory, nothing on disk."""
    root.mkdir(parents=True)
    port, password = free_port(), secrets.token_urlsafe(12)
    # pymap has no ``__main__``: run its console script's function in this interpreter.
    argv = [sys.executable, "-c", "import sys; from pymap.main import main; sys.exit(main())",
            "--host", "127.0.0.1", "--port", str(port), "--no-tls",
            "dict", "--demo-user", USER, "--demo-password", password]
    proc = Proc("pymap-dict", argv, root).start()
    stack.callback(proc.stop)
    _wait_listening(proc, port, proc.log)
    return Server("pymap-dict", f"pymap {version('pymap')} dict (in memory)",
                  "127.0.0.1", port, USER, password, _pid(proc))


def start_ours(stack: ExitStack, root: Path) -> Server:
    """raftcloud-imapd on a new cloud: one group of 3 replicas on loopback, started by
    ``raftcloud up`` as the suite's whole-cloud tests start it, and an account."""
    from raftkv.cluster import load_cluster
    from shards import Client
    from shards.model import accounts

    port = free_port()
    extra = (f'\n[imapd]\nname = "imapd"\nlisten = "127.0.0.1:{port}"\n'
             f'listen_tls = "127.0.0.1:{free_port()}"\n')
    try:
        launcher, config, data = stack.enter_context(launched(root, extra))
    except (AssertionError, TimeoutError) as exc:
        raise ServerError(f"the cloud did not start: {exc}") from None
    if not port_open(f"127.0.0.1:{port}"):
        logs = "\n".join(p.read_text(errors="replace")[-2000:]
                         for p in sorted((data / "logs").glob("imapd*.log")))
        raise ServerError(f"raftcloud up started no imapd on port {port} (does this tree's "
                          f"launcher know the [imapd] table?)\n{logs}")
    password = f"bench {secrets.token_urlsafe(12)}"
    with Client(load_cluster(config)) as client:
        accounts.create_user(client, USER, password)
    return Server("ours", "raftcloud-imapd (3 replicas)", "127.0.0.1", port, USER, password,
                  _pid(launcher))


def _pid(proc: Proc) -> int:
    if proc.popen is None:
        raise ServerError(f"{proc.name} was not started")
    return proc.popen.pid


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and every live descendant of it
    (Dovecot's per-connection ``imap`` process, the cloud's replicas and imapd)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
        used[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    tree, todo = set(), [pid]
    while todo:
        tree.add(current := todo.pop())
        todo += [child for child, parent in parents.items()
                 if parent == current and child not in tree]
    return sum(used.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def _wait_listening(proc: Proc, port: int, log: Callable[[], str]) -> None:
    try:
        wait_for(lambda: port_open(f"127.0.0.1:{port}") or not proc.alive, START_TIMEOUT,
                 f"{proc.name} to listen on port {port}", interval=0.1)
    except TimeoutError as exc:
        raise ServerError(f"{exc}\n{log()[-3000:]}") from None
    if not proc.alive:
        raise ServerError(f"{proc.name} exited at start:\n{log()[-3000:]}")
