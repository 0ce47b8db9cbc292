"""The fitted cuDNN workspace coefficients (``calibration.json`` beside this file) and their provenance, and merging
per-convolution workspaces measured on a GPU into it.

``calibration.json`` holds, under ``cudnn``, the fitted rule per stage (``forward``, ``backward_data``,
``backward_filter``) and a ``measured`` table keyed ``<stage>:<ConvCall.key()>`` with the ``probe`` and ``run``
workspace bytes of that exact convolution; :func:`profiler.memory.predict.conv_workspaces` prefers a measured entry
to the rule. The table comes from ``benchmarks/gpu_run.py`` (``reports/data/conv_workspaces_<gpu>.json``); merge it
with ``python -m profiler.memory.calibration merge reports/data/conv_workspaces_<gpu>.json``.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from profiler.errors import ProfilerError
from profiler.util.files import write_atomic

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
#: The convolution passes a workspace is measured for (the first part of a ``measured`` key).
STAGES = ("forward", "backward_data", "backward_filter")
#: Dicts nested deeper than this are written on one line (one stage's coefficients, one measured convolution).
_EXPANDED_DEPTH = 2


@cache
def calibration() -> dict:
    """The cuDNN workspace coefficients and their provenance (``calibration.json``)."""
    return json.loads(CALIBRATION_FILE.read_text())


def merge_measured_workspaces(doc: dict[str, Any], source: str, path: Path = CALIBRATION_FILE) -> dict[str, Any]:
    """Merge a measured workspace table (``doc``: a ``conv_workspaces_<gpu>.json`` with ``provenance`` and
    ``measured``) into the calibration file at ``path``, which then names ``source`` (the table's file) in its
    provenance; entries for the same convolution and stage are replaced. Returns the new calibration.

    A dry run's table (``"dry_run": true``), a key that is not ``<stage>:<convolution>`` or a workspace that is not a
    whole number of bytes is a user error, and the file is left as it was."""
    if doc.get("dry_run"):
        raise ProfilerError(f"{source} is a dry run's table (CPU stand-ins, not measured on a GPU): merge only a "
                            "table measured by benchmarks/gpu_run.py on a GPU")
    table, provenance = _checked_table(doc, source)
    cal = json.loads(path.read_text())
    measured = {**cal["cudnn"].get("measured", {}), **table}
    cal["cudnn"]["measured"] = dict(sorted(measured.items()))
    what = (f"{provenance.get('device')}, torch {provenance.get('torch')}, CUDA {provenance.get('cuda')}, cuDNN "
            f"{provenance.get('cudnn')}, measured {str(provenance.get('date'))[:10]}")
    prov = cal["provenance"]
    fitted = prov["summary"].split("; ")[0]
    prov["summary"] = (f"{fitted}; cuDNN workspaces of {len(measured)} convolution passes measured one by one in "
                       f"{source} ({what}), used instead of the fitted rule for those convolutions")
    prov["measured_from"] = {"file": source, "device": provenance.get("device"), "torch": provenance.get("torch"),
                             "cuda": provenance.get("cuda"), "cudnn": str(provenance.get("cudnn")),
                             "date": provenance.get("date"), "entries": len(measured)}
    write_atomic(path, dump_calibration(cal))
    if path == CALIBRATION_FILE:
        calibration.cache_clear()
    return cal


def _checked_table(doc: dict[str, Any], source: str) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    try:
        table, provenance = doc["measured"], doc["provenance"]
        items = list(table.items())
    except (KeyError, TypeError, AttributeError):
        raise ProfilerError(f"{source} is not a workspace table (it needs 'provenance' and 'measured'); write it "
                            "with benchmarks/gpu_run.py") from None
    checked = {}
    for key, entry in items:
        stage, sep, conv = key.partition(":")
        values = entry if isinstance(entry, dict) else {}
        if stage not in STAGES or not sep or not conv or set(values) != {"probe", "run"} or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values.values()):
            raise ProfilerError(f"{source}: entry {key!r}: {entry!r} is not '<stage>:<convolution>' → "
                                "{'probe': bytes, 'run': bytes} (stages: " + ", ".join(STAGES) + ")")
        checked[key] = {"probe": values["probe"], "run": values["run"]}
    return checked, provenance


def dump_calibration(cal: dict[str, Any]) -> str:
    """``calibration.json``'s text: objects down to a stage expanded one key per line, deeper ones (a stage's
    coefficients, one measured convolution) on one line, so a merge changes only the lines it adds."""
    return _dump(cal, 0) + "\n"


def _dump(value: Any, depth: int) -> str:
    if not isinstance(value, dict) or not value or depth > _EXPANDED_DEPTH:
        return json.dumps(value)
    indent = "  " * (depth + 1)
    items = [f"{indent}{json.dumps(key)}: {_dump(item, depth + 1)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "merge":
        sys.stderr.write("usage: python -m profiler.memory.calibration merge reports/data/conv_workspaces_<gpu>.json\n")
        return 2
    source = Path(argv[1])
    try:
        doc = json.loads(source.read_text())
        cal = merge_measured_workspaces(doc, source.as_posix())
    except (OSError, ValueError) as err:
        sys.stderr.write(f"profiler: error: cannot read {source}: {err}\n")
        return 2
    except ProfilerError as err:
        sys.stderr.write(f"profiler: error: {err}\n")
        return err.exit_code
    print(f"merged {len(doc['measured'])} measured workspaces into {CALIBRATION_FILE}; "
          f"{cal['provenance']['measured_from']['entries']} in all")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
