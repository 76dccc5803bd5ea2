"""A missing environment is a skip on a developer's machine and a failure in CI.

Each test runs a real ``pytest`` in a subprocess with part of the machine hidden: ``ip`` (an
empty PATH) for the real netns tests, ``chromium`` for a browser test, libfaketime through a
test that needs it. Under ``FIELDSYNC_REQUIRE_ALL=1`` every such test must fail, named in the
summary with what is missing; without it they are skipped with the same reason. Soak tests
stay a skip either way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.environment import REQUIRE_ALL

REPO = Path(__file__).resolve().parents[1]
NETNS_TESTS = "tests/integration/test_discovery_netns.py"


def _pytest(
    args: list[str], *, path: Path, require_all: bool, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {REQUIRE_ALL, "FIELDSYNC_SOAK"}}
    env["PATH"] = str(path)  # an empty directory: no `ip`, no chromium, no systemd tools
    env["PYTHONPATH"] = str(REPO)
    env["COLUMNS"] = "1000"  # summary lines whole, not cut at 80 columns
    if require_all:
        env[REQUIRE_ALL] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _collected(selection: str, empty_path: Path) -> set[str]:
    listing = _pytest(["--collect-only", selection], path=empty_path, require_all=True)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    ids = {line for line in listing.stdout.splitlines() if "::" in line}
    assert ids, listing.stdout
    return ids


def _summary(output: str, outcome: str) -> dict[str, str]:
    """``{test id: reason}`` from the ``-ra`` short summary lines of one outcome."""
    pattern = re.compile(rf"^{outcome} (\S+::\S+) - (.*)$", re.M)
    return dict(pattern.findall(output))


def test_without_ip_the_netns_tests_fail_under_require_all_naming_each(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    expected = _collected(NETNS_TESTS, empty)

    result = _pytest([NETNS_TESTS], path=empty, require_all=True)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    failed = _summary(result.stdout, "ERROR")
    assert set(failed) == expected, output
    for reason in failed.values():
        assert "needs `ip` on PATH (Debian: apt-get install iproute2)" in reason
        assert f"{REQUIRE_ALL}=1" in reason
    assert " passed" not in result.stdout.splitlines()[-1]


def test_without_ip_and_without_require_all_the_netns_tests_skip_with_the_reason(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()

    result = _pytest([NETNS_TESTS, "-rs"], path=empty, require_all=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ skipped", result.stdout.splitlines()[-1]), result.stdout
    assert "netns test: needs `ip` on PATH" in result.stdout
    assert "ERROR" not in result.stdout


TOY_TESTS = textwrap.dedent(
    """
    import pytest

    from tests.environment import missing


    @pytest.mark.browser
    def test_in_a_browser():
        raise AssertionError("must not run without a browser")


    @pytest.mark.slow
    def test_soak():
        raise AssertionError("must not run without FIELDSYNC_SOAK=1")


    def test_needs_a_tool_found_at_run_time():
        missing("`frobnicate` not found")


    def test_plain():
        assert True
    """
)
TOY_INI = textwrap.dedent(
    """
    [pytest]
    addopts = --strict-markers
    markers =
        slow: soak
        browser: needs chromium
        netns: netns
        root: root
        systemd: systemd
        faketime: faketime
    """
)


def _toy_project(tmp_path: Path) -> Path:
    """A tiny test directory that uses the suite's own hooks (tests/conftest.py)."""
    project = tmp_path / "toy"
    project.mkdir()
    (project / "pytest.ini").write_text(TOY_INI)
    (project / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    (project / "test_toy.py").write_text(TOY_TESTS)
    return project


def test_browser_and_run_time_needs_fail_under_require_all_and_soak_stays_a_skip(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    project = _toy_project(tmp_path)

    result = _pytest(["test_toy.py"], path=empty, require_all=True, cwd=project)

    assert result.returncode == 1, result.stdout + result.stderr
    errors = _summary(result.stdout, "ERROR")
    failures = _summary(result.stdout, "FAILED")
    assert set(errors) == {"test_toy.py::test_in_a_browser"}, result.stdout
    assert "needs a browser: `chromium` on PATH" in errors["test_toy.py::test_in_a_browser"]
    assert set(failures) == {"test_toy.py::test_needs_a_tool_found_at_run_time"}, result.stdout
    assert "`frobnicate` not found" in failures["test_toy.py::test_needs_a_tool_found_at_run_time"]
    assert "1 passed" in result.stdout and "1 skipped" in result.stdout
    assert "slow soak test: set FIELDSYNC_SOAK=1 to run" in result.stdout


def test_the_same_tests_skip_without_require_all(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    project = _toy_project(tmp_path)

    result = _pytest(["test_toy.py"], path=empty, require_all=False, cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout.splitlines()[-1], result.stdout


def test_ci_sets_the_variable() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert f"export {REQUIRE_ALL}=1" in ci
