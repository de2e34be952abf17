"""A real storage cluster for tests: N groups of 3 replicas, as processes on loopback."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import shards
from raftkv.cluster import CONFIG_GROUP_ID, ClusterConfig, load_cluster
from shards.config import Config
from shards.migrate import Migrator

from ._procs import NO_DNS, SECRET, Proc, free_port, port_open, python_cmd, wait_for
from .netns import NetnsLab


def write_cluster_file(root: Path, groups: int = 1, extra: str = "",
                       hosts: Sequence[str] = (), config_group: bool = False) -> Path:
    """A cluster file with fresh ports and a secret file beside it.

    Replicas listen on loopback, or, given ``hosts`` (one IP address per
    replica, in order g1a, g1b, ...), each on its own host's address.  With
    ``config_group``, three config replicas ca, cb, cc come first.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "secret").write_bytes(SECRET)
    lines = ['[cluster]', 'name = "test"', 'secret_file = "secret"',
             'domains = ["raftcloud.test"]', ""]
    addresses = iter(hosts)
    if config_group:
        lines += ["[config_group]", "replica = ["]
        for r in "abc":
            ip = next(addresses, "127.0.0.1")
            lines.append(f'  {{name = "c{r}", raft = "{ip}:{free_port()}", '
                         f'client = "{ip}:{free_port()}"}},')
        lines += ["]", ""]
    for g in range(1, groups + 1):
        lines += ["[[group]]", f"id = {g}", "replica = ["]
        for r in "abc":
            ip = next(addresses, "127.0.0.1")
            lines.append(f'  {{name = "g{g}{r}", raft = "{ip}:{free_port()}", '
                         f'client = "{ip}:{free_port()}"}},')
        lines += ["]", ""]
    path = root / "cluster.toml"
    path.write_text("\n".join(lines) + extra)
    return path


def row_per_shard(client: shards.Client, prefix: str = "r") -> dict[int, str]:
    """One row name that lands on each shard (hash tags make rows easy to place)."""
    rows: dict[int, str] = {}
    for i in range(100_000):
        if len(rows) == client.cluster.shards:
            return rows
        row = f"{{{prefix}{i}}}/row"
        rows.setdefault(client.shard_of(row), row)
    raise AssertionError("no row found for some shard")


