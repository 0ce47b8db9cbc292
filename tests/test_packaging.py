"""What a user installs and runs: CI's script."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_command(comment: str) -> str:
    """The command under ``# {comment}`` in the README's quick start."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return lines[lines.index(f"# {comment}") + 1]


def test_ci_runs_the_readme_test_command_and_deletes_nothing():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == [readme_command("the tests (what CI runs, via .ci/run)")]
    assert not any(re.search(r"\brm\b", line) for line in script)
