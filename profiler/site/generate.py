"""``python -m profiler report``: compute everything, render every page and plot in memory, then write.

Nothing touches the output folder until every file's content exists, and each file is replaced by one rename
(:func:`~profiler.format.output.write_atomic`): a failure while counting, predicting or rendering leaves the previous
reports exactly as they were.
"""

from __future__ import annotations

from pathlib import Path

from profiler.errors import ProfilerError
from profiler.site.claims import claims_page
from profiler.site.collect import ReportData, collect
from profiler.site.exercises import exercises_page
from profiler.site.figures import render_figures
from profiler.site.pages import comparison_page, index_page, model_page
from profiler.util.files import write_atomic


def render(data: ReportData) -> dict[str, str | bytes]:
    """Every file of the reports folder: path relative to it → markdown text or PNG bytes, in writing order."""
    files: dict[str, str | bytes] = {"README.md": index_page(data), "comparison.md": comparison_page(data)}
    files.update({f"models/{name}.md": model_page(data, name) for name in data.models})
    files["exercises.md"] = exercises_page(data)
    files["claims.md"] = claims_page(data)
    files.update({f"figures/{name}": png for name, png in render_figures(data).items()})
    return files


def write(out_dir: Path, files: dict[str, str | bytes]) -> list[Path]:
    """Write ``files`` under ``out_dir``, each atomically; returns the paths written."""
    paths = [out_dir / relative for relative in files]
    for folder in sorted({path.parent for path in paths}):
        folder.mkdir(parents=True, exist_ok=True)
    for path, content in zip(paths, files.values(), strict=True):
        write_atomic(path, content)
    return paths


def generate(out_dir: Path) -> list[Path]:
    """Regenerate the reports under ``out_dir`` (measurements are always read from the repository's
    ``reports/data/``); returns the paths written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ProfilerError(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    return write(out_dir, render(collect()))
