"""The comparison report, one page per model, and the index of ``reports/``: records → markdown, no arithmetic beyond
units, ratios and shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from profiler.bandwidth.fit import measurement_key
from profiler.bandwidth.records import BandwidthResult
from profiler.bandwidth.timemodel import committed_calibration
from profiler.catalogue import gpu_spec
from profiler.counting import LayerStats, conventions
from profiler.format.counts import ROW_KIND_SUFFIX, TRAIN_NOTE, format_stats
from profiler.kinds import HOST_WAIT_ROW, Bound
from profiler.memory import validation
from profiler.memory.calibration import calibration_for
from profiler.memory.trace import CATEGORIES
from profiler.models.zoo import CHAPTER7, EDITION_NAME, ENGLISH_EDITION_NAME, ZOO
from profiler.site.collect import BATCH, GPU, SIZES, ModelData, ReportData, SizeData
from profiler.site.figures import FIGURES, roofline_file
from profiler.site.markdown import (
    FP32_RIDGE_FLOP_PER_BYTE,
    PREDICTED_FOR,
    ROOFS,
    TF32_RIDGE_FLOP_PER_BYTE,
    anchor,
    command,
    error,
    gib,
    giga,
    layer_ms,
    mib,
    ms,
    ms_and_share,
    page,
    per_second,
    prediction_line,
    provenance_lines,
    ratio,
    share,
    table,
    terabytes_per_s,
    teraflops_per_s,
    tf32_note,
)
from profiler.site.measured import MeasuredRun, Measurements
from profiler.site.measured_gpu import MeasuredLayerTimes
from profiler.util.units import human_bytes, human_count

TOP_LAYERS = 5
SMALL, LARGE = SIZES
#: How many layer names a row of tied layers lists before "and N more".
TIED_NAMES = 4
#: The last row of a time table.
STEP_ROW = "step"
#: Where measured per-layer times come from, once a GPU run commits them.
MEASURED_TIMES = "reports/data/gpu_bandwidth_<gpu>.json"


def _measured(measured: Measurements, name: str, size: int, train: bool) -> MeasuredRun | None:
    return measured.run(name, size, train, BATCH)


def _mode(train: bool) -> str:
    return "training" if train else "inference"


def _time_prediction_line() -> str:
    calibration = committed_calibration()
    errors = calibration.errors
    return (f"time {PREDICTED_FOR}, no GPU used: the time model (profiler/bandwidth/timemodel.py) gives each CUDA "
            "kernel of the step a roofline time on the datasheet roofs PyTorch's defaults select (TF32 tensor cores "
            "for float32 convolutions, FP32 units for matrix products) at fitted efficiencies, plus a kernel floor "
            f"and host launch costs; its 12 coefficients were fitted on the {len(calibration.fitted_on) - 1} step "
            f"times of `{calibration.fitted_on[0]}` ({calibration.date}): step-time error "
            f"{errors['in_sample_mean_percent']:.1f} % mean in-sample, {errors['lomo_mean_percent']:.1f} % mean and "
            f"{errors['lomo_max_percent']:.1f} % worst leave-one-model-out")


def _sources(data: ReportData) -> str:
    lines = [
        f"- counted: static analysis on meta tensors, exact for the model as written, no GPU. {conventions()}. "
        f"{TRAIN_NOTE[0].upper()}{TRAIN_NOTE[1:]}.",
        f"- memory {prediction_line()}.",
        f"- {_time_prediction_line()}.",
        *provenance_lines(data.measured),
        "- derived: achieved FLOP/s = counted FLOPs of the step ÷ measured time of the step; effective bandwidth "
        "= counted bytes of the step ÷ measured time. The optimizer update is in the measured time but not in the "
        "counts, and the counted bytes assume every tensor an op touches crosses DRAM (caches and fused kernels "
        "move less): yardsticks, not measurements.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- comparison.md

def _cost_tables(data: ReportData, size: int) -> str:
    per_image, batched = [], []
    for name in CHAPTER7:
        sd = data.models[name].sizes[size]
        per_image.append([name, f"{sd.layers.params:,}", giga(sd.layers.totals.macs), giga(sd.layers.totals.flops),
                          giga(sd.train.totals.flops / BATCH)])
        batched.append([name, gib(sd.inference.totals.bytes), gib(sd.train.totals.bytes),
                        f"{sd.inference.totals.intensity:.1f}", f"{sd.train.totals.intensity:.1f}"])
    return "\n\n".join([
        "**Per image** (MACs and FLOPs grow exactly with the batch):",
        table(["model", "params", "MACs (G)", "FLOPs, forward (G)", "FLOPs, training step (G)"], per_image),
        f"**At batch {BATCH}** (weights are read once per batch, so bytes do not grow with it):",
        table(["model", "bytes moved, forward (GiB)", "bytes moved, training step (GiB)", "FLOP/B, forward",
               "FLOP/B, training step"], batched),
    ])


def _memory_tables(data: ReportData, size: int) -> str:
    """Allocated and reserved peaks of the committed reference runs at ``size``: measured, predicted, the error with
    the committed calibration and leave-one-model-out, the range of the reserved error when the workspaces move
    (:func:`profiler.memory.validation.workspace_sensitivity`), and the fit verdict's required bytes against the
    measurement: three tables of at most seven columns."""
    allocated, reserved, verdict = [], [], []
    for e, sensitivity in zip(data.memory_errors, data.memory_sensitivity, strict=True):
        run = e.run
        if run.size != size:
            continue
        low, high = sensitivity.reserved
        allocated.append([run.model, _mode(run.train), mib(run.peak_allocated), mib(e.allocated),
                          error(e.allocated, run.peak_allocated), error(e.lomo_allocated, run.peak_allocated)])
        reserved.append([run.model, _mode(run.train), mib(run.peak_reserved), mib(e.reserved),
                         error(e.reserved, run.peak_reserved), error(e.lomo_reserved, run.peak_reserved),
                         f"{error(low, run.peak_reserved)} to {error(high, run.peak_reserved)}"])
        verdict.append([run.model, _mode(run.train), mib(run.peak_reserved), mib(e.required),
                        f"{e.required / run.peak_reserved:.2f}×"])
    right = ("right",) * 5
    return "\n\n".join([
        "**Peak allocated** (`torch.cuda.max_memory_allocated`):",
        table(["model", "step", "measured", "predicted", "error", "error, LOMO"], allocated,
              ("left", "left") + right[:4]),
        "**Peak reserved** (`torch.cuda.max_memory_reserved`, what decides an out of memory):",
        table(["model", "step", "measured", "predicted", "error", "error, LOMO",
               f"error, workspaces ±{100 * validation.WORKSPACE_SPREAD:.0f} %"], reserved, ("left", "left") + right),
        "**Does it fit**: the verdict's required bytes (predicted) against the measured peak reserved:",
        table(["model", "step", "reserved, measured", "required, predicted", "required ÷ measured, predicted"], verdict,
              ("left", "left") + right[:3]),
    ])


def _memory_lead() -> str:
    margins = calibration_for(gpu_spec(GPU)).reserved_margins
    return (f"The committed reference runs ({validation.REFERENCE_FILE.name}, batch {BATCH}). *error* uses the "
            "committed calibration, fitted on all six models; *error, LOMO* refits the one fitted workspace "
            "coefficient without the model in the row (leave one model out): the error a model the fit never saw "
            "can expect. *required* is the fit verdict's need, predicted reserved × (1 + m), m = "
            f"{100 * margins['inference']:.1f} % for inference and {100 * margins['train']:.1f} % for training (the "
            "largest shortfall of a reserved prediction of that mode, leave-one-model-out or in-sample); at 1.00× or "
            "more the verdict covers the measurement. *error, workspaces "
            f"±{100 * validation.WORKSPACE_SPREAD:.0f} %* is the lowest and highest reserved error over "
            f"{validation.SENSITIVITY_DRAWS} replays in which every cuDNN workspace is scaled by its own factor drawn "
            f"from [{1 - validation.WORKSPACE_SPREAD:.2f}, {1 + validation.WORKSPACE_SPREAD:.2f}]: peak reserved "
            "depends on which cached block every workspace and tensor lands in, so workspace sizes a rule gets right "
            "to a few percent move it by much more than they move peak allocated; a reserved error within 10 % on "
            "every run needs the workspaces cuDNN really takes, measured per convolution (`benchmarks/gpu_memory.py`).")


def _time_lead() -> str:
    calibration = committed_calibration()
    errors = calibration.errors
    return (f"Step times at batch {BATCH}, float32, SGD: measured on the H200 of the reference, and {PREDICTED_FOR} "
            "— the same card — by the time model with no GPU. Its 12 coefficients were fitted on these very "
            f"{len(calibration.fitted_on) - 1} step times (`{calibration.fitted_on[0]}`, fitted "
            f"{calibration.date}, `profiler/bandwidth/time_calibration.json`), so *error* (in-sample) proves little. "
            "*error, LOMO* is the honest figure: the model in the row predicted by coefficients fitted without any "
            "of its configurations (leave one model out), as `python -m benchmarks timing` recorded it in that "
            f"file. Mean |error| {errors['in_sample_mean_percent']:.1f} % in-sample; "
            f"{errors['lomo_mean_percent']:.1f} % mean and {errors['lomo_max_percent']:.1f} % worst "
            "leave-one-model-out. *bound* is what sets the predicted step: the compute units, memory bandwidth, or "
            "the host launching kernels.")


def _time_tables(data: ReportData, size: int) -> str:
    lomo = committed_calibration().errors["per_configuration_percent"]
    times, rates = [], []
    for name in CHAPTER7:
        sd = data.models[name].sizes[size]
        for stats, predicted, train in ((sd.inference, sd.time_inference, False), (sd.train, sd.time_train, True)):
            run = _measured(data.measured, name, size, train)
            fitted = lomo.get(measurement_key(name, size, train, BATCH, GPU))
            times.append([name, _mode(train), ms(run.ms_per_step if run else None), ms(predicted.step_ms),
                          error(predicted.step_ms, run.ms_per_step if run else None),
                          f"{fitted['lomo']:+.1f} %" if fitted else "-", predicted.bound])
            rates.append([name, _mode(train), per_second(run.examples_per_s if run else None),
                          teraflops_per_s(run.achieved_per_s(stats.totals.flops) if run else None),
                          terabytes_per_s(run.achieved_per_s(stats.totals.bytes) if run else None)])
    align = ("left", "left", "right", "right", "right", "right", "left")
    return "\n\n".join([
        table(["model", "step", "ms/step, measured", f"ms/step, {PREDICTED_FOR}", "error", "error, LOMO",
               "bound, predicted"], times, align),
        f"**Rates** (derived from the measured step time). {tf32_note()}",
        table(["model", "step", "examples/s, measured", "achieved TFLOP/s, derived (TF32 convolutions)",
               "effective bandwidth, derived (TB/s)"], rates, align[:5]),
    ])


def _ratio_tables(data: ReportData) -> str:
    counted, memory, times = [], [], []
    for name in CHAPTER7:
        small, large = data.models[name].sizes[SMALL], data.models[name].sizes[LARGE]
        runs = {(size, train): _measured(data.measured, name, size, train) for size in SIZES for train in (False, True)}

        def measured(train: bool, field: str, runs: dict = runs) -> str:
            low, high = runs[SMALL, train], runs[LARGE, train]
            return ratio(getattr(high, field), getattr(low, field)) if low and high else "-"

        counted.append([name, ratio(large.layers.params, small.layers.params),
                        ratio(large.layers.totals.macs, small.layers.totals.macs),
                        ratio(large.inference.totals.bytes, small.inference.totals.bytes),
                        ratio(large.train.totals.bytes, small.train.totals.bytes),
                        ratio(large.inference.totals.intensity, small.inference.totals.intensity)])
        memory.append([name,
                       ratio(large.memory_inference.peak_allocated_bytes, small.memory_inference.peak_allocated_bytes),
                       measured(False, "peak_allocated_bytes"),
                       ratio(large.memory_train.peak_allocated_bytes, small.memory_train.peak_allocated_bytes),
                       measured(True, "peak_allocated_bytes")])
        times.append([name, ratio(large.time_inference.step_ms, small.time_inference.step_ms),
                      measured(False, "ms_per_step"), ratio(large.time_train.step_ms, small.time_train.step_ms),
                      measured(True, "ms_per_step")])
    return "\n\n".join([
        f"**Counted** (bytes and FLOP/B at batch {BATCH}):",
        table(["model", "params", "MACs", "bytes moved, forward", "bytes moved, training step", "FLOP/B, forward"],
              counted),
        f"**Peak memory allocated** (batch {BATCH}):",
        table(["model", "inference, predicted", "inference, measured", "training step, predicted",
               "training step, measured"], memory),
        f"**Time per step** (batch {BATCH}):",
        table(["model", "inference, predicted", "inference, measured", "training step, predicted",
               "training step, measured"], times),
    ])


def comparison_page(data: ReportData) -> str:
    """``reports/comparison.md``: the six chapter-7 models at 96 and 224, counted, predicted and measured."""
    copy = next((s for s in data.measured.sets if s.copy_bandwidth_bytes_per_s), None)
    copy_note = (f"For scale, the same file measured a device-to-device copy on the {copy.device} at "
                 f"{terabytes_per_s(copy.copy_bandwidth_bytes_per_s)} TB/s (read + write)." if copy else "")
    lead = "\n\n".join([
        "The models of chapter 7 (the modern CNNs) as the book defines them — "
        f"{', '.join(f'`{n}`' for n in CHAPTER7)} (VGG-11 and ResNet-18), 1 input channel (Fashion-MNIST), 10 "
        "classes, float32 — always in the chapter's order. Chapters and sections are numbered as in "
        f"{EDITION_NAME}, which the course notes follow; {ENGLISH_EDITION_NAME} numbers this chapter 8. Per-model "
        "detail: [models/](models/). Four kinds of number, never mixed:",
        _sources(data),
        "One cuDNN workspace coefficient of the memory prediction and the 12 coefficients of the time prediction "
        "were fitted to the measurements below: their tables show each error twice, with that fit and "
        "leave-one-model-out (fitted without the model).",
    ])
    sections = []
    for size in (LARGE, SMALL):
        sections += [
            f"## {size}×{size} input",
            f"### Cost (counted)\n\n{_cost_tables(data, size)}",
            f"### Peak memory at batch {BATCH} (MiB; {PREDICTED_FOR})\n\n{_memory_lead()}\n\n"
            f"{_memory_tables(data, size)}",
            f"### Time at batch {BATCH} (measured, and {PREDICTED_FOR})\n\n{_time_lead()}\n\n"
            f"{_time_tables(data, size)}\n\n{copy_note}".rstrip(),
        ]
    sections += [
        f"## {LARGE} vs {SMALL}: ratio {LARGE}/{SMALL} of each quantity\n\n"
        f"Growing the input from {SMALL}×{SMALL} to {LARGE}×{LARGE} multiplies its area by "
        f"({LARGE}/{SMALL})² = {(LARGE / SMALL) ** 2:.2f}: what is made per pixel (convolution MACs, activations) "
        "grows about that much, weights do not — except a fully connected layer fed by a flattened feature map "
        "(AlexNet, VGG). Floor division of strided layers makes the small input's maps relatively smaller still. "
        "Time grows less than the area where the small input's step is host-bound or its kernels too small to "
        f"fill the GPU.\n\n{_ratio_tables(data)}",
        "## Figures\n\n" + "\n\n".join(f"![{caption}](figures/{file})\n\n*{caption}.*"
                                       for file, (caption, _) in FIGURES.items()),
    ]
    return page(f"Chapter-7 CNNs compared at {SMALL}×{SMALL} and {LARGE}×{LARGE}", lead, sections)


# --------------------------------------------------------------------------------------------- models/<name>.md

def _heaviest(layers: list[LayerStats], key: str, label: str, total: int) -> str:
    top = sorted((layer for layer in layers if getattr(layer, key)), key=lambda layer: -getattr(layer, key))
    rows = [[layer.name, layer.type, human_count(getattr(layer, key)) if key == "macs" else f"{layer.params:,}",
             share(getattr(layer, key), total)] for layer in top[:TOP_LAYERS]]
    return table(["layer", "type", label, "share of the model"], rows, ("left", "left", "right", "right"))


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:TIED_NAMES])
    return shown if len(names) <= TIED_NAMES else f"{shown} and {len(names) - TIED_NAMES} more"


def _activation_table(sd: SizeData) -> str:
    """The largest amounts a layer's forward allocates, each amount (as printed) once, with every layer that
    allocates it."""
    types = {layer.name: layer.type for layer in sd.layers.layers}
    total = sum(sd.memory_train.layers.values())
    tied: dict[str, list[tuple[str, int]]] = {}
    for name, nbytes in sorted(sd.memory_train.layers.items(), key=lambda item: -item[1]):
        tied.setdefault(human_bytes(nbytes), []).append((name, nbytes))
    rows = []
    for amount, layers in list(tied.items())[:TOP_LAYERS]:
        names = sorted((name for name, _ in layers), key=list(sd.memory_train.layers).index)
        kinds = Counter(types.get(name, "-") for name in names)
        rows.append([_names(names), ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in kinds.items()),
                     amount, share(sum(nbytes for _, nbytes in layers), total)])
    return table(["layers", "types", "bytes each layer's forward allocates", "share of all layers, together"], rows,
                 ("left", "left", "right", "right"))


def _time_ranking(sd: SizeData) -> str:
    result = sd.time_train
    top = sorted((row for row in result.layers if row.ms_per_step), key=lambda row: -row.ms_per_step)[:TOP_LAYERS]
    rows = [[row.name, row.type, layer_ms(row.ms_per_step), share(row.ms_per_step, result.step_ms), row.bound]
            for row in top]
    return table(["layer", "type", "ms/step, predicted", "share of the step", "bound, predicted"], rows,
                 ("left", "left", "right", "right", "left"))


def _summary_table(data: ReportData, model: ModelData) -> str:
    """Rows of (label, raw value per size, formatter); the last column is the LARGE/SMALL ratio of the raw values."""
    def run(size: int, train: bool) -> MeasuredRun | None:
        return _measured(data.measured, model.name, size, train)

    def measured_bytes(value: float | None) -> str:
        return "-" if value is None else human_bytes(value)

    def ratio_of(values: dict[int, float | None]) -> str:
        return ratio(values.get(LARGE), values.get(SMALL))

    def intensity(value: float | None) -> str:
        return f"{value:.1f}"

    quantities: list[tuple[str, Callable[[SizeData], float | None], Callable[[float | None], str], bool]] = [
        ("params", lambda sd: sd.layers.params, lambda v: f"{v:,}", True),
        ("MACs / image", lambda sd: sd.layers.totals.macs, human_count, True),
        ("FLOPs / image, training step", lambda sd: sd.train.totals.flops / BATCH, human_count, True),
        ("bytes moved, forward, batch 1", lambda sd: sd.layers.totals.bytes, human_bytes, True),
        ("FLOP/B, forward, batch 1", lambda sd: sd.layers.totals.intensity, intensity, False),
        (f"FLOP/B, forward, batch {BATCH}", lambda sd: sd.inference.totals.intensity, intensity, False),
        (f"peak memory, inference, batch {BATCH}, {PREDICTED_FOR}",
         lambda sd: sd.memory_inference.peak_allocated_bytes, human_bytes, True),
        (f"peak memory, inference, batch {BATCH}, measured",
         lambda sd: getattr(run(sd.size, False), "peak_allocated_bytes", None), measured_bytes, True),
        (f"peak memory, training step, batch {BATCH}, {PREDICTED_FOR}",
         lambda sd: sd.memory_train.peak_allocated_bytes, human_bytes, True),
        (f"peak memory, training step, batch {BATCH}, measured",
         lambda sd: getattr(run(sd.size, True), "peak_allocated_bytes", None), measured_bytes, True),
        (f"ms/step, inference, batch {BATCH}, {PREDICTED_FOR}", lambda sd: sd.time_inference.step_ms, ms, True),
        (f"ms/step, inference, batch {BATCH}, measured",
         lambda sd: getattr(run(sd.size, False), "ms_per_step", None), ms, True),
        (f"ms/step, training step, batch {BATCH}, {PREDICTED_FOR}", lambda sd: sd.time_train.step_ms, ms, True),
        (f"ms/step, training step, batch {BATCH}, measured",
         lambda sd: getattr(run(sd.size, True), "ms_per_step", None), ms, True),
    ]
    rows = []
    for label, value, fmt, with_ratio in quantities:
        values = {size: value(sd) for size, sd in model.sizes.items()}
        if label.endswith("measured") and all(v is None for v in values.values()):
            continue
        rows.append([label, *(fmt(v) for v in values.values()), ratio_of(values) if with_ratio else ""])
    measured = any(label.endswith("measured") for label, *_ in rows)
    note = "" if measured else "\n\nNo GPU measurement of this model is committed under `reports/data/`."
    return table(["", *(f"{size}×{size}" for size in model.sizes), f"{LARGE}/{SMALL}"], rows) + note


def _breakdown_table(data: ReportData, model: ModelData) -> str:
    headers = ["configuration", *CATEGORIES, "peak allocated", "peak reserved", "measured peak allocated",
               "measured peak reserved"]
    rows = []
    for size, sd in model.sizes.items():
        for result, train in ((sd.memory_inference, False), (sd.memory_train, True)):
            run = _measured(data.measured, model.name, size, train)
            parts = [mib(result.breakdown[c]) if result.breakdown.get(c) is not None else "(in activations)"
                     for c in CATEGORIES]
            rows.append([f"{size}×{size} {'training step' if train else 'inference'}", *parts,
                         mib(result.peak_allocated_bytes), mib(result.peak_reserved_bytes),
                         mib(run.peak_allocated_bytes if run else None), mib(run.peak_reserved_bytes if run else None)])
    return table(headers, rows)


def _block(name: str, depth: int | None) -> str:
    """The row of the folded table (``--depth``) that ``name`` is summed into."""
    return ".".join(name.split(".")[:depth]) if depth and name.count(".") >= depth else name


def _measured_times(data: ReportData, name: str, size: int, train: bool) -> MeasuredLayerTimes | None:
    return next((run for s in data.measured_times if (run := s.run(name, size, train, BATCH))), None)


def _bound_cell(bounds: dict[str, float]) -> str:
    """A row's bound from the predicted time of its layers by bound: one word, or the larger with its share."""
    timed = {bound: seconds for bound, seconds in bounds.items() if seconds}
    if len(timed) <= 1:
        return next(iter(timed), "-")
    top = max(timed, key=timed.__getitem__)
    return f"{top} ({share(timed[top], sum(timed.values()))})"


