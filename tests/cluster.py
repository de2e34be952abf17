"""A real storage cluster for tests: N groups of 3 replicas, as processes on loopback."""

from __future__ import annotations

from pathlib import Path

import shards
from raftkv.cluster import ClusterConfig, load_cluster

from ._procs import SECRET, Proc, free_port, port_open, python_cmd, wait_for


def write_cluster_file(root: Path, groups: int = 1, extra: str = "") -> Path:
    """A cluster file with fresh loopback ports and a secret file beside it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "secret").write_bytes(SECRET)
    lines = ['[cluster]', 'name = "test"', 'secret_file = "secret"',
             'domains = ["raftcloud.test"]', ""]
    for g in range(1, groups + 1):
        lines += ["[[group]]", f"id = {g}", "replica = ["]
        for r in "abc":
            lines.append(f'  {{name = "g{g}{r}", raft = "127.0.0.1:{free_port()}", '
                         f'client = "127.0.0.1:{free_port()}"}},')
        lines += ["]", ""]
    path = root / "cluster.toml"
    path.write_text("\n".join(lines) + extra)
    return path


class KVCluster:
    """Storage replicas as processes; failure is a verb (``kill``, ``start``)."""

    def __init__(self, root: Path, groups: int = 1) -> None:
        self.root = root
        self.path = write_cluster_file(root, groups)
        self.cluster: ClusterConfig = load_cluster(self.path)
        self.procs: dict[str, Proc] = {}
        for group in self.cluster.groups:
            for replica in group.replicas:
                self.procs[replica.name] = Proc(
                    replica.name,
                    python_cmd("raftkv.server", "--config", str(self.path), "--name", replica.name,
                               "--data-dir", str(root / replica.name)),
                    root)

    def start(self, name: str | None = None) -> None:
        for proc_name, proc in self.procs.items():
            if name in (None, proc_name) and not proc.alive:
                proc.start()
        for replica in self._replicas(name):
            wait_for(lambda r=replica: port_open(r.client), 20, f"{replica.name} to listen")

    def _replicas(self, name: str | None):
        return [r for g in self.cluster.groups for r in g.replicas if name in (None, r.name)]

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def stop(self) -> None:
        for proc in self.procs.values():
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

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()}" for n, p in self.procs.items())
