"""The comparison report, one page per model, and the index of ``reports/``: records → markdown, no arithmetic beyond
units, ratios and shares."""

from __future__ import annotations

from collections.abc import Callable

from profiler.catalogue import gpu_spec
from profiler.counting import LayerStats, conventions
from profiler.format.counts import TRAIN_NOTE, format_stats
from profiler.memory import validation
from profiler.memory.calibration import calibration_for
from profiler.memory.trace import CATEGORIES
from profiler.memory.validation import validate
from profiler.models.zoo import CHAPTER7
from profiler.site.collect import BATCH, GPU, SIZES, ModelData, ReportData, SizeData
from profiler.site.figures import FIGURES
from profiler.site.markdown import (
    FP32_RIDGE_FLOP_PER_BYTE,
    PREDICTED_FOR,
    ROOFS,
    command,
    error,
    gib,
    giga,
    mib,
    ms,
    page,
    per_second,
    prediction_line,
    provenance_lines,
    ratio,
    share,
    table,
    terabytes_per_s,
    teraflops_per_s,
)
from profiler.site.measured import MeasuredRun, Measurements
from profiler.util.units import human_bytes, human_count

TOP_LAYERS = 5
SMALL, LARGE = SIZES

NO_TIMING = ("no GPU timing per layer is committed yet; run `benchmarks/gpu_bandwidth.py` on a GPU and commit its "
             "JSON under `reports/data/` — until then no report shows a per-layer time")


def _measured(measured: Measurements, name: str, size: int, train: bool) -> MeasuredRun | None:
    return measured.run(name, size, train, BATCH)


