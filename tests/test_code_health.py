"""CODE HEALTH GATE: ruff and mypy over the whole tree, as `make lint` runs them.

CI runs `make test` only, so these two tests are how the linter and the type checker run in CI.
Each fails with the tool's own report when it finds anything. The rule set and the type checker's
settings live in pyproject.toml ([tool.ruff.lint], [tool.mypy]); skip both locally with
`pytest -m "not code_health"`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.code_health


def _run(*argv: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_ruff_finds_nothing_in_the_tree():
    result = _run("ruff", "check", "--output-format", "concise", timeout=120)
    assert result.returncode == 0, f"ruff check reported:\n{result.stdout}{result.stderr}"


# A cold run (no .mypy_cache) type-checks the packages and their libraries' stubs: minutes on
# two cores; later runs reuse the cache.
@pytest.mark.timeout(900)
def test_mypy_finds_no_type_errors():
    result = _run("mypy", timeout=840)
    assert result.returncode == 0, f"mypy reported:\n{result.stdout}{result.stderr}"