def _folded_times(result: BandwidthResult, depth: int | None) -> dict[str, dict]:
    """Block → {"ms": predicted ms per step, "bounds": bound → ms, "type": the row's type}, in row order; the GPU's
    wait for the host, where the step has one, as a row of its own."""
    rows: dict[str, dict] = {}
    for layer in result.layers:
        row = rows.setdefault(_block(layer.name, depth), {"ms": 0.0, "bounds": {}, "type": layer.type})
        row["ms"] += layer.ms_per_step
        if layer.bound:
            row["bounds"][layer.bound] = row["bounds"].get(layer.bound, 0.0) + layer.ms_per_step
    if result.idle_ms:
        rows[HOST_WAIT_ROW] = {"ms": result.idle_ms, "bounds": {Bound.HOST: result.idle_ms}, "type": "-"}
    return rows


def _folded_measured(run: MeasuredLayerTimes | None, depth: int | None) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for layer in run.layers if run else ():
        rows.setdefault(_block(layer.name, depth), {"ms": 0.0})["ms"] += layer.ms_per_step
    if run and run.idle_ms:
        rows[HOST_WAIT_ROW] = {"ms": run.idle_ms}
    return rows


def _time_table(data: ReportData, model: ModelData, sd: SizeData) -> str:
    """Predicted time per row (folded like the per-layer table) for inference and the training step, with the
    measured kernel times beside them where a committed GPU run has this configuration."""
    predicted = {train: _folded_times(result, model.depth)
                 for train, result in ((False, sd.time_inference), (True, sd.time_train))}
    runs = {train: _measured_times(data, model.name, sd.size, train) for train in (False, True)}
    measured = {train: _folded_measured(run, model.depth) for train, run in runs.items()}
    steps = {False: sd.time_inference.step_ms, True: sd.time_train.step_ms}
    types = {layer.name: layer.type + ROW_KIND_SUFFIX.get(layer.kind, "") for layer in sd.table.layers}
    keys = list(dict.fromkeys([*predicted[True], *predicted[False], *measured[True], *measured[False]]))
    rows = []
    for key in keys:
        cells = [key, types.get(key) or predicted[True].get(key, predicted[False].get(key, {})).get("type", "-")]
        for train in (False, True):
            cells.append(ms_and_share(predicted[train].get(key, {}).get("ms"), steps[train]))
            if runs[train]:
                cells.append(ms_and_share(measured[train].get(key, {}).get("ms"), runs[train].step_ms))
        bounds = [_bound_cell(predicted[train].get(key, {}).get("bounds", {})) for train in (False, True)]
        cells.append("-" if bounds == ["-", "-"] else " / ".join(bounds))
        rows.append(cells)
    step = [STEP_ROW, ""]
    for train, result in ((False, sd.time_inference), (True, sd.time_train)):
        step.append(f"{layer_ms(result.step_ms)} (100.0 %)")
        if runs[train]:
            step.append(f"{layer_ms(runs[train].step_ms)} (100.0 %)")
    rows.append([*step, f"{sd.time_inference.bound} / {sd.time_train.bound}"])
    headers = ["layer", "type"]
    for train in (False, True):
        headers.append(f"{_mode(train)}: ms/step (share), predicted")
        if runs[train]:
            headers.append(f"{_mode(train)}: kernel ms/step (share), measured")
    headers.append("bound (inference / training), predicted")
    return table(headers, rows, ("left", "left", *("right",) * (len(headers) - 3), "left"))


