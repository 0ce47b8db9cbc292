"""``python -m profiler`` entry point."""

from profiler.cli import run

run()
