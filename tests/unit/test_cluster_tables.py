"""Each package parses its own table of the cluster file; raftkv/cluster.py knows only the store's.

The example in deploy/README.md names every key: every package's parser takes
its own tables from it without complaint, and refuses a key it does not know.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from balancer.server import Balancer
from balancer.settings import BalancerSettings
from deploy.processes import check_names, process_specs
from imapd.server import ImapServer
from imapd.settings import ImapdSettings
from portal.config import PortalConfig, frontend_entry, web_settings
from raftkv.cluster import ClusterConfig, load_cluster
from raftkv.errors import ConfigError
from raftkv.server import StoreSettings
from shards.control import control_addresses
from shards.model import mailbox
from shards.model.ratelimit import Limits
from shards.model.sendlimit import SendLimits
from shards.site import Site
from smtpd.server import SmtpServer
from smtpd.settings import SmtpdSettings

from .._memstore import MemClient

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"s" * 32
STORE_FIELDS = {"name", "groups", "secret", "shards", "raft", "blobs", "config_group", "path",
                "tables"}
# Tables and keys of the apps and the launcher: none may appear in raftkv/cluster.py's code.
APP_WORDS = {"frontend", "frontends", "smtpd", "imapd", "balancer", "web", "control", "mail",
             "auth", "listen", "listen_tls", "inbound", "submission", "workers", "threads",
             "domains", "admin_user", "control_token", "scheme"}


@pytest.fixture
def readme_cluster(tmp_path: Path) -> ClusterConfig:
    """The cluster file of deploy/README.md, which shows every key."""
    readme = (ROOT / "deploy" / "README.md").read_text()
    example = re.search(r"```toml\n(.*?)```", readme, re.S)
    assert example, "deploy/README.md has no toml example"
    path = tmp_path / "cluster.toml"
    path.write_text(example.group(1))
    return load_cluster(path, secret=SECRET)


def _with(cluster: ClusterConfig, **tables: object) -> ClusterConfig:
    return dataclasses.replace(cluster, tables={**cluster.tables, **tables})


def test_the_cluster_config_holds_only_what_the_store_needs(readme_cluster) -> None:
    assert {f.name for f in dataclasses.fields(ClusterConfig)} == STORE_FIELDS
    assert {"frontend", "smtpd", "imapd", "balancer", "web", "control"} <= \
        readme_cluster.tables.keys()
    assert readme_cluster.table("smtpd")["name"] == "smtpd"  # kept as read, for smtpd


def test_the_store_module_names_no_app_setting() -> None:
    tree = ast.parse((ROOT / "raftkv" / "cluster.py").read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            words |= set(re.findall(r"\w+", node.value))
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            words.add(node.name)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
    assert not words & APP_WORDS


def test_every_package_takes_its_tables_of_the_readme_example(readme_cluster, tmp_path) -> None:
    cluster = readme_cluster
    assert Site.of(cluster) == Site(("raftcloud.test",), "admin", "https",
                                    "https://example.org", tmp_path / "tls/web.pem",
                                    tmp_path / "tls/web.key")
    assert frontend_entry(cluster, "web1") == {"name": "web1", "listen": "10.0.0.4:8001"}
    assert web_settings(cluster.table("web"))["session_idle"] == 172800
    smtpd = SmtpdSettings.from_cluster(cluster)
    assert (smtpd.inbound, smtpd.limits.idle_timeout) == ("0.0.0.0:25", 240.0)
    assert [str(n) for n in smtpd.trusted_relays or ()] == ["10.0.0.5/32"]
    balancer = BalancerSettings.from_cluster(cluster)
    assert (balancer.listen, balancer.scheme, balancer.limits.max_connections) == (
        "0.0.0.0:80", "https", 512)
    assert control_addresses(cluster) == {"local": "127.0.0.1:7000"}
    assert StoreSettings.from_table(cluster.table("store")).max_connections == 2048
    Limits.from_table(cluster.table("auth"))
    assert mailbox.quota_setting(cluster.table("mail")) == 1073741824
    assert SendLimits.from_table(cluster.table("mail")).send_per_hour == 100
    specs = {s.name: s for s in process_specs(cluster, tmp_path / "c.toml", tmp_path, None)}
    assert specs["web1"].argv[specs["web1"].argv.index("--threads") + 1] == "8"
    assert specs["web1"].argv[specs["web1"].argv.index("--certfile") + 1] == \
        str(tmp_path / "tls/web.pem")
    assert (specs["smtpd"].addr, specs["balancer"].host) == ("0.0.0.0:25", "edge")
    assert (specs["imapd"].addr, specs["imapd"].host) == ("0.0.0.0:143", "edge")
    assert ImapdSettings.from_cluster(cluster).listen_tls == "0.0.0.0:993"


@pytest.mark.parametrize(("table", "parse"), [
    ("smtpd", lambda t: SmtpdSettings.from_table(t)),
    ("imapd", lambda t: ImapdSettings.from_table(t)),
    ("balancer", lambda t: BalancerSettings.from_table(t)),
    ("web", lambda t: web_settings(t)),
])
def test_each_package_refuses_an_unknown_key_in_its_table(readme_cluster, table, parse) -> None:
    good = dict(readme_cluster.table(table))
    parse(good)
    with pytest.raises(ConfigError, match="timeot"):
        parse({**good, "head_timeot": 10})


def test_a_typo_in_any_frontend_stops_every_frontend(readme_cluster) -> None:
    web1 = readme_cluster.entries("frontend")[0]
    typo = {"name": "web2", "listen": "10.0.0.4:8002", "wokers": 2}
    cluster = _with(readme_cluster, frontend=[web1, typo])
    with pytest.raises(ConfigError, match="wokers"):
        frontend_entry(cluster, "web1")


def test_the_apps_refuse_a_bad_table_at_start(readme_cluster, monkeypatch) -> None:
    """Before binding anything: the parse is the first thing each app does."""
    with pytest.raises(ConfigError, match="inbund"):
        SmtpServer(_with(readme_cluster, smtpd={"inbund": "127.0.0.1:1"}), MemClient())
    with pytest.raises(ConfigError, match="lisen"):
        ImapServer(_with(readme_cluster, imapd={"lisen": "127.0.0.1:1"}), MemClient())
    with pytest.raises(ConfigError, match="lissen"):
        Balancer(_with(readme_cluster, balancer={"lissen": "127.0.0.1:1"}), MemClient())
    with pytest.raises(ConfigError, match="no \\[balancer\\]"):
        Balancer(dataclasses.replace(readme_cluster, tables={}), MemClient())
    path = readme_cluster.path
    assert path is not None
    path.write_text(path.read_text().replace("threads = 8", "threads = 8\nthread = 8"))
    monkeypatch.setenv("RAFTCLOUD_SECRET", SECRET.decode())
    with pytest.raises(ConfigError, match="thread"):
        PortalConfig.from_env({"RAFTCLOUD_CONFIG": str(path), "RAFTCLOUD_FRONTEND": "web1"})


def test_process_names_are_unique_over_the_file(readme_cluster) -> None:
    check_names(readme_cluster)
    clash = {"name": "g1a", "listen": "10.0.0.4:8009"}
    with pytest.raises(ConfigError, match="'g1a' is used twice"):
        check_names(_with(readme_cluster, frontend=[*readme_cluster.entries("frontend"), clash]))
    with pytest.raises(ConfigError, match="'smtpd' is used twice"):
        check_names(_with(readme_cluster, balancer={"name": "smtpd"}))


def test_control_addresses_must_be_addresses(readme_cluster) -> None:
    with pytest.raises(ConfigError):
        control_addresses(_with(readme_cluster, control={"local": 7000}))
    with pytest.raises(ConfigError):
        control_addresses(_with(readme_cluster, control={"local": "nowhere"}))
