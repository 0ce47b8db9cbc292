"""CLI start-up: the whole 12-configuration counting call against a bare ``python -c "import torch"``.

Every command runs as a fresh subprocess (output discarded), from the repository root, with this interpreter; the
commands take turns (import, CLI, reference, import, …) so that the machine's drift lands on all of them alike.
Issue 3's target: the CLI call at batch 128 finishes within 1.5× of the bare import measured in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.common import EXIT_NOTE, Section, markdown_table, ratio, text_table, time_commands
from profiler.models.zoo import CHAPTER7

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 7
TARGET_RATIO = 1.5

BARE_IMPORT = "python -c \"import torch\""
ALL_CONFIGS = ("python -m profiler flops " + " ".join(CHAPTER7)
               + " --size 96 --size 224 --batch 128 --format csv")
ONE_CONFIG = "python -m profiler flops nin"

#: What each row runs (``python`` is this interpreter).
COMMANDS: dict[str, list[str]] = {
    BARE_IMPORT: [sys.executable, "-c", "import torch"],
    ALL_CONFIGS: [sys.executable, "-m", "profiler", "flops", *CHAPTER7, "--size", "96", "--size", "224",
                  "--batch", "128", "--format", "csv"],
    ONE_CONFIG: [sys.executable, "-m", "profiler", "flops", "nin"],
}



def run() -> Section:
    """Time the three commands (one untimed warm-up each: page cache, bytecode), then ``REPEATS`` interleaved rounds;
    the verdict compares the medians."""
    timings = time_commands("startup", COMMANDS, ROOT, REPEATS)
    base = timings[BARE_IMPORT]
    cli = timings[ALL_CONFIGS]
    measured = cli.median_s / base.median_s
    verdict = "PASS" if measured <= TARGET_RATIO else "FAIL"
    target = (f"12-config CLI call at batch 128 ≤ {TARGET_RATIO}× a bare `import torch`",
              f"{measured:.3f}× (medians {cli.median_s:.2f} s / {base.median_s:.2f} s; mins "
              f"{ratio(cli.min_s, base.min_s)})", verdict)
    headers = ("command", "runs", "min s", "median s", "median ÷ bare import")
    align = ("left", "right", "right", "right", "right")
    rows = [(label, str(t.n), f"{t.min_s:.2f}", f"{t.median_s:.2f}", ratio(t.median_s, base.median_s))
            for label, t in timings.items()]
    body = "\n\n".join([
        "Wall time of whole commands, each a fresh subprocess from the repository root with output discarded: "
        "interpreter start, imports, model building, counting and writing the CSV. "
        f"One untimed warm-up each, then {REPEATS} rounds in turn (bare import, 12-config call, single config). "
        f"{EXIT_NOTE}",
        markdown_table(("target", "measured", "result"), [target]),
        markdown_table(headers, [(f"`{label}`", *rest) for label, *rest in rows], align),
    ])
    summary = "\n".join([
        text_table(headers, rows, align),
        f"target: {target[0].replace('`', '')}: {target[1]} → {verdict}",
    ])
    return Section("CLI start-up against a bare `import torch`", body, summary)

