"""How long ``python -m profiler report`` takes to regenerate every report from the committed data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Section, interleaved, markdown_table, text_table

REPEATS = 3


def run() -> Section:
    from profiler.site.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        timing = interleaved({"report": lambda: generate(Path(tmp) / "reports")}, REPEATS)["report"]
        written = len(timing.result)
    rows = [["`python -m profiler report` (in-process, into a temporary folder)", timing.n,
             f"{timing.min_s:.1f}", f"{timing.median_s:.1f}", written]]
    headers = ["what", "runs", "min s", "median s", "files written"]
    body = ("Counts and memory predictions are computed on the spot on meta tensors, measurements read from "
            "`reports/data/`, figures drawn with matplotlib; the target is well under a minute on 2 cores.\n\n"
            + markdown_table(headers, rows))
    return Section(title="Report regeneration time", body=body, summary=text_table(headers, rows))
