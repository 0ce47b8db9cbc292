"""What the memory prediction took from measurements, per card it was measured on (``calibration.json`` beside this
file, keyed by catalogue key): the cuDNN workspace coefficients, and the margin the fit verdict adds to the predicted
peak reserved memory. Each entry names the data it was fitted on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from profiler.gpus import GpuSpec, gpu_spec

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")


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
