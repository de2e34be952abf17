"""raftkv-ctl and raftcloud without a cluster: help, global options in either place,
finding the checkout's cluster file and secret, and saying which (docs/operations.md)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from deploy.launcher import _serve_control
from deploy.launcher import main as raftcloud
from deploy.procs import Supervisor
from raftkv.cluster import load_cluster
from raftkv.errors import ConfigError
from shards.cli import main as raftkv_ctl
from shards.cliopts import ExitCode
from shards.control import control_token
from shards.locate import locate
from tests._procs import SECRET, free_port
from tests.cluster import write_cluster_file

TOOLS = {"raftkv-ctl": raftkv_ctl, "raftcloud": raftcloud}


@pytest.fixture(autouse=True)
def no_cluster_in_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAFTCLOUD_CONFIG", "RAFTCLOUD_SECRET", "RAFTCLOUD_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no checkout around


def checkout(root: Path) -> Path:
    """A checkout after `make up`: deploy/local.toml (no secret in it) and var/cluster.secret."""
    cluster = write_cluster_file(root / "made")
    (root / "deploy").mkdir(parents=True)
    (root / "deploy" / "local.toml").write_text(
        cluster.read_text().replace('secret_file = "secret"', ""))
    (root / "var").mkdir()
    (root / "var" / "cluster.secret").write_bytes(SECRET)
    return root


@pytest.mark.parametrize("tool,command", [(t, c) for t, group in TOOLS.items()
                                          for c in sorted(group.commands)])
def test_every_subcommand_has_help_without_a_cluster(tool: str, command: str) -> None:
    result = CliRunner().invoke(TOOLS[tool], [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "Exit codes:" in result.output
    assert "--config" in result.output  # global options are the subcommand's too


def test_global_options_go_before_or_after_the_subcommand(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The options as ``put`` sees them, wherever they were given (it stops before
    connecting: finding the cluster fails)."""
    seen: list[dict[str, object]] = []

    def no_cluster(config: str | None) -> None:
        seen.append(dict(click.get_current_context().obj))
        raise ConfigError("no cluster in this test")
    monkeypatch.setattr("shards.cli.locate", no_cluster)
    runner = CliRunner()
    for args in (["--json", "--timeout", "3", "put", "r", "c", "v"],
                 ["put", "r", "c", "v", "--json", "--timeout", "3", "--config", "x.toml", "-v"],
                 ["put", "r", "c", "v"]):
        assert runner.invoke(raftkv_ctl, args).exit_code == ExitCode.NO_CLUSTER
    before, after, neither = seen
    assert before["as_json"] and after["as_json"] and not neither["as_json"]
    assert before["timeout"] == after["timeout"] == 3.0 and neither["timeout"] == 10.0
    assert after["config"] == "x.toml" and after["verbose"] == 1 and neither["config"] is None


def test_a_relative_secret_file_in_the_environment_is_relative_to_the_current_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = checkout(tmp_path / "co")
    monkeypatch.chdir(root)
    monkeypatch.setenv("RAFTCLOUD_SECRET_FILE", "var/cluster.secret")
    assert load_cluster("deploy/local.toml").secret == SECRET  # not deploy/var/cluster.secret


def test_the_checkout_around_the_current_dir_is_found(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = checkout(tmp_path / "co")
    (root / "docs" / "deep").mkdir(parents=True)
    monkeypatch.chdir(root / "docs" / "deep")
    located = locate(None)
    assert located.config == root / "deploy" / "local.toml"
    assert located.secret_file == root / "var" / "cluster.secret"
    assert located.load().secret == SECRET
    assert "checkout" in located.describe() and str(root / "var") in located.describe()


def test_no_cluster_around_is_one_line_and_its_own_code() -> None:
    result = CliRunner().invoke(raftkv_ctl, ["status"])
    assert result.exit_code == ExitCode.NO_CLUSTER
    assert result.output.count("\n") == 1 and "deploy/local.toml" in result.output


def test_verbose_says_which_cluster_and_secret(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody listens on the fresh checkout's ports: -v names the file and the secret
    first, then the one-line error says nothing listens."""
    root = checkout(tmp_path / "co")
    monkeypatch.chdir(root)
    result = CliRunner().invoke(raftkv_ctl, ["status", "-v", "--timeout", "1"])
    assert result.exit_code == ExitCode.NOT_LISTENING, result.output
    said, error = result.output.splitlines()
    assert str(root / "deploy" / "local.toml") in said
    assert str(root / "var" / "cluster.secret") in said
    assert error.startswith("error: nothing listening at")
    assert os.getcwd() == str(root)


def test_raftcloud_status_says_nothing_listens_and_wrong_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor's control API (served here, in-process) and nothing at all."""
    root = checkout(tmp_path / "co")
    control = f"127.0.0.1:{free_port()}"
    config = root / "deploy" / "local.toml"
    config.write_text(config.read_text() + f'\n[control]\nlocal = "{control}"\n')
    monkeypatch.chdir(root)
    runner = CliRunner()
    nothing = runner.invoke(raftcloud, ["status"])
    assert nothing.exit_code == ExitCode.NOT_LISTENING, nothing.output
    assert nothing.output.startswith(f"error: no raftcloud supervisor at {control}")
    server = _serve_control(control, Supervisor([], tmp_path / "logs", {}),
                            control_token(SECRET), threading.Event())
    try:
        assert runner.invoke(raftcloud, ["status"]).exit_code == 0
        monkeypatch.setenv("RAFTCLOUD_SECRET", "another-secret-0123456789")
        wrong = runner.invoke(raftcloud, ["status"])
    finally:
        server.shutdown()
        server.server_close()
    assert wrong.exit_code == ExitCode.WRONG_SECRET, wrong.output
    assert "does not know your secret" in wrong.output and wrong.output.count("\n") == 1


@pytest.mark.parametrize("answers, code", [
    (("wrong secret", "wrong secret", "down"), ExitCode.WRONG_SECRET),
    (("wrong secret", "ok", "ok"), None),     # one misconfigured replica: a warning
    (("down", "down", "down"), ExitCode.NOT_LISTENING),
], ids=["all-that-answer-refuse", "one-refuses", "none-listens"])
def test_a_wrong_secret_is_the_users_only_when_no_replica_takes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        answers: tuple[str, ...], code: ExitCode | None) -> None:
    from shards import reach
    cluster = load_cluster(write_cluster_file(tmp_path, groups=1))
    addrs = [r.client for r in cluster.all_groups()[0].replicas]
    said = dict(zip(addrs, answers, strict=True))
    monkeypatch.setattr(reach, "_try", lambda addr, _secret: said[addr])
    if code is None:
        reach.check_reachable(cluster, "from the test")
        assert "refused your secret" in capsys.readouterr().err
    else:
        with pytest.raises(reach.ToolError) as raised:
            reach.check_reachable(cluster, "from the test")
        assert raised.value.code == code
