"""``python -m profiler report``: check the destination, compute everything, render every page and plot in memory,
then write them as one set.

The destination is checked before any work (a folder that cannot be written fails in a second, not after half a
minute of counting). Nothing touches it until every file's content exists; then the set is staged inside it and
swapped in by renames with SIGINT/SIGTERM held back (:func:`~profiler.util.files.replace_files`): a failure or an
interruption leaves the previous reports exactly as they were, never half old, half new. Generated files that the
new set no longer has are removed from ``models/`` and ``figures/``; everything else there is left alone —
``data/`` (committed measurements) and ``benchmarks.md`` (written by the benchmarks) above all.
"""

from __future__ import annotations

from pathlib import Path

from profiler.errors import ProfilerError
from profiler.site.claims import claims_page
from profiler.site.collect import ReportData, collect
from profiler.site.exercises import exercises_page
from profiler.site.figures import render_figures
from profiler.site.markdown import GENERATED_MARK
from profiler.site.pages import comparison_page, index_page, model_page
from profiler.util.files import check_writable_folder, replace_files

#: Sub-folders whose every file ``report`` writes: stale ones there are removed.
OWNED = ("models", "figures")


def render(data: ReportData) -> dict[str, str | bytes]:
    """Every file of the reports folder: path relative to it → markdown text or PNG bytes, in writing order."""
    files: dict[str, str | bytes] = {"README.md": index_page(data), "comparison.md": comparison_page(data)}
    files.update({f"models/{name}.md": model_page(data, name) for name in data.models})
    files["exercises.md"] = exercises_page(data)
    files["claims.md"] = claims_page(data)
    files.update({f"figures/{name}": png for name, png in render_figures(data).items()})
    return files


def check_destination(out_dir: Path) -> None:
    """Fail before any work if ``out_dir`` cannot take the reports: it must be writable, and either new, empty, or
    a reports folder already (its README.md written by ``report``) — the set overwrites README.md and prunes
    ``models/`` and ``figures/``, which in someone else's folder would be their files."""
    check_writable_folder(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    readme = out_dir / "README.md"
    try:
        ours = readme.is_file() and readme.read_text(errors="replace").startswith(GENERATED_MARK)
    except OSError:
        ours = False
    if not ours:
        raise ProfilerError(f"--out {out_dir} holds files that `report` did not write (no generated README.md); "
                            "give a new or empty folder, or a reports folder")


def generate(out_dir: Path) -> list[Path]:
    """Regenerate the reports under ``out_dir`` as one set (measurements are always read from the repository's
    ``reports/data/``); returns the paths written."""
    check_destination(out_dir)
    files = render(collect())
    replace_files(out_dir, files, owned=OWNED)
    return [out_dir / relative for relative in files]