#: The heading of a model page's time section (the "By time" ranking links to it).
TIME_HEADING = f"Time per layer at batch {BATCH} ({PREDICTED_FOR})"


def _time_section(data: ReportData, model: ModelData) -> str:
    calibration = committed_calibration()
    lomo = calibration.errors["per_configuration_percent"]
    fitted = [f"{_mode(train)} at {size}: {lomo[key]['lomo']:+.1f} %" for size in model.sizes for train in (False, True)
              if (key := measurement_key(model.name, size, train, BATCH, GPU)) in lomo]
    if fitted:
        fit = (f"This model's step times at batch {BATCH} are among the ones fitted on; predicted without them "
               f"(leave one model out) its step times err by {', '.join(fitted)} — see "
               "[comparison.md](../comparison.md).")
    else:
        fit = ("This model is not among the fitted ones: its prediction is for a network the fit never saw, as the "
               f"leave-one-model-out errors measure (mean {calibration.errors['lomo_mean_percent']:.1f} %, worst "
               f"{calibration.errors['lomo_max_percent']:.1f} % on the six fitted models).")
    measured = any(_measured_times(data, model.name, size, train) for size in model.sizes for train in (False, True))
    check = ("Measured kernel times per layer stand beside the prediction where a committed GPU run has them "
             f"(`{MEASURED_TIMES}`)." if measured else
             f"No measured time per layer is committed yet (`{MEASURED_TIMES}`, written by `benchmarks/gpu_run.py` on "
             "a GPU): the per-layer split below is predicted only, and checked only through the step time it adds "
             "up to. Measured columns appear here once such a file is committed.")
    fold = f" Rows are folded like the per-layer tables (`--depth {model.depth}`)." if model.depth else ""
    lead = (f"Each row's predicted kernel time per step and its share of the step, {PREDICTED_FOR} at batch {BATCH} "
            f"(float32; the training step with SGD). {_time_prediction_line()[0].upper()}"
            f"{_time_prediction_line()[1:]}. {fit} *bound*: whether the row's kernels spend more of their time on the "
            "compute roof or on the bandwidth roof (a folded block: the larger, with its share of the block's time); "
            f"`{HOST_WAIT_ROW}` is the part of the step the GPU idles between launches. {check}{fold}")
    cmds = "\n".join(f"python -m profiler bandwidth {model.name} --predict --gpu {GPU} --size {size} --batch {BATCH}"
                     f"{train}" for size in model.sizes for train in ("", " --train"))
    tables = [f"### At {size}×{size}\n\n{_time_table(data, model, sd)}" for size, sd in model.sizes.items()]
    return "\n\n".join([f"## {TIME_HEADING}", lead, command(cmds), *tables])


