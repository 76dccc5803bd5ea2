"""The repository is self-contained: nothing in it reads a file outside the checkout.

A clone in an empty directory must pass ``make test`` with nothing beside it, so no test,
benchmark, project module, script or document may name a path that leaves the repository:
no sibling checkout of the design notes, no absolute path into a developer's machine, and
no ``Path(__file__).parents[N]`` (or ``.parent.parent…``) that climbs above the repository root.
The checker is tested on snippets first, so a scan that finds nothing means something.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Directories that are not part of the project's sources (tool output, the venv, git).
NOT_SOURCES = frozenset(
    {
        ".git",
        ".venv",
        "build",
        "dist",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".import_linter_cache",
        "htmlcov",
    }
)
#: Third-party data copied verbatim (large JSON, never code or paths).
VERBATIM_DATA = REPO / "protocol" / "vectors" / "noise"
TEXT_SUFFIXES = frozenset({".py", ".toml", ".md", ".sh", ".cfg", ".ini", ".service", ".txt"})
TEXT_NAMES = frozenset({"Makefile", "run"})

#: The sibling directory beside a developer's clone that holds design notes; a user's clone
#: has none. Spelled in pieces so neither this file nor a scan for it matches its own source.
SIBLING = "".join(("sh", "ared"))

#: Text that names a place outside the repository.
OUTSIDE_PATTERNS = (
    re.compile(re.escape(os.pardir + "/" + SIBLING)),
    re.compile(re.escape(SIBLING + "/reference")),
    re.compile(re.escape(SIBLING + "/vectors")),
    re.compile(r"(?<![\w.])/" + r"work/"),
    re.compile(re.escape("../" + "../")),
)


def source_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in NOT_SOURCES or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_relative_to(VERBATIM_DATA) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            yield path


def outside_references(text: str) -> list[str]:
    """Lines of ``text`` that name a path outside the repository, as ``"line N: ..."``."""
    return [
        f"line {number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if any(pattern.search(line) for pattern in OUTSIDE_PATTERNS)
    ]


def _levels_above_file(node: ast.expr) -> int | None:
    """How many directories above the file's own directory ``node`` names, if it is a chain of
    ``.parent`` / ``.parents[N]`` (and ``.resolve()`` / ``.absolute()``) on ``Path(__file__)``;
    ``Path(__file__).parent`` is 0. ``None`` for anything else."""
    levels = -1
    while True:
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            levels += 1
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)
        ):
            levels += node.slice.value + 1
            node = node.value.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"resolve", "absolute"}
        ):
            node = node.func.value
        elif (
            isinstance(node, ast.Call)
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "__file__"
        ):
            return levels if levels >= 0 else None
        else:
            return None


def escaping_parent_chains(source: str, depth_below_root: int) -> list[str]:
    """``Path(__file__)`` parent chains in ``source`` that climb above the repository root,
    for a file whose directory is ``depth_below_root`` levels below the root."""
    escaping = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.expr):
            continue
        levels = _levels_above_file(node)
        if levels is not None and levels > depth_below_root:
            escaping.append(f"line {node.lineno}: {ast.unparse(node)}")
    # An outer chain and its inner chains both match; report each line once.
    return sorted(set(escaping))


@pytest.mark.parametrize(
    ("snippet", "depth", "escapes"),
    [
        ("Path(__file__).resolve().parents[3] / 'shared'", 2, True),
        ("Path(__file__).resolve().parents[2] / 'protocol'", 2, False),
        ("Path(__file__).parent.parent.parent", 2, False),
        ("Path(__file__).parent.parent.parent.parent", 2, True),
        ("Path(__file__).absolute().parents[1].parent", 1, True),
        ("Path(__file__).parents[0]", 0, False),
        ("Path(__file__).parent", 0, False),
        ("Path(__file__).parents[1]", 0, True),
        ("other.parents[9]", 0, False),
    ],
)
def test_parent_chain_checker(snippet: str, depth: int, escapes: bool) -> None:
    assert bool(escaping_parent_chains(snippet, depth)) is escapes


def test_text_checker_finds_outside_paths() -> None:
    assert outside_references("x = ROOT / '..' / 'shared'") == []
    vectors = f"{os.pardir}/{SIBLING}/vectors/noise"
    found = outside_references(f"a\nVECTORS = '{vectors}'\nb = '/" + "work/main'")
    assert [line.split(":")[0] for line in found] == ["line 2", "line 3"]


def test_scan_covers_the_project() -> None:
    scanned = {path.relative_to(REPO).as_posix() for path in source_files(REPO)}
    for expected in (
        "Makefile",
        ".ci/run",
        "pyproject.toml",
        "README.md",
        "protocol/SPEC.md",
        "protocol/vectors/generate.py",
        "fieldsync/daemon.py",
        "cli/fieldsync_cli/main.py",
        "bench/__main__.py",
        "deploy/install.sh",
        "tests/protocol/test_noise_vectors.py",
        "tests/test_self_contained.py",
    ):
        assert expected in scanned, expected
    assert not any(name.startswith(".venv/") for name in scanned)


def test_nothing_names_a_path_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()
    problems = []
    for path in source_files(REPO):
        text = path.read_text(encoding="utf-8")
        relative = path.relative_to(REPO)
        found = [] if path == this_file else outside_references(text)
        if path.suffix == ".py":
            found += escaping_parent_chains(text, depth_below_root=len(relative.parts) - 1)
        problems += [f"{relative}: {line}" for line in found]
    assert problems == [], "paths outside the repository:\n" + "\n".join(problems)


def test_test_helpers_are_imported_as_a_package() -> None:
    """Helpers are ``tests.<area>.<module>`` imports; nothing edits ``sys.path`` to find them."""
    edits = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*[+]?=")
    problems = [
        f"{path.relative_to(REPO)}: line {number}"
        for top in ("tests", "bench")
        for path in source_files(REPO / top)
        if path.suffix == ".py" and path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if edits.search(line)
    ]
    assert problems == []
    for directory in (REPO / "tests").rglob("*"):
        if directory.is_dir() and any(directory.glob("test_*.py")):
            assert (directory / "__init__.py").is_file(), f"{directory} is not a package"
