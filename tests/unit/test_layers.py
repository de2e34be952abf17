"""The one-way package graph (docs/architecture.md, "Layers"), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "raftkv": {"shards", "portal", "smtpd", "balancer", "deploy"},
    "shards": {"portal", "smtpd", "balancer", "deploy"},
    "portal": {"smtpd", "balancer", "deploy"},
    "smtpd": {"portal", "balancer", "deploy"},
    "balancer": {"portal", "smtpd", "deploy"},
    "deploy": {"shards", "portal", "smtpd", "balancer"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_packages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_node_imports_pysyncobj() -> None:
    users = [p.name for p in (ROOT / "raftkv").rglob("*.py") if "pysyncobj" in imported_packages(p)]
    assert users == ["node.py"]
    for package in FORBIDDEN:
        if package != "raftkv":
            for path in (ROOT / package).rglob("*.py"):
                assert "pysyncobj" not in imported_packages(path), path
