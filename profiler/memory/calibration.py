"""What the memory prediction took from measurements, per card it was measured on (``calibration.json`` beside this
file, keyed by catalogue key): the cuDNN workspace model (:mod:`profiler.memory.workspaces`), and the margin the fit
verdict adds to the predicted peak reserved memory. Each entry names the data it was fitted on.

A card's ``cudnn_workspaces`` also holds a ``measured`` table keyed ``<stage>:<ConvCall.key()>`` with the ``probe``
and ``run`` workspace bytes of that exact convolution, which the predictor prefers to the rule. The table comes from
``benchmarks/gpu_run.py`` (``reports/data/conv_workspaces_<gpu>.json``); merge it with
``python -m profiler.memory.calibration merge reports/data/conv_workspaces_<gpu>.json``.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from profiler.catalogue import GpuSpec, gpu_for_device, gpu_spec
from profiler.errors import ProfilerError
from profiler.util.files import write_atomic

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

STAGES = ("forward", "backward_data", "backward_filter")
#: calibration.json is expanded one key per line down to a stage; deeper objects stay on one line each.
_EXPANDED_DEPTH = 3


@dataclass(frozen=True)
class Calibration:
    """The calibration of one card. ``workspaces`` is the cuDNN workspace model (see
    :mod:`profiler.memory.workspaces`); ``reserved_margins`` holds m per mode ("inference", "train"): the largest
    factor by which a prediction of peak reserved memory fell short of ``fitted_on``'s measurements, leave-one-model-out
    or in-sample (0.2 = 20 %)."""

    key: str
    device: str
    fitted_on: str
    summary: str
    workspaces: dict[str, Any]
    reserved_margins: dict[str, float]
    reserved_margin_source: str
    provenance: dict[str, str]

    def other_card_note(self, gpu: GpuSpec) -> str | None:
        """A note when ``gpu`` is not the card this calibration was measured on (None when it is)."""
        if gpu.key == self.key:
            return None
        return (f"cuDNN workspace calibration made on the {self.device}, not on the {gpu.name}: cuDNN may choose "
                f"other kernels there, with other workspaces")


@cache
def calibrations() -> dict[str, Calibration]:
    """Every card's calibration in ``calibration.json``, by catalogue key."""
    doc = json.loads(CALIBRATION_FILE.read_text())
    return {key: Calibration(key=key, device=entry["device"], fitted_on=entry["fitted_on"], summary=entry["summary"],
                             workspaces=entry["cudnn_workspaces"], reserved_margins=entry["reserved_margins"],
                             reserved_margin_source=entry["reserved_margin_source"],
                             provenance=entry["provenance"])
            for key, entry in doc.items()}


def calibration_for(gpu: GpuSpec) -> Calibration:
    """The calibration measured on ``gpu``, else the one of the card closest to it (same compute capability major,
    then the nearest minor): cuDNN's kernel choice follows the architecture."""
    table = calibrations()
    if gpu.key in table:
        return table[gpu.key]
    return min(table.values(), key=lambda cal: _distance(cal.key, gpu))


def _distance(key: str, gpu: GpuSpec) -> tuple[int, int]:
    major, minor = gpu_spec(key).compute_capability
    return abs(major - gpu.compute_capability[0]), abs(minor - gpu.compute_capability[1])


def merge_measured_workspaces(doc: dict[str, Any], source: str, path: Path = CALIBRATION_FILE) -> dict[str, Any]:
    """Merge a measured workspace table (``doc``: a ``conv_workspaces_<gpu>.json`` with ``provenance`` and
    ``measured``) into the entry of the card it was measured on in the calibration file at ``path``, which then
    names ``source`` (the table's file) in its provenance; entries for the same convolution and stage are replaced.
    A card without an entry gets a copy of the closest card's rule and margins, said so in its summary. Returns the
    card's new entry.

    A dry run's table (``"dry_run": true``), a key that is not ``<stage>:<convolution>`` or a workspace that is not a
    whole number of bytes is a user error, and the file is left as it was."""
    if doc.get("dry_run"):
        raise ProfilerError(f"{source} is a dry run's table (CPU stand-ins, not measured on a GPU): merge only a "
                            "table measured by benchmarks/gpu_run.py on a GPU")
    table, provenance = _checked_table(doc, source)
    card = gpu_for_device(str(provenance.get("device", "")))
    if card is None:
        raise ProfilerError(f"{source} was measured on {provenance.get('device')!r}, a card the catalogue "
                            "(profiler/catalogue.py) does not have: add it there first")
    cal = json.loads(path.read_text())
    if card.key not in cal:
        closest = min(cal, key=lambda key: _distance(key, card))
        cal[card.key] = copy.deepcopy(cal[closest])
        cal[card.key].update(device=card.name, summary=f"rule and margins copied from {closest} "
                                                       f"({cal[closest]['device']})")
        cal[card.key]["cudnn_workspaces"]["measured"] = {}
        cal = dict(sorted(cal.items()))
    entry = cal[card.key]
    measured = {**entry["cudnn_workspaces"].get("measured", {}), **table}
    entry["cudnn_workspaces"]["measured"] = dict(sorted(measured.items()))
    what = (f"{provenance.get('device')}, torch {provenance.get('torch')}, CUDA {provenance.get('cuda')}, cuDNN "
            f"{provenance.get('cudnn')}, measured {str(provenance.get('date'))[:10]}")
    fitted = entry["summary"].split("; measured: ")[0]
    entry["summary"] = (f"{fitted}; measured: cuDNN workspaces of {len(measured)} convolution passes measured one by "
                        f"one in {source} ({what}), used instead of the rule for those convolutions")
    entry["provenance"]["measured_from"] = {
        "file": source, "device": provenance.get("device"), "torch": provenance.get("torch"),
        "cuda": provenance.get("cuda"), "cudnn": str(provenance.get("cudnn")), "date": provenance.get("date"),
        "entries": len(measured)}
    write_atomic(path, dump_calibration(cal))
    if path == CALIBRATION_FILE:
        calibrations.cache_clear()
    return entry


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
          f"{cal['provenance']['measured_from']['entries']} in all for this card")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
