"""The one-way package graph (docs/architecture.md, "Layers"), checked on the source."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each layer's row names what it must not import.  A layer is a package or a sub-package;
# a module belongs to the most specific layer that contains it, and naming a package in a
# row forbids its sub-packages too (except the importer's own layer).
FORBIDDEN = {
    "raftkv": {"shards", "portal", "smtpd", "imapd", "balancer", "deploy"},
    # shards' routing (shards/*.py) and the shared data model (shards/model/) both sit on
    # raftkv, side by side: the routing never needs the apps' rows, the model is handed
    # its store object and never needs the routing.
    "shards": {"shards.model", "portal", "smtpd", "imapd", "balancer", "deploy"},
    "shards.model": {"shards", "portal", "smtpd", "imapd", "balancer", "deploy"},
    "portal": {"smtpd", "imapd", "balancer", "deploy"},
    "smtpd": {"portal", "imapd", "balancer", "deploy"},
    # The IMAP server sits beside smtpd: the store and the model below it, no sibling.
    "imapd": {"portal", "smtpd", "balancer", "deploy"},
    "balancer": {"portal", "smtpd", "imapd", "deploy"},
    # The launcher may use shards' control API (shards/control.py: the token both ends of
    # it share) and the apps' shared settings (shards/site.py), never the apps themselves.
    "deploy": {"shards.model", "portal", "smtpd", "imapd", "balancer"},
}
# Modules that may import what their layer's row forbids, and why.
EXCEPTIONS = {
    # raftkv-ctl is a tool on top of both halves of shards: `raftkv-ctl nodes` reads the
    # node registry of the data model.
    "shards/cli.py": {"shards.model"},
}


@dataclass(frozen=True)
class Import:
    name: str  # absolute dotted name: a module, or a module's attribute
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[Import]:
    """Every import in ``path``, relative ones made absolute.

    ``from a import b`` counts as importing ``a.b``: ``b`` may be a sub-package
    (``from shards import model``), and a layer row names sub-packages.  Imports
    for annotations only (under ``if TYPE_CHECKING:``) count like any other: a
    layer names no type it could not import.
    """
    tree = ast.parse(path.read_text(), str(path))
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [Import(name, node.lineno) for name in names]
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(name: str) -> str | None:
    """The most specific layer holding ``name``; None for the standard library and others."""
    return max((layer for layer in FORBIDDEN if within(name, layer)), key=len, default=None)


def violations(path: Path) -> list[str]:
    """Each import in ``path`` that its layer forbids, as ``file:line imports name``."""
    layer = layer_of(module_name(path))
    if layer is None:
        return []
    where = path.relative_to(ROOT).as_posix()
    allowed = EXCEPTIONS.get(where, set())
    bad = []
    for imp in imports(path):
        if layer_of(imp.name) == layer or any(within(imp.name, ok) for ok in allowed):
            continue
        if any(within(imp.name, no) for no in FORBIDDEN[layer]):
            bad.append(f"{where}:{imp.line} imports {imp.name}")
    return bad


def sources(layer: str) -> list[Path]:
    """The modules whose layer is ``layer`` (a package's, without its sub-packages' rows)."""
    folder = ROOT.joinpath(*layer.split("."))
    return [p for p in sorted(folder.rglob("*.py")) if layer_of(module_name(p)) == layer]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    paths = sources(layer)
    assert paths, f"no module found for layer {layer}"
    bad = [v for path in paths for v in violations(path)]
    assert not bad, "\n".join(bad)


def test_every_exception_is_still_needed() -> None:
    """An exception nobody uses would silently widen the rule: remove it instead."""
    for where, names in EXCEPTIONS.items():
        used = {n for imp in imports(ROOT / where) for n in names if within(imp.name, n)}
        assert used == names, f"{where} no longer imports {names - used}: drop the exception"


def _module(tmp_path: Path, relative: str, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_check_sees_relative_and_submodule_imports(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows hold because the check would catch each way of breaking them."""
    cases = {
        ("shards/model/mail.py", "from ..client import Client\n"): ["shards.client.Client"],
        ("shards/model/mail.py", "import shards.shardmap\n"): ["shards.shardmap"],
        ("shards/model/mail.py", "from shards import Client\n"): ["shards.Client"],
        ("shards/model/mail.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from shards import Cell, Client\n"):
            ["shards.Cell", "shards.Client"],
        ("shards/model/mail.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from shards.client import Client\n"): ["shards.client.Client"],
        ("shards/model/mail.py", "def f():\n    from portal import app\n"): ["portal.app"],
        ("shards/client.py", "from .model import registry\n"): ["shards.model.registry"],
        ("shards/client.py", "from shards import model\n"): ["shards.model"],
        ("raftkv/store.py", "from shards.model.mailbox import deliver\n"):
            ["shards.model.mailbox.deliver"],
    }
    for (relative, text), expected in cases.items():
        path = _module(tmp_path, relative, text, monkeypatch)
        assert [v.rpartition(" ")[2] for v in violations(path)] == expected, (relative, text)


def test_the_check_lets_each_layer_use_itself_and_what_is_below(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = {
        "shards/model/drive/reads.py": "from ..mailbox import x\nfrom . import records\n"
                                       "from raftkv.errors import ConditionFailed\n",
        "shards/model/mail.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from raftkv.interface import Cell, KeyValueStore\n",
        "shards/client.py": "from .shardmap import ShardMap\nfrom raftkv import keys\n",
        "shards/cli.py": "from .model import registry\n",
        "portal/app.py": "from shards.model import mailbox\nimport shards\n",
    }
    for relative, text in allowed.items():
        assert violations(_module(tmp_path, relative, text, monkeypatch)) == [], relative


def imported_packages(path: Path) -> set[str]:
    return {imp.name.split(".")[0] for imp in imports(path)}


def test_only_node_imports_pysyncobj() -> None:
    users = {str(p.relative_to(ROOT / "raftkv")) for p in (ROOT / "raftkv").rglob("*.py")
             if "pysyncobj" in imported_packages(p)}
    assert users and all(user.startswith("node/") for user in users), users
    for package in {layer.split(".")[0] for layer in FORBIDDEN}:
        if package != "raftkv":
            for path in (ROOT / package).rglob("*.py"):
                assert "pysyncobj" not in imported_packages(path), path