def _roofline(model: ModelData) -> str:
    sd = model.sizes[model.book_size]

    def below(layers: list[LayerStats]) -> str:
        working = [layer for layer in layers if layer.macs]
        low = [layer for layer in working if layer.intensity < FP32_RIDGE_FLOP_PER_BYTE]
        macs = sum(layer.macs for layer in working)
        return (f"{len(low)} of {len(working)} layers with MACs "
                f"({share(sum(layer.macs for layer in low), macs)} of the MACs)")

    size = f"{sd.size}×{sd.size}"
    caption = (f"Roofline of {model.name}, {PREDICTED_FOR}, at {size}, batch {BATCH}: inference (left) and training "
               "step (right)")
    memory_bound = [row for row in sd.time_train.layers if row.bound == Bound.MEMORY and row.flops]
    return (f"![{caption}](../figures/{roofline_file(model.name)})\n\n*{caption}. Predicted, not measured (no GPU "
            "ran): each layer with counted FLOPs at its counted arithmetic intensity (x) and counted FLOPs ÷ its "
            "predicted kernel time (y), its area the share of the step; the roofs are the datasheet's that the time "
            "model puts each kernel on — TF32 tensor cores for float32 convolutions (PyTorch's default), FP32 units "
            "for the matrix products of linear layers. A measured roofline needs measured kernel times per layer "
            f"(`{MEASURED_TIMES}`).*\n\n"
            f"Counted, at {size}: {below(sd.layers.layers)} sit below the FP32 ridge point "
            f"({FP32_RIDGE_FLOP_PER_BYTE:.1f} FLOP/B; {ROOFS}) at batch 1, and {below(sd.inference.layers)} at batch "
            f"{BATCH}. Below it a layer cannot keep the arithmetic units busy even at full bandwidth. Convolutions "
            f"meet the TF32 roof instead, whose ridge is at {TF32_RIDGE_FLOP_PER_BYTE:.1f} FLOP/B: in the predicted "
            f"training step {len(memory_bound)} layers with FLOPs are memory-bound, "
            f"{share(sum(row.ms_per_step for row in memory_bound), sd.time_train.step_ms)} of the step.")


