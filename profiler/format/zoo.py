"""The zoo listing (``python -m profiler models``) as table, markdown, JSON or CSV."""

from __future__ import annotations

from collections.abc import Sequence

from profiler.format.output import render_table, to_csv, to_json
from profiler.kinds import SCHEMA_VERSION
from profiler.models.zoo import ZooRow

EXTERNAL = ("also: torchvision:NAME (any torchvision classification model; 3 channels, 1000 classes, the weights' "
            "crop size) and module.path:callable (your factory, called with no arguments)")


def format_zoo(rows: Sequence[ZooRow], fmt: str) -> str:
    """One line per model: name (aliases), family, source, default size, parameters at that size."""
    if fmt == "json":
        return to_json([{"schema_version": SCHEMA_VERSION, "name": r.name, "aliases": list(r.aliases),
                         "family": r.family, "model_source": r.source, "default_size": r.default_size,
                         "params": r.params} for r in rows])
    if fmt == "csv":
        return to_csv(["name", "aliases", "family", "model_source", "default_size", "params"],
                      [[r.name, " ".join(r.aliases), r.family, r.source, r.default_size, r.params] for r in rows])
    headers = ["name", "family", "source", "default size", "params (1 ch, 10 classes)"]
    table = render_table(headers, [[r.name + "".join(f" = {a}" for a in r.aliases), r.family, r.source,
                                    r.default_size, f"{r.params:,}"] for r in rows], fmt,
                         colalign=("left", "left", "left", "right", "right"))
    return f"{table}\n\n{EXTERNAL}\n"
