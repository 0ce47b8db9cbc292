"""How long ``python -m profiler report`` takes to regenerate every report, against a bare ``python -c "import torch"``
measured in the same run.

Both run as fresh subprocesses from the repository root with this interpreter, taking turns (import, report, import,
…) so that the machine's drift lands on both alike; the report writes into a temporary folder. Issue 11's target:
the report within 6× the bare import, on the 2-core machine CI runs on.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import EXIT_NOTE, Section, markdown_table, ratio, text_table, time_commands

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3
TARGET_RATIO = 6.0



def run() -> Section:
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "python -m profiler report --out TMP": [sys.executable, "-m", "profiler", "report", "--out",
                                                    str(Path(tmp) / "reports")],
        }
        timings = time_commands("reports", commands, ROOT, REPEATS)
        written = sum(1 for path in (Path(tmp) / "reports").rglob("*") if path.is_file())
    base, report = timings['python -c "import torch"'], timings["python -m profiler report --out TMP"]
    measured = report.median_s / base.median_s
    verdict = "PASS" if measured <= TARGET_RATIO else "FAIL"
    target = (f"`python -m profiler report` ≤ {TARGET_RATIO:g}× a bare `import torch`",
              f"{measured:.2f}× (medians {report.median_s:.1f} s / {base.median_s:.2f} s; mins "
              f"{ratio(report.min_s, base.min_s)})", verdict)
    headers = ["command", "runs", "min s", "median s", "median ÷ bare import"]
    rows = [[f"`{label}`", t.n, f"{t.min_s:.2f}", f"{t.median_s:.2f}", ratio(t.median_s, base.median_s)]
            for label, t in timings.items()]
    body = "\n\n".join([
        f"Whole commands, each a fresh subprocess, output discarded; one untimed warm-up each, then {REPEATS} rounds "
        f"in turn. The report computes every count and prediction on meta tensors (on every core: "
        f"`profiler/util/parallel.py`), reads the measurements of `reports/data/`, draws the figures and writes "
        f"{written} files. {EXIT_NOTE}",
        markdown_table(("target", "measured", "result"), [target]),
        markdown_table(headers, rows, ("left", "right", "right", "right", "right")),
    ])
    return Section(title="Report regeneration time against a bare `import torch`", body=body,
                   summary=text_table(headers, [[label.strip("`"), *rest] for label, *rest in rows])
                   + f"\ntarget: {target[0].replace('`', '')}: {target[1]} → {verdict}")
