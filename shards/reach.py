"""Why a tool cannot use the cluster: a wrong secret, nothing listening, or no leader.

A client retries through all three until its deadline, as it should for an app
that outlives a restart; a person at a shell wants to hear at once which one it
is.  :func:`check_reachable` connects to every replica's client port (each
connection proves the secret both ways, ``raftkv/protocol.py``) before a
command; :func:`explain_unavailable` looks at the groups' status after a
command ran out of time (docs/operations.md, "Exit codes").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from raftkv.cluster import ClusterConfig
from raftkv.connection import Connection
from raftkv.errors import AuthenticationFailed, UnavailableError

from .cliopts import ExitCode, ToolError


def _try(addr: str, secret: bytes) -> str:
    """"ok", "wrong secret" or "down" for one replica's client port."""
    try:
        Connection(addr, secret).close()
    except AuthenticationFailed:
        return "wrong secret"
    except UnavailableError:
        return "down"
    return "ok"


def check_reachable(cluster: ClusterConfig, secret_from: str) -> None:
    """Connect to every replica of the cluster file once, at the same time.

    :raises ToolError: every replica that answered refused the secret (WRONG_SECRET; a
        refusal beside replicas that accepted it is a warning), or none accepted a
        connection (NOT_LISTENING).
    """
    addrs = [r.client for group in cluster.all_groups() for r in group.replicas]
    with ThreadPoolExecutor(max_workers=min(len(addrs), 16)) as pool:
        results = dict(zip(addrs, pool.map(lambda a: _try(a, cluster.secret), addrs),
                           strict=True))
    refused = [a for a, r in results.items() if r == "wrong secret"]
    if refused and "ok" not in results.values():
        raise ToolError(f"this cluster does not know your secret (secret {secret_from}; "
                          f"refused by {', '.join(refused)})", ExitCode.WRONG_SECRET)
    if refused:
        # Some replicas took the secret: those that refused are misconfigured (an old
        # secret file, another cluster on the port), and the command may still succeed.
        click.echo(f"warning: {', '.join(refused)} refused your secret (secret {secret_from}), "
                   "which the other replicas accepted", err=True)
    if "ok" not in results.values():
        shown = ", ".join(addrs[:4]) + (f" and {len(addrs) - 4} more" if len(addrs) > 4 else "")
        raise ToolError(f"nothing listening at {shown}: is the cluster up "
                          "(`raftcloud up`)?", ExitCode.NOT_LISTENING)


def explain_unavailable(status: list[dict[str, Any]], error: UnavailableError) -> ToolError:
    """Why a command ran out of time, from every replica's status (``shards.Client.status``)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for replica in status:
        groups.setdefault(int(replica["group"]), []).append(replica)
    if not any(r["alive"] for r in status):
        return ToolError("nothing answers any more: is the cluster up (`raftcloud up`)?",
                           ExitCode.NOT_LISTENING)
    leaderless = []
    for gid, replicas in sorted(groups.items()):
        if not any(r.get("role") == "leader" for r in replicas):
            alive = sum(r["alive"] for r in replicas)
            leaderless.append(f"group {gid} ({alive} of {len(replicas)} replicas answer)")
    if leaderless:
        return ToolError(f"no leader yet in {', '.join(leaderless)}; "
                           f"{type(error).__name__}: {error}", ExitCode.NO_LEADER)
    return ToolError(f"{type(error).__name__}: {error}", ExitCode.TIMEOUT)
