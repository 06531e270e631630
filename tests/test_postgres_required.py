"""Without PostgreSQL the PostgreSQL runs are skipped and the summary says so; in CI they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TESTS = """
def test_on_each_backend(backend):
    assert backend in ("sqlite", "postgresql")
"""


@pytest.fixture
def run_without_postgres(tmp_path):
    """Run a one-test suite, with the root conftest, where no PostgreSQL can be found."""
    (tmp_path / "conftest.py").write_text((ROOT / "conftest.py").read_text())
    (tmp_path / "benchmarks").mkdir()  # the conftest starts PostgreSQL through this helper
    server = ROOT / "benchmarks" / "pg_server.py"
    (tmp_path / "benchmarks" / "pg_server.py").write_text(server.read_text())
    (tmp_path / "test_backends.py").write_text(TESTS)

    def run(*, ci: bool) -> subprocess.CompletedProcess[str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CI", "PRIVML_TEST_POSTGRES_URL", "PYTEST_ADDOPTS")
        }
        env["PATH"] = str(tmp_path / "no-binaries-here")
        env["PRIVML_TEST_POSTGRES_BIN"] = str(tmp_path / "no-postgresql" / "*" / "bin")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        if ci:
            env["CI"] = "true"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"]
        return subprocess.run(
            [*command, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    return run


def test_without_postgresql_the_runs_are_skipped_and_the_summary_says_so(run_without_postgres):
    result = run_without_postgres(ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "PostgreSQL: not found — 1 postgresql tests skipped" in result.stdout


def test_in_ci_a_missing_postgresql_fails_the_run(run_without_postgres):
    result = run_without_postgres(ci=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout
    assert "CI runs every test on PostgreSQL too" in result.stdout
    assert "PostgreSQL: not found — 1 postgresql tests failed" in result.stdout
