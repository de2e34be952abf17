"""Comments and documents point into docs/, and what they point at is there.

The design notes the code was first written against are not part of the
repository; a reader sent to one finds nothing.  Every longer story lives in
docs/*.md (docs/README.md is the index), and a reference names the file and,
where it helps, the section: ``(docs/engine-fixes.md, "The journal")``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".py", ".md", ".html", ".js", ".css", ".toml", ".cfg", ".ini", ".yaml", ".yml",
                 ".service", ".txt", ".sh"}
TEXT_NAMES = {"Makefile", "Dockerfile"}
# Notes outside the repository, spelt in parts so that this file does not name them.
OUTSIDE_NOTES = re.compile(r"\b(?:DESIGN|PYSYNCOBJ|TESTING)" + r"\.md\b")
# docs/NAME.md, then optionally `, "Section"` (the section may wrap onto a comment line).
DOCS_REFERENCE = re.compile(r'\bdocs/([\w.-]+\.md)`?(?:,\s*"([^"]{1,200})")?')


def source_files(root: Path) -> Iterator[Path]:
    """The repository's text files: no virtualenvs, caches, build output or git data, and
    not this file, whose examples name missing files on purpose."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not (
            d.startswith(".") or d == "__pycache__" or d.endswith(".egg-info")
            or d in {"build", "dist", "node_modules"}))
        for name in sorted(names):
            path = Path(folder) / name
            if ((path.suffix in TEXT_SUFFIXES or name in TEXT_NAMES)
                    and path != Path(__file__).resolve()):
                yield path


def outside_note_mentions(root: Path) -> list[str]:
    found = []
    for path in source_files(root):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE_NOTES.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip().lower()
            for line in doc.read_text().splitlines() if line.startswith("#")]


def broken_docs_references(root: Path) -> list[str]:
    """Each ``docs/X.md`` reference whose file is missing, or whose section is no heading
    there (a section names a heading's beginning, as "Layers" names "Layers and the import
    rule")."""
    broken = []
    for path in source_files(root):
        for match in DOCS_REFERENCE.finditer(path.read_text(errors="replace")):
            doc = root / "docs" / match[1]
            where = f"{path.relative_to(root)}: {match[0]!r}"
            if not doc.is_file():
                broken.append(f"{where}: no such file")
                continue
            if match[2] is None:
                continue
            # A section wrapped in a comment continues after "# " on the next line.
            section = re.sub(r"\s*\n\s*(?:#\s*)?", " ", match[2]).strip().lower()
            if not any(h.startswith(section) for h in headings(doc)):
                broken.append(f"{where}: no such section")
    return broken


def test_nothing_sends_the_reader_to_notes_outside_the_repository() -> None:
    assert outside_note_mentions(ROOT) == []


def test_every_docs_reference_names_a_file_and_section_that_exist() -> None:
    assert broken_docs_references(ROOT) == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "engine.md").write_text("# Engine\n\n## The journal\n\ntext\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "fine.py").write_text(
        '# see docs/engine.md, "The\n# journal"; docs/engine.md; `docs/engine.md`, "Engine"\n')
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "vendored.py").write_text("# DESIGN" + ".md, docs/gone.md\n")
    assert outside_note_mentions(tmp_path) == []
    assert broken_docs_references(tmp_path) == []

    (tmp_path / "pkg" / "bad.py").write_text(
        "# as PYSYNCOBJ" + ".md says\n"
        '# docs/gone.md and docs/engine.md, "The snapshot"\n')
    (tmp_path / "deploy.toml").write_text("# TESTING" + ".md\n")
    assert [m.split(":")[0] for m in outside_note_mentions(tmp_path)] == [
        "deploy.toml", str(Path("pkg/bad.py"))]
    assert [m.rsplit(": ", 1)[1] for m in broken_docs_references(tmp_path)] == [
        "no such file", "no such section"]


@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")
                                       if p.name != "README.md"))
def test_the_docs_index_lists_every_document(doc: str) -> None:
    assert f"({doc})" in (ROOT / "docs" / "README.md").read_text(), f"docs/README.md misses {doc}"
