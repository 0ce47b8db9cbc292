"""``reports/claims.md``: figures quoted in the course notes, each checked against our count, prediction or the
committed measurement, with a verdict — holds, does not hold, or cannot check here — and the reason.

The claims — what the notes say, where, their words and the claimed figures — are data in :mod:`.content`; each
check here finds its claim by key, and every other number comes from :class:`ReportData`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from profiler.counting import LayerStats, ModelStats
from profiler.site.collect import BATCH, DENSENET_SMALL_SIZE, ReportData
from profiler.site.content import CLAIMS, Claim
from profiler.site.markdown import (
    PREDICTED_FOR,
    MiB,
    anchor,
    command,
    error,
    gigabytes,
    mib,
    page,
    provenance_lines,
    ratio,
    table,
)
from profiler.util.units import human_bytes, human_count

HOLDS, ROUGHLY, FAILS, UNCHECKABLE = "holds", "holds, roughly", "does not hold", "cannot check here"
#: Relative difference under which a quoted memory figure counts as reproduced by a measurement.
TOLERANCE = 0.05
PREDICT = "--predict --gpu h200"


@dataclass(frozen=True)
class Check:
    """The outcome of checking one claim: verdict, and the markdown that shows why."""

    verdict: str
    body: str


def _convs(stats: ModelStats) -> list[LayerStats]:
    return [layer for layer in stats.layers if layer.type == "Conv2d"]


def _fc(stats: ModelStats) -> list[LayerStats]:
    return [layer for layer in stats.layers if layer.type == "Linear"]


# --------------------------------------------------------------------------------------------- AlexNet vs LeNet

def alexnet_vs_lenet(claim: Claim, data: ReportData) -> Check:
    lenet, alex = data.models["lenet"], data.models["alexnet"]
    pairs = [("each at its book input: LeNet 28×28, AlexNet 224×224", lenet.sizes[28].layers, alex.sizes[224].layers),
             ("both at 224×224", lenet.sizes[224].layers, alex.sizes[224].layers)]
    rows = [[label, f"{low.params:,} → {high.params:,}", ratio(high.params, low.params),
             f"{low.totals.macs:,} → {high.totals.macs:,}", ratio(high.totals.macs, low.totals.macs)]
            for label, low, high in pairs]
    native = pairs[0]
    params_claim, macs_claim = claim.figures["params_ratio"], claim.figures["macs_ratio"]
    holds = (abs(native[2].params / native[1].params / params_claim - 1) < 0.5
             and abs(native[2].totals.macs / native[1].totals.macs / macs_claim - 1) < 0.5)
    return Check(HOLDS if holds else FAILS, "\n\n".join([
        table(["comparison", "params LeNet → AlexNet", "ratio", "MACs / image LeNet → AlexNet", "ratio"], rows),
        command("python -m profiler flops lenet --size 28 --size 224\npython -m profiler flops alexnet --size 224"),
        f"The book's LeNet has {human_count(native[1].params)} parameters and AlexNet (1 input channel, 10 "
        f"classes) {human_count(native[2].params)}: {rows[0][2]}, not {params_claim}×. Each at its own input, "
        f"AlexNet does {rows[0][4]} LeNet's MACs, not {macs_claim}×. Compared at the same 224×224 input, LeNet's "
        f"flattened layer grows and the ratios become {rows[1][2]} and {rows[1][4]}: neither comparison gives "
        f"{params_claim}× and {macs_claim}× together. (The figures may come from a lecture slide counting a "
        "different LeNet; this repository cannot tell.)",
    ]))


def fc_gigabyte(claim: Claim, data: ReportData) -> Check:
    zoo = data.models["alexnet"].sizes[224].layers
    paper = data.torchvision_alexnet
    rows, fractions = [], []
    for label, stats in (("the book's AlexNet (zoo `alexnet`, 224×224)", zoo),
                         ("the paper's AlexNet (`torchvision:alexnet`, 3 channels, 1000 classes)", paper)):
        big = _fc(stats)[:2]
        params = sum(layer.params for layer in big)
        nbytes = sum(layer.param_bytes for layer in big)
        fractions.append(gigabytes(nbytes))
        rows.append([label, " + ".join(f"{layer.params:,}" for layer in big), f"{params:,}",
                     f"{gigabytes(nbytes, 3)} GB ({human_bytes(nbytes)})"])
    return Check(FAILS, "\n\n".join([
        table(["model", "the two 4096-wide layers' params", "together", "float32 bytes"], rows,
              ("left", "right", "right", "right")),
        command("python -m profiler params alexnet --size 224\npython -m profiler params torchvision:alexnet"),
        f"Nowhere near {claim.figures['gigabytes']} GB: {fractions[0]} GB in the book's model, {fractions[1]} GB "
        "in the paper's (whose first fully connected layer sees 256×6×6 = 9,216 inputs). Even the whole networks' "
        f"weights are {gigabytes(zoo.param_bytes)} GB and {gigabytes(paper.param_bytes)} GB in float32.",
    ]))


def channels_tenfold(claim: Claim, data: ReportData) -> Check:
    lenet = [layer.output_shape[1] for layer in _convs(data.models["lenet"].sizes[28].layers)]
    alex = [layer.output_shape[1] for layer in _convs(data.models["alexnet"].sizes[224].layers)]
    firsts = [ratio(a, b) for a, b in zip(alex, lenet, strict=False)]
    claimed = claim.figures["channels_ratio"]
    return Check(ROUGHLY, "\n\n".join([
        table(["", "convolution output channels"], [["LeNet", ", ".join(map(str, lenet))],
                                                    ["AlexNet", ", ".join(map(str, alex))]], ("left", "left")),
        command("python -m profiler params lenet --size 28\npython -m profiler params alexnet --size 224"),
        f"Layer for layer the first two convolutions widen {firsts[0]} and {firsts[1]}; the widest AlexNet "
        f"layer has {ratio(max(alex), max(lenet))} LeNet's widest. An order of magnitude, as the notes say, but "
        f"nearer {alex[0] / lenet[0]:.0f}× than {claimed}× (the other notes, 003 line 2751, say \"tens of "
        "times\").",
    ]))


# --------------------------------------------------------------------------------------------- memory claims

def alexnet_memory(claim: Claim, data: ReportData) -> Check:
    claimed = claim.figures
    rows = []
    for batch, claimed_gb in claimed.items():
        result = data.alexnet_batches[batch]
        run = data.measured.run("alexnet", 224, True, batch)
        rows.append([batch, f"{claimed_gb:.2f} GB", mib(result.peak_allocated_bytes), mib(result.peak_reserved_bytes),
                     mib(run.peak_allocated_bytes if run else None), mib(run.peak_reserved_bytes if run else None),
                     mib(run.nvml_used_bytes if run else None)])
    low, high = data.alexnet_batches[128], data.alexnet_batches[512]
    return Check(f"{UNCHECKABLE} (64, 128); {FAILS} (512 = 128)", "\n\n".join([
        table(["batch", "notes", f"peak allocated, {PREDICTED_FOR} (MiB)", "peak reserved, predicted (MiB)",
               "peak allocated, measured (MiB)", "peak reserved, measured (MiB)",
               "whole device used (NVML), measured (MiB)"], rows),
        command("\n".join(f"python -m profiler memory alexnet --size 224 --batch {b} --train {PREDICT}"
                          for b in claimed)),
        "The notes do not say how the figures were read or on which GPU; their size (GB, not a peak of "
        "`torch.cuda`) suggests a whole-device reading such as `nvidia-smi` during d2l's `train_ch6`, which also "
        "holds the CUDA context, the cuDNN and cuBLAS libraries, everything the caching allocator has reserved "
        "and the evaluation passes. Our predictions and the H200 reference measure PyTorch's own allocations over "
        "one step, so the 64 and 128 figures cannot be checked here; the reference's whole-device reading at "
        "batch 128 (last column) shows how much the context and libraries add on one GPU and software stack.",
        f"The batch-512 figure equal to the batch-128 one is not plausible as the model's need: activations grow "
        f"with the batch, and the predicted peak at 512 is "
        f"{ratio(high.peak_allocated_bytes, low.peak_allocated_bytes)} the one at 128. A reading that stops at "
        f"{claimed[512]:.2f} GB for both looks like a card of about 8 GB being full (PyTorch's caching allocator "
        "frees its cached blocks and retries before it gives up), not like what batch 512 needs.",
    ]))


def densenet_memory(claim: Claim, data: ReportData) -> Check:
    claimed = claim.figures
    large, small = data.models["densenet"].sizes[224].memory_train, data.densenet_small
    run = data.measured.run("densenet", 224, True, BATCH)
    rows = [[f"{size}×{size}", f"{mib_claimed:,.1f}",
             mib(large.peak_allocated_bytes if size == 224 else small.peak_allocated_bytes),
             mib(run.peak_allocated_bytes) if size == 224 and run else "-"]
            for size, mib_claimed in claimed.items()]
    verdict = UNCHECKABLE
    agreement = "No measurement at 224 is committed."
    if run:
        off = claimed[224] * MiB / run.peak_allocated_bytes - 1
        verdict = f"{HOLDS if abs(off) <= TOLERANCE else FAILS} (224); {UNCHECKABLE} ({DENSENET_SMALL_SIZE})"
        agreement = (f"At 224 the notes' figure is {error(claimed[224] * MiB, run.peak_allocated_bytes)} from the "
                     "H200 reference measurement of one training step — a different GPU, PyTorch and cuDNN, and "
                     "a peak over a whole run with evaluation, yet within "
                     f"{TOLERANCE * 100:.0f} %: {'it holds' if abs(off) <= TOLERANCE else 'it does not hold'}.")
    return Check(verdict, "\n\n".join([
        table(["input", "notes (MiB)", f"predicted for {PREDICTED_FOR.removeprefix('predicted for ')} (MiB)",
               "measured, H200 reference (MiB)"], rows),
        f"Training, batch {BATCH}, peak `torch.cuda` allocated. The notes print `allocated_bytes.all.peak / "
        "1024²` and call it MB: it is MiB.",
        command(f"python -m profiler memory densenet --size 224 --size {DENSENET_SMALL_SIZE} --batch {BATCH} "
                f"--train {PREDICT}"),
        agreement,
        f"At {DENSENET_SMALL_SIZE}×{DENSENET_SMALL_SIZE} no measurement is committed, and the notes' figure is "
        f"{ratio(claimed[DENSENET_SMALL_SIZE] * MiB, small.peak_allocated_bytes)} the prediction. Part of the gap "
        "is explained by the notes themselves: after the 224 run 46.6 MiB were still allocated "
        "(000 line 2614) and the 32 run started in the same process, so its peak includes them. The rest cannot "
        "be attributed without a measurement: at such small maps the predicted cuDNN and cuBLAS workspaces "
        f"({human_bytes(small.breakdown['workspace'])}) are of the order of the activations "
        f"({human_bytes(small.breakdown['activations'])}), and workspaces depend on the GPU, the cuDNN version and "
        "its heuristics.",
    ]))


# --------------------------------------------------------------------------------------------- count claims

def nin_hand_count(claim: Claim, data: ReportData) -> Check:
    stats = data.nin_three_channels
    blocks: dict[str, list[LayerStats]] = {}
    for layer in _convs(stats):
        blocks.setdefault(layer.name.split(".")[0], []).append(layer)
    rows, total_params, total_macs = [], 0, 0
    hand_params, hand_maps = claim.figures["params"], claim.figures["maps"]
    for (name, convs), claimed, claimed_map in zip(blocks.items(), hand_params, hand_maps, strict=True):
        no_bias = sum(layer.params - layer.output_shape[1] for layer in convs)
        macs = sum(layer.macs for layer in convs)
        total_params += no_bias
        total_macs += macs
        rows.append([f"block {name}", f"{claimed:,}", f"{no_bias:,}", claimed_map, convs[0].output_shape[2],
                     f"{claimed * claimed_map ** 2:,}", f"{macs:,}"])
    hand_total = sum(p * m ** 2 for p, m in zip(hand_params, hand_maps, strict=True))
    rows.append(["total", f"{sum(hand_params):,}", f"{total_params:,}", "", "", f"{hand_total:,}", f"{total_macs:,}"])
    params_hold = total_params == sum(hand_params)
    verdict = (f"{HOLDS if params_hold else FAILS} (parameters, under its assumptions); "
               f"{HOLDS if total_macs == hand_total else FAILS} (multiply-adds)")
    zoo = data.models["nin"].sizes[224].layers
    return Check(verdict, "\n\n".join([
        table(["NiN block", "notes: params", "ours: params without biases", "notes: map", "real map",
               "notes: multiply-adds", "ours: MACs"], rows),
        "224×224, 3 input channels, 10 classes, batch 1; our parameters minus one bias per output channel, to "
        "match the notes' assumptions.",
        command("python -m profiler params nin --size 224 --channels 3\n"
                "python -m profiler flops nin --size 224 --channels 3"),
        f"The parameter count holds under its own assumptions ({total_params:,}). The multiply-add count does not: "
        "its arithmetic is right, but it multiplies each block by a wrong map size. Without padding, the 3×3 "
        "stride-2 max pools floor (54 → 26 → 12 → 5), not halve (27, 13), and the last block runs on a 5×5 map "
        f"before the global pool, not 1×1. With the real maps the count is {total_macs:,} ≈ "
        f"{total_macs / 1e8:.2f}·10⁸; the notes' count is {error(hand_total, total_macs)} off. The zoo's NiN as "
        f"the book trains it (1 channel, biases) has {zoo.params:,} parameters and {zoo.totals.macs:,} MACs.",
    ]))


def googlenet_smallest(claim: Claim, data: ReportData) -> Check:
    smallest = data.smallest_sizes["googlenet"]
    return Check(HOLDS if smallest == claim.figures["size"] else FAILS, "\n\n".join([
        command(f"python -m profiler flops googlenet --size {smallest}"),
        f"runs: GoogLeNet accepts a {smallest}×{smallest} input (every layer is padded so maps never collapse, and "
        "a global average pool precedes the classifier). 224×224 is the size the book trains at, not a limit. "
        "See [exercise 7.4.2](exercises.md#742).",
    ]))


#: The check of each claim of :data:`~profiler.site.content.CLAIMS`, by key.
CHECKS: dict[str, Callable[[Claim, ReportData], Check]] = {
    "alexnet-vs-lenet": alexnet_vs_lenet,
    "alexnet-fc-gigabyte": fc_gigabyte,
    "alexnet-channels": channels_tenfold,
    "alexnet-memory": alexnet_memory,
    "nin-hand-count": nin_hand_count,
    "googlenet-smallest": googlenet_smallest,
    "densenet-memory": densenet_memory,
}


def claims_page(data: ReportData) -> str:
    """``reports/claims.md``."""
    checks = [(claim, CHECKS[claim.key](claim, data)) for claim in CLAIMS]
    summary = table(["claim", "source", "verdict"],
                    [[f"[{claim.says}](#{anchor(claim.title)})", claim.source, f"**{check.verdict}**"]
                     for claim, check in checks], ("left", "left", "left"))
    lead = "\n\n".join([
        "Figures quoted in the course notes this project started from (Chinese study notes on *Dive into Deep "
        "Learning*, not in this repository; cited by file and line), each checked against our count, our "
        f"prediction ({PREDICTED_FOR}) or a committed measurement:",
        "\n".join(provenance_lines(data.measured)),
        "Verdicts: **holds**, **does not hold**, or **cannot check here** — when what the notes measured is not "
        "something this repository measures or can predict.",
        summary,
    ])
    sections = [f"## {claim.title}\n\n> {claim.says}. — {claim.source}: 「{claim.quote}」\n\n"
                f"**Verdict: {check.verdict}.**\n\n{check.body}" for claim, check in checks]
    return page("Claims in the course notes, checked", lead, sections)
