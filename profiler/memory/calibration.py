"""The fitted cuDNN workspace coefficients (``calibration.json`` beside this file) and their provenance."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")


@cache
def calibration() -> dict:
    """The cuDNN workspace coefficients and their provenance (``calibration.json``)."""
    return json.loads(CALIBRATION_FILE.read_text())
