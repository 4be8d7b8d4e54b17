"""Running the real ``bgcore`` CLI in-process with click's CliRunner (no tests here)."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from bgcore.cli import main
from tests.conftest import BenchDir


def run(bench: BenchDir, *args: str, input: str | None = None) -> Result:
    """``bgcore --bench BENCH ARGS...`` through the real entry point; stdout and stderr apart."""
    return CliRunner().invoke(main, ["--bench", str(bench.path), *args], input=input, catch_exceptions=False)


def run_json(bench: BenchDir, *args: str) -> Any:
    """The parsed JSON output of a command that must succeed."""
    result = run(bench, *args, "--format", "json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)