def _sources(data: ReportData) -> str:
    lines = [
        f"- counted: static analysis on meta tensors, exact for the model as written, no GPU. {conventions()}. "
        f"{TRAIN_NOTE[0].upper()}{TRAIN_NOTE[1:]}.",
        f"- {prediction_line()}.",
        *provenance_lines(data.measured),
        "- derived: achieved FLOP/s = counted FLOPs of the step ÷ measured time of the step; effective bandwidth "
        "= counted bytes of the step ÷ measured time. The optimizer update is in the measured time but not in the "
        "counts, and the counted bytes assume every tensor an op touches crosses DRAM (caches and fused kernels "
        "move less): yardsticks, not measurements.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- comparison.md

def _cost_table(data: ReportData, size: int) -> str:
    headers = ["model", "params", "MACs / image (G)", "FLOPs / image, forward (G)",
               "FLOPs / image, training step (G)", f"bytes moved, forward, batch {BATCH} (GiB)",
               f"bytes moved, training step, batch {BATCH} (GiB)", "FLOP/B, forward", "FLOP/B, training step"]
    rows = []
    for name in CHAPTER7:
        sd = data.models[name].sizes[size]
        rows.append([name, f"{sd.layers.params:,}", giga(sd.layers.totals.macs), giga(sd.layers.totals.flops),
                     giga(sd.train.totals.flops / BATCH), gib(sd.inference.totals.bytes), gib(sd.train.totals.bytes),
                     f"{sd.inference.totals.intensity:.1f}", f"{sd.train.totals.intensity:.1f}"])
    return table(headers, rows)


def _memory_table(size: int) -> str:
    """Allocated and reserved peaks of the committed reference runs at ``size``: measured, predicted, the error with
    the committed calibration and leave-one-model-out, the range of the reserved error when the workspaces move
    (:func:`profiler.memory.validation.workspace_sensitivity`), and the fit verdict's required bytes against the
    measurement."""
    headers = ["model", "step", "allocated, measured", "allocated, predicted", "error", "error, LOMO",
               "reserved, measured", "reserved, predicted", "error", "error, LOMO",
               f"error, workspaces ±{100 * validation.WORKSPACE_SPREAD:.0f} %", "required, predicted",
               "required ÷ measured reserved, predicted"]
    rows = []
    for e in validate():
        if e.run.size != size:
            continue
        run = e.run
        low, high = validation.workspace_sensitivity(run).reserved
        rows.append([run.model, "training" if run.train else "inference", mib(run.peak_allocated), mib(e.allocated),
                     error(e.allocated, run.peak_allocated), error(e.lomo_allocated, run.peak_allocated),
                     mib(run.peak_reserved), mib(e.reserved), error(e.reserved, run.peak_reserved),
                     error(e.lomo_reserved, run.peak_reserved),
                     f"{error(low, run.peak_reserved)} to {error(high, run.peak_reserved)}", mib(e.required),
                     f"{e.required / run.peak_reserved:.2f}×"])
    return table(headers, rows, align=("left", "left") + ("right",) * (len(headers) - 2))


def _memory_lead() -> str:
    margins = calibration_for(gpu_spec(GPU)).reserved_margins
    return (f"The committed reference runs ({validation.REFERENCE_FILE.name}, batch {BATCH}). Peak allocated is "
            "`torch.cuda.max_memory_allocated`, peak reserved `torch.cuda.max_memory_reserved` (what decides an out "
            "of memory). *error* uses the committed calibration, fitted on all six models; *error, LOMO* refits the "
            "one fitted workspace coefficient without the model in the row (leave one model out): the error a model "
            "the fit never saw can expect. *required* is the fit verdict's need, predicted reserved × (1 + m), m = "
            f"{100 * margins['inference']:.1f} % for inference and {100 * margins['train']:.1f} % for training (the "
            "largest shortfall of a reserved prediction of that mode, leave-one-model-out or in-sample); at 1.00× or "
            "more the verdict covers the measurement. *error, workspaces "
            f"±{100 * validation.WORKSPACE_SPREAD:.0f} %* is the lowest and highest reserved error over "
            f"{validation.SENSITIVITY_DRAWS} replays in which every cuDNN workspace is scaled by its own factor drawn "
            f"from [{1 - validation.WORKSPACE_SPREAD:.2f}, {1 + validation.WORKSPACE_SPREAD:.2f}]: peak reserved "
            "depends on which cached block every workspace and tensor lands in, so workspace sizes a rule gets right "
            "to a few percent move it by much more than they move peak allocated; a reserved error within 10 % on "
            "every run needs the workspaces cuDNN really takes, measured per convolution (`benchmarks/gpu_memory.py`).")


def _time_table(data: ReportData, size: int) -> str:
    headers = ["model"]
    for mode in ("inference", "training step"):
        headers += [f"{mode}: ms/step, measured", f"{mode}: examples/s, measured",
                    f"{mode}: achieved TFLOP/s, derived", f"{mode}: effective bandwidth, derived (TB/s)"]
    rows = []
    for name in CHAPTER7:
        sd = data.models[name].sizes[size]
        cells = [name]
        for stats, train in ((sd.inference, False), (sd.train, True)):
            run = _measured(data.measured, name, size, train)
            cells += [ms(run.ms_per_step if run else None), per_second(run.examples_per_s if run else None),
                      teraflops_per_s(run.achieved_per_s(stats.totals.flops) if run else None),
                      terabytes_per_s(run.achieved_per_s(stats.totals.bytes) if run else None)]
        rows.append(cells)
    return table(headers, rows)


def _ratio_table(data: ReportData) -> str:
    headers = ["model", "params", "MACs", "bytes moved, forward", "bytes moved, training step", "FLOP/B, forward",
               "inference peak, predicted", "training peak, predicted", "inference peak, measured",
               "training peak, measured", "inference ms/step, measured", "training ms/step, measured"]
    rows = []
    for name in CHAPTER7:
        small, large = data.models[name].sizes[SMALL], data.models[name].sizes[LARGE]
        runs = {(size, train): _measured(data.measured, name, size, train) for size in SIZES for train in (False, True)}

        def measured(train: bool, field: str, runs: dict = runs) -> str:
            low, high = runs[SMALL, train], runs[LARGE, train]
            return ratio(getattr(high, field), getattr(low, field)) if low and high else "-"

        rows.append([name, ratio(large.layers.params, small.layers.params),
                     ratio(large.layers.totals.macs, small.layers.totals.macs),
                     ratio(large.inference.totals.bytes, small.inference.totals.bytes),
                     ratio(large.train.totals.bytes, small.train.totals.bytes),
                     ratio(large.inference.totals.intensity, small.inference.totals.intensity),
                     ratio(large.memory_inference.peak_allocated_bytes, small.memory_inference.peak_allocated_bytes),
                     ratio(large.memory_train.peak_allocated_bytes, small.memory_train.peak_allocated_bytes),
                     measured(False, "peak_allocated_bytes"), measured(True, "peak_allocated_bytes"),
                     measured(False, "ms_per_step"), measured(True, "ms_per_step")])
    return table(headers, rows)


def comparison_page(data: ReportData) -> str:
    """``reports/comparison.md``: the six chapter-7 models at 96 and 224, counted, predicted and measured."""
    copy = next((s for s in data.measured.sets if s.copy_bandwidth_bytes_per_s), None)
    copy_note = (f"For scale, the same file measured a device-to-device copy on the {copy.device} at "
                 f"{terabytes_per_s(copy.copy_bandwidth_bytes_per_s)} TB/s (read + write)." if copy else "")
    lead = "\n\n".join([
        f"The d2l chapter-7 models as the book defines them — {', '.join(f'`{n}`' for n in CHAPTER7)} (VGG-11 and "
        "ResNet-18), 1 input channel (Fashion-MNIST), 10 classes, float32 — always in the chapter's order. "
        "Per-model detail: [models/](models/). Four kinds of number, never mixed:",
        _sources(data),
        "One cuDNN workspace coefficient of the memory prediction was fitted to the measurements below: the "
        "memory tables show each error twice, with that fit and leave-one-model-out (fitted without the model).",
    ])
    sections = []
    for size in (LARGE, SMALL):
        sections += [
            f"## {size}×{size} input",
            f"### Cost (counted)\n\nPer image where it says so (MACs and FLOPs grow exactly with the batch); bytes "
            f"moved and FLOP/B at batch {BATCH}, because weights are read once per batch.\n\n"
            f"{_cost_table(data, size)}",
            f"### Peak memory at batch {BATCH} (MiB; {PREDICTED_FOR})\n\n{_memory_lead()}\n\n"
            f"{_memory_table(size)}",
            f"### Time at batch {BATCH} (measured; effective bandwidth derived)\n\n"
            f"{_time_table(data, size)}\n\n{copy_note}".rstrip(),
        ]
    sections += [
        f"## {LARGE} vs {SMALL}: ratio {LARGE}/{SMALL} of each quantity\n\n"
        f"Growing the input from {SMALL}×{SMALL} to {LARGE}×{LARGE} multiplies its area by "
        f"({LARGE}/{SMALL})² = {(LARGE / SMALL) ** 2:.2f}: what is made per pixel (convolution MACs, activations) "
        "grows about that much, weights do not — except a fully connected layer fed by a flattened feature map "
        "(AlexNet, VGG). Floor division of strided layers makes the small input's maps relatively smaller still.\n\n"
        f"{_ratio_table(data)}",
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


def _activation_table(sd: SizeData) -> str:
    types = {layer.name: layer.type for layer in sd.layers.layers}
    total = sum(sd.memory_train.layers.values())
    top = sorted(sd.memory_train.layers.items(), key=lambda kv: -kv[1])[:TOP_LAYERS]
    rows = [[name, types.get(name, "-"), human_bytes(nbytes), share(nbytes, total)] for name, nbytes in top]
    return table(["layer", "type", "bytes its forward leaves allocated", "share of all layers"], rows,
                 ("left", "left", "right", "right"))


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
        (f"ms/step, inference, batch {BATCH}, measured",
         lambda sd: getattr(run(sd.size, False), "ms_per_step", None), ms, True),
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


def _roofline(sd: SizeData) -> str:
    def below(layers: list[LayerStats]) -> str:
        working = [layer for layer in layers if layer.macs]
        low = [layer for layer in working if layer.intensity < FP32_RIDGE_FLOP_PER_BYTE]
        macs = sum(layer.macs for layer in working)
        return (f"{len(low)} of {len(working)} layers with MACs "
                f"({share(sum(layer.macs for layer in low), macs)} of the MACs)")

    return ("No roofline is drawn: it needs measured time per layer (see *By time* above). What can be said "
            "without a GPU is where each layer *would* sit on the x axis: the FLOP/B column of the per-layer tables "
            f"below is its counted arithmetic intensity. For scale only ({ROOFS}), the FP32 ridge point is "
            f"{FP32_RIDGE_FLOP_PER_BYTE:.1f} FLOP/B; below it a layer cannot keep the arithmetic units busy even at "
            f"full bandwidth. At {sd.size}×{sd.size}, counted (not measured), {below(sd.layers.layers)} sit below it "
            f"at batch 1, and {below(sd.inference.layers)} at batch {BATCH}. Convolutions run on TF32 tensor cores by "
            "default in PyTorch, which moves the ridge several times further right.")


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
    lead = (f"Zoo name `{name}` ({model.family}), built as {model.source}: 1 input channel, 10 classes, float32, at "
            f"{sizes}. Counted figures need no GPU; memory is {PREDICTED_FOR} unless a column says measured. Back "
            f"to [the comparison](../comparison.md).")
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
        f"leaves allocated until backward: its output and what autograd saved.\n\n{_activation_table(largest)}",
        f"### By time\n\n{NO_TIMING[0].upper()}{NO_TIMING[1:]}.",
        f"## Memory at the peak, batch {BATCH} (MiB)\n\nSplit of the bytes allocated at the peak, {PREDICTED_FOR}; "
        "the last two columns are measured totals where `reports/data/` has them.\n\n"
        + _breakdown_table(data, model) + "\n\n" + "\n".join(provenance_lines(data.measured)),
        f"## Roofline\n\n{_roofline(largest)}",
        *(_per_layer(model, sd) for sd in model.sizes.values()),
    ]
    return page(f"{name}: {model.source}", lead, sections)


# --------------------------------------------------------------------------------------------- README.md

def index_page(data: ReportData) -> str:
    """``reports/README.md``: what each report holds and where its numbers come from."""
    models = ", ".join(f"[{name}](models/{name}.md)" for name in data.models)
    lead = ("Markdown reports on what the d2l chapter-7 CNNs cost — parameters, MACs, FLOPs, bytes moved, peak "
            "GPU memory and time — written by the command above. Nothing here is edited by hand: the test suite "
            "(`python -m pytest tests/test_reports.py`) regenerates the markdown and fails if it differs from what "
            "is committed, and `.github/workflows/reports.yml` regenerates the folder on every push and uploads it.")
    files = table(["file", "what it holds"], [
        ["[comparison.md](comparison.md)", f"the six models ({', '.join(CHAPTER7)}) at {SMALL} and {LARGE}: "
                                           "counted cost, predicted and measured peak memory, measured time, the "
                                           f"{LARGE}/{SMALL} ratio of each"],
        ["models/*.md", f"one page per zoo model — {models}: per-layer tables, heaviest layers, memory breakdown"],
        ["[exercises.md](exercises.md)", "the chapter-7 exercises about resources, answered with the command that "
                                         "gives each number"],
        ["[claims.md](claims.md)", "figures quoted in the course notes, checked: holds / does not hold / cannot "
                                   "check here"],
        ["figures/*.png", "the plots embedded in the pages (regenerated, not compared byte for byte)"],
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
