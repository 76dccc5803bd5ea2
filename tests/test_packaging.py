"""What pyproject.toml declares matches what the code imports and what the wheel ships.

- Every third-party module that shipped code imports (``fieldsync``, ``fieldsync_protocol``,
  ``fieldsync_cli``) comes from a declared dependency, and every declared dependency is
  imported: an undeclared import works here only because something else pulled it in.
- Tests, benchmarks and the vector generator import only declared dependencies or the
  ``test`` extra.
- The licence is an SPDX expression with its text, and the three packages carry ``py.typed``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
FIRST_PARTY = frozenset({"fieldsync", "fieldsync_protocol", "fieldsync_cli", "tests", "bench"})
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
SHIPPED = tuple(REPO / directory for directory in PACKAGE_DIRS.values())
NOT_SHIPPED = (REPO / "tests", REPO / "bench", REPO / "protocol" / "vectors")


def normalise(distribution: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return normalise(match.group())


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (wherever they appear)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
    return modules


def third_party_imports(roots: Iterable[Path]) -> dict[str, list[str]]:
    """Third-party top-level module -> the files importing it."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for module in imported_modules(path.read_text(encoding="utf-8")):
                if module not in sys.stdlib_module_names and module not in FIRST_PARTY:
                    found.setdefault(module, []).append(str(path.relative_to(REPO)))
    return found


def distributions_of(modules: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the installed distributions providing it (empty: none installed)."""
    providers = importlib.metadata.packages_distributions()
    return {module: {normalise(d) for d in providers.get(module, [])} for module in modules}


DECLARED = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
TEST_EXTRA = {requirement_name(r) for r in EXTRAS["test"]}
#: Optional features shipped code may import lazily (``hq``: ``fieldsync hq serve``).
FEATURE_EXTRAS = {requirement_name(r) for name, rs in EXTRAS.items() if name != "test" for r in rs}


def test_imports_are_found_in_every_form() -> None:
    source = "import a.b\nfrom c.d import e\nfrom . import f\ndef g():\n    import h\n"
    assert imported_modules(source) == {"a", "c", "h"}
    assert requirement_name("PyNaCl>=1.5") == "pynacl"
    assert requirement_name("sqlite_utils [x]>=3") == "sqlite-utils"


def test_every_shipped_import_is_a_declared_dependency() -> None:
    imports = third_party_imports(SHIPPED)
    assert {"nacl", "msgpack", "aiohttp"} <= set(imports), "the scan sees the shipped code"
    undeclared = {
        module: imports[module]
        for module, distributions in distributions_of(imports).items()
        if not distributions & (DECLARED | FEATURE_EXTRAS)
    }
    assert undeclared == {}, "imported by shipped code but in neither dependencies nor an extra"


def test_every_declared_dependency_is_imported_by_shipped_code() -> None:
    provided = set().union(*distributions_of(third_party_imports(SHIPPED)).values())
    assert DECLARED - provided == set(), "declared but never imported by shipped code"


def test_tests_and_benchmarks_import_only_declared_packages() -> None:
    imports = third_party_imports(NOT_SHIPPED)
    assert {"pytest", "hypothesis"} <= set(imports)
    undeclared = {
        module: imports[module]
        for module, distributions in distributions_of(imports).items()
        if not distributions & (DECLARED | TEST_EXTRA | FEATURE_EXTRAS)
    }
    assert undeclared == {}, "imported by tests/bench but in neither dependencies nor [test]"


def test_licence_is_an_spdx_expression_with_its_text() -> None:
    assert PYPROJECT["project"]["license"] == "AGPL-3.0-or-later"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("GNU AFFERO GENERAL PUBLIC LICENSE")
    assert "Version 3, 19 November 2007" in text and "END OF TERMS AND CONDITIONS" in text
    assert not any("License ::" in c for c in PYPROJECT["project"].get("classifiers", []))


@pytest.mark.parametrize("package", ["fieldsync", "fieldsync_protocol", "fieldsync_cli"])
def test_packages_are_typed_and_ship_the_marker(package: str) -> None:
    assert (REPO / PACKAGE_DIRS[package] / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"][package]