def _per_layer(model: ModelData, sd: SizeData) -> str:
    depth = f" --depth {model.depth}" if model.depth else ""
    fold = ""
    if model.depth:
        fold = (f"\n\nFolded with `--depth {model.depth}`: rows deeper than {model.depth} name components are summed "
                f"into their block (the full table has {len(sd.layers.layers)} rows: drop `--depth` to see it).")
    return (f"## Per layer at {sd.size}×{sd.size} (inference, batch 1){fold}\n\n"
            f"{command(f'python -m profiler flops {model.name} --size {sd.size}{depth} --format markdown')}\n\n"
            f"{format_stats([sd.table], 'markdown', what='flops').rstrip()}")


def model_page(data: ReportData, name: str) -> str:
    """``reports/models/<name>.md``: one model at every report size, per layer, with its heaviest layers."""
    model = data.models[name]
    sizes = " and ".join(f"{s}×{s}" for s in model.sizes)
    largest = model.sizes[LARGE]
    section = ZOO[name].section
    lead = (f"Zoo name `{name}` ({model.family}): {ZOO[name].what}, from §{section.number} {section.title} of "
            f"{EDITION_NAME}, the numbering the course notes follow; §{section.english_number} "
            f"“{section.english_title}” in {ENGLISH_EDITION_NAME}. 1 input channel, 10 classes, float32, at {sizes}. "
            f"Counted figures need no GPU; memory and time are {PREDICTED_FOR} unless a column says measured. Back to "
            "[the comparison](../comparison.md).")
    memory_cmd = f"python -m profiler memory {name} {' '.join(f'--size {s}' for s in model.sizes)} --predict --gpu h200"
    sections = [
        "## Summary\n\n" + _summary_table(data, model) + "\n\n" + command(
            f"python -m profiler flops {name} {' '.join(f'--size {s}' for s in model.sizes)}\n"
            f"python -m profiler flops {name} {' '.join(f'--size {s}' for s in model.sizes)} --batch {BATCH} --train\n"
            f"{memory_cmd} --batch {BATCH}\n{memory_cmd} --batch {BATCH} --train"),
        f"## Heaviest layers at {LARGE}×{LARGE}",
        f"### By parameters\n\n{_heaviest(largest.layers.layers, 'params', 'params', largest.layers.params)}",
        f"### By MACs (per image)\n\n{_heaviest(largest.layers.layers, 'macs', 'MACs', largest.layers.totals.macs)}",
        f"### By activation memory (training step, batch {BATCH}, {PREDICTED_FOR})\n\nWhat each layer's forward "
        "allocates and still holds when it returns: its output and what autograd saved (its input is freed later, "
        "once nothing holds it). Layers whose outputs have the same shape allocate the same bytes — a convolution "
        "and the batch norm or activation after it, every layer of a block that keeps the map size — so the ranking "
        "is by amount: one row per amount as printed (a batch norm's few bytes of saved statistics aside), with "
        f"every layer that allocates it, in the order they run.\n\n{_activation_table(largest)}",
        f"### By time (training step, batch {BATCH}, {PREDICTED_FOR})\n\nThe rows of the predicted step that take "
        f"longest (every row: [{TIME_HEADING}](#{anchor(TIME_HEADING)})).\n\n"
        f"{_time_ranking(largest)}",
        f"## Memory at the peak, batch {BATCH} (MiB)\n\nSplit of the bytes allocated at the peak, {PREDICTED_FOR}; "
        "the last two columns are measured totals where `reports/data/` has them.\n\n"
        + _breakdown_table(data, model) + "\n\n" + "\n".join(provenance_lines(data.measured)),
        _time_section(data, model),
        f"## Roofline\n\n{_roofline(model)}",
        *(_per_layer(model, sd) for sd in model.sizes.values()),
    ]
    return page(f"{name}: {model.source}", lead, sections)