class KVCluster:
    """Storage replicas as processes; failure is a verb (``kill``, ``start``)."""

    def __init__(self, root: Path, groups: int = 1, extra: str = "",
                 lab: NetnsLab | None = None, config_group: bool = False) -> None:
        """``lab``: run replica i on the lab's host i instead of on loopback."""
        self.root = root
        self.lab = lab
        self.path = write_cluster_file(root, groups, extra,
                                       hosts=[lab.address(h) for h in lab.hosts] if lab else (),
                                       config_group=config_group)
        self.cluster: ClusterConfig = load_cluster(self.path)
        self.procs: dict[str, Proc] = {}
        self.host_of: dict[str, str] = {}
        replicas = [r for g in self.cluster.all_groups() for r in g.replicas]
        for i, replica in enumerate(replicas):
            prefix: list[str] = []
            if lab is not None:
                self.host_of[replica.name] = lab.hosts[i]
                prefix = lab.exec_prefix(lab.hosts[i])
            self.procs[replica.name] = Proc(
                replica.name,
                prefix + python_cmd("shards.node", "--config", str(self.path),
                                    "--name", replica.name, "--data-dir", str(root / replica.name)),
                root)

    def start(self, name: str | None = None) -> None:
        for proc_name, proc in self.procs.items():
            if name in (None, proc_name) and not proc.alive:
                proc.start()
        for replica in self._replicas(name):
            wait_for(lambda r=replica: port_open(r.client), 20, f"{replica.name} to listen")

    def _replicas(self, name: str | None):
        return [r for g in self.cluster.all_groups() for r in g.replicas
                if name in (None, r.name)]

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def pause(self, name: str) -> None:
        self.procs[name].signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].signal(signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            proc.stop()

    def client(self, timeout: float = 10.0) -> shards.Client:
        return shards.Client(self.cluster, timeout=timeout)

    def leader(self, group: int = 1, timeout: float = 15.0) -> str:
        """The name of the group's leader, once there is exactly one."""
        with self.client() as client:
            def find() -> str | None:
                leaders = [s["name"] for s in client.status()
                           if s["group"] == group and s.get("role") == "leader"]
                return leaders[0] if len(leaders) == 1 else None
            return wait_for(find, timeout, f"a leader in group {group}", interval=0.1)

    def restart_all(self) -> None:
        """Kill every replica (the config group's too) at once, start them all again, and
        wait for every group's leader."""
        for name in self.procs:
            self.kill(name)
        self.start()
        groups = [g.id for g in self.cluster.groups]
        for group in ([CONFIG_GROUP_ID] if self.cluster.config_group else []) + groups:
            self.leader(group, timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()}" for n, p in self.procs.items())


def move_shard(store: shards.Client, row: str) -> None:
    """Move the shard holding ``row`` to another of the two storage groups (a cluster with
    a config group), through a new configuration, as an operator's move would."""
    migrator = Migrator(store)
    shard = store.shard_of(row)
    home = migrator.current().owners[shard]
    away = 2 if home == 1 else 1

    def moved(config: Config) -> Config:
        owners = list(config.owners)
        owners[shard] = away
        return Config(config.num + 1, tuple(owners), dict(config.groups))
    migrator.reconfigure(moved)
    store.refresh()
    assert store.shard_map.group_of(shard) == away


@contextmanager
def running(cluster: KVCluster) -> Iterator[KVCluster]:
    """Start ``cluster``, wait for its leaders, and stop it at the end; logs on failure."""
    try:
        cluster.start()
        for group in cluster.cluster.groups:
            cluster.leader(group.id)
        if cluster.cluster.config_group is not None:
            # Managed groups serve nothing before their first configuration.
            cluster.leader(CONFIG_GROUP_ID)
            with cluster.client() as client:
                def configured() -> bool:
                    leaders = [s for s in client.status()
                               if s["group"] != CONFIG_GROUP_ID and s.get("role") == "leader"]
                    return len(leaders) == len(cluster.cluster.groups) and all(
                        s.get("config_num", 0) >= 1 for s in leaders)
                wait_for(configured, 20, "every group to take configuration 1")
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def whole_cloud_extra(*, frontends: int = 2, workers: int = 1, threads: int = 4) -> str:
    """Cluster-file tables for everything above the store, on fresh loopback ports."""
    tables = [f'[control]\nlocal = "127.0.0.1:{free_port()}"\n']
    for i in range(1, frontends + 1):
        tables.append(f'[[frontend]]\nname = "web{i}"\nlisten = "127.0.0.1:{free_port()}"\n'
                      f"workers = {workers}\nthreads = {threads}\n")
    tables.append(f'[smtpd]\nname = "smtpd"\ninbound = "127.0.0.1:{free_port()}"\n'
                  f'submission = "127.0.0.1:{free_port()}"\nresolver = "{NO_DNS}"\n'
                  "dns_timeout = 0.5\n")  # NO_DNS never answers (tests/_mail.py)
    # Short patience before login and per line: the hostile suite's slow clients end in seconds.
    tables.append(f'[imapd]\nname = "imapd"\nlisten = "127.0.0.1:{free_port()}"\n'
                  f'listen_tls = "127.0.0.1:{free_port()}"\nlogin_timeout = 10.0\n'
                  f'line_timeout = 5.0\n')
    tables.append(f'[balancer]\nname = "balancer"\nlisten = "127.0.0.1:{free_port()}"\n')
    return "\n" + "\n".join(tables)


class Hosts:
    """A cloud of several hosts from one cluster file: one ``raftcloud up --host H`` each,
    with its data directory (and an admin password file in it) under ``root``."""

    def __init__(self, root: Path, config: Path, hosts: Sequence[str],
                 prefix: Callable[[str], list[str]] = lambda host: []) -> None:
        """``prefix(host)``: what runs a command on that host (a namespace's ``ip netns exec``)."""
        self.root = root
        self.launchers: dict[str, Proc] = {}
        for host in hosts:
            data = root / host
            data.mkdir()
            (data / "admin.password").write_text("admin-password-1")
            self.launchers[host] = Proc(host, prefix(host) + python_cmd(
                "deploy.launcher", "up", "--config", str(config), "--data-dir", str(data),
                "--host", host), root)

    def start(self, host: str | None = None) -> None:
        """Start every host's launcher (or ``host``'s) and wait until each says it is ready."""
        chosen = {name: proc for name, proc in self.launchers.items() if host in (None, name)}
        for proc in chosen.values():
            proc.start()
        for name, proc in chosen.items():
            wait_for(lambda p=proc: "raftcloud is ready" in p.log() or not p.alive, 120,
                     f"host {name}")
            assert proc.alive, proc.log()

    def stop(self) -> None:
        for proc in self.launchers.values():
            proc.stop(timeout=30)

    def logs(self) -> str:
        out = []
        for host, proc in self.launchers.items():
            out.append(f"=== {host}\n{proc.log()}")
            for log in sorted((self.root / host / "logs").glob("*.log")):
                out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)


@contextmanager
def launched(root: Path, extra: str, *, config_group: bool = False,
             args: Sequence[str] = ()) -> Iterator[tuple[Proc, Path, Path]]:
    """``raftcloud up`` (with ``args``) on a cluster file of one storage group plus ``extra``:
    (the launcher, the cluster file, the data directory).  Logs on failure."""
    config = write_cluster_file(root / "cfg", groups=1, extra=extra, config_group=config_group)
    data = root / "data"
    launcher = Proc("launcher", python_cmd("deploy.launcher", "up", "--config", str(config),
                                           "--data-dir", str(data), *args), root).start()
    try:
        wait_for(lambda: "raftcloud is ready" in launcher.log() or not launcher.alive, 120,
                 "the cloud to start")
        assert launcher.alive, launcher.log()
        yield launcher, config, data
    except BaseException:
        for log in sorted((data / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        print(launcher.log())
        raise
    finally:
        launcher.stop(timeout=30)