# --------------------------------------------------------------------------------------------- README.md

def index_page(data: ReportData) -> str:
    """``reports/README.md``: what each report holds and where its numbers come from."""
    models = ", ".join(f"[{name}](models/{name}.md)" for name in data.models)
    lead = ("Markdown reports on what the CNNs of chapter 7 of *Dive into Deep Learning* cost — parameters, MACs, "
            "FLOPs, bytes moved, peak GPU memory and time — written by the command above. Chapters and sections are "
            f"numbered as in {EDITION_NAME}, which the course notes follow ({ENGLISH_EDITION_NAME}: chapter 8). "
            "Nothing here is edited by hand: the test suite (`python -m pytest tests/test_reports.py`) regenerates "
            "the markdown and fails if it differs from what is committed, and `.github/workflows/reports.yml` "
            "regenerates the folder on every push and uploads it.")
    files = table(["file", "what it holds"], [
        ["[comparison.md](comparison.md)", f"the six models ({', '.join(CHAPTER7)}) at {SMALL} and {LARGE}: "
                                           "counted cost, predicted and measured peak memory, predicted and "
                                           "measured time, the "
                                           f"{LARGE}/{SMALL} ratio of each"],
        ["models/*.md", f"one page per zoo model — {models}: per-layer tables, heaviest layers, memory breakdown, "
                        "predicted time per layer and roofline"],
        ["[exercises.md](exercises.md)", "the chapter-7 exercises about resources, answered with the command that "
                                         "gives each number"],
        ["[claims.md](claims.md)", "figures quoted in the course notes, checked: holds / does not hold / cannot "
                                   "check here"],
        ["figures/*.png", "the plots embedded in the pages, one predicted roofline per model among them "
                          "(regenerated, not compared byte for byte)"],
        ["data/*.json", "committed GPU measurements with provenance — inputs, never written by `report`"],
    ], ("left", "left"))
    sections = [
        f"## Files\n\n{files}\n\n`benchmarks.md`, where present, is written by the benchmarks, not by `report`, "
        "and is not compared.",
        f"## Where the numbers come from\n\n{_sources(data)}\n\nA predicted figure always says which GPU it is "
        "for; a figure is called measured only if it comes from a committed file under `data/`, whose provenance "
        "line is quoted beside it.",
        "## Determinism\n\nThe same code and the same `data/` give byte-identical markdown: fixed precision, fixed "
        "order (chapter order, then the zoo's), no timestamps but the measurement dates copied from the JSON. "
        "Files are written only after everything is computed, as one set: staged in a temporary folder, then "
        "renamed into place together, so a failure or an interruption leaves the previous reports as they were.",
    ]
    return page("Reports", lead, sections)
