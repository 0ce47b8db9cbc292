"""``reports/exercises.md``: the chapter-7 exercises that ask about resources, answered with this tool's numbers.

Every answer shows the command that prints its numbers. The questions, and the notes' figures an answer refers to,
are data in :mod:`.content`; each answer here finds its exercise by number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from profiler.catalogue import Precision, gpu_spec
from profiler.counting import LayerStats, ModelStats
from profiler.kinds import Bound
from profiler.memory.records import MemoryResult
from profiler.models.zoo import CHAPTER7, EDITION, EDITION_NAME, ENGLISH_EDITION_NAME, SECTIONS
from profiler.site.collect import ALEXNET_BATCHES, BATCH, DENSENET_SMALL_SIZE, GPU, SIZES, ReportData, SizeData
from profiler.site.content import EXERCISES, NOTES_000, claim
from profiler.site.markdown import (
    FP32_RIDGE_FLOP_PER_BYTE,
    PREDICTED_FOR,
    ROOFS,
    TF32_RIDGE_FLOP_PER_BYTE,
    anchor,
    command,
    error,
    mib,
    ms,
    ms_and_share,
    page,
    provenance_lines,
    ratio,
    share,
    table,
    terabytes_per_s,
    teraflops_per_s,
)
from profiler.util.units import human_bytes, human_count

SMALL, LARGE = SIZES
PREDICT = "--predict --gpu h200"


def _linear(stats: ModelStats) -> list[LayerStats]:
    return [layer for layer in stats.layers if layer.type == "Linear"]


def _layer(stats: ModelStats, name: str) -> LayerStats:
    return next(layer for layer in stats.layers if layer.name == name)


def _peak(result: MemoryResult) -> str:
    return human_bytes(result.peak_allocated_bytes)


def _claim_link(key: str) -> str:
    """A link to the claim ``key`` on claims.md."""
    return f"[claims.md](claims.md#{anchor(claim(key).title)})"


def _by_value(figures: Mapping[int, float], unit: str) -> str:
    """The notes' figures per batch, batches with the same figure together: "3.74 GB at batch 64, 7.93 GB at 128
    and at 512"."""
    batches: dict[float, list[int]] = {}
    for batch, value in figures.items():
        batches.setdefault(value, []).append(batch)
    return ", ".join(f"{value:.2f} {unit} at {'batch ' if i == 0 else ''}{' and at '.join(map(str, group))}"
                     for i, (value, group) in enumerate(batches.items()))


def _measured_peak(data: ReportData, name: str, size: int, train: bool) -> str:
    run = data.measured.run(name, size, train, BATCH)
    return human_bytes(run.peak_allocated_bytes) if run else "not measured"


# --------------------------------------------------------------------------------------------- 7.1 AlexNet

def _missing_gradients(layers: list[LayerStats], missing_bytes: int) -> list[str] | None:
    """The first layers with parameters, in forward order, whose parameter bytes make ``missing_bytes``: the layers
    backward has not reached yet (it runs from the last layer to the first, allocating a layer's gradients when it
    gets there). Matched to within the caching allocator's 512-byte rounding of each weight and bias; None if no
    prefix matches."""
    total, names = 0, []
    for layer in (layer for layer in layers if layer.param_bytes):
        if abs(total - missing_bytes) <= 1024 * len(names):
            break
        total += layer.param_bytes
        names.append(layer.name)
    return names if abs(total - missing_bytes) <= 1024 * len(names) else None


def alexnet_batches(data: ReportData) -> str:
    """7.1.3: AlexNet's memory at batch 64, 128 and 512 (training at 224)."""
    layers = data.models["alexnet"].sizes[LARGE].layers.layers
    predicted, measured, gaps = [], [], []
    for batch, result in data.alexnet_batches.items():
        weights, gradients = result.breakdown["weights"], result.breakdown["gradients"]
        predicted.append([batch, mib(result.peak_allocated_bytes), mib(result.peak_reserved_bytes),
                          mib(result.breakdown["activations"]), mib(weights), mib(gradients)])
        run = data.measured.run("alexnet", LARGE, True, batch)
        measured.append([batch, mib(run.peak_allocated_bytes if run else None),
                         mib(run.peak_reserved_bytes if run else None), mib(run.nvml_used_bytes if run else None)])
        missing = _missing_gradients(layers, weights - gradients)
        names = f" (layers {', '.join(missing)})" if missing else ""
        gaps.append(f"{human_bytes(weights - gradients)}{names} missing at batch {batch}")
    low, high = data.alexnet_batches[ALEXNET_BATCHES[0]], data.alexnet_batches[ALEXNET_BATCHES[-1]]
    run = data.measured.run("alexnet", LARGE, True, BATCH)
    agreement = "No measurement is committed."
    if run:
        agreement = (f"The one measured batch ({BATCH}) differs from the prediction by "
                     f"{error(data.alexnet_batches[BATCH].peak_allocated_bytes, run.peak_allocated_bytes)}.")
    commands = "\n".join(f"python -m profiler memory alexnet --size {LARGE} --batch {b} --train {PREDICT}"
                         for b in ALEXNET_BATCHES)
    return "\n\n".join([
        f"Predicted (MiB; training step, SGD without momentum, at {LARGE}×{LARGE}, float32; the split is of the "
        "bytes allocated at the peak):",
        table(["batch", f"peak allocated, {PREDICTED_FOR}", "peak reserved, predicted",
               "activations at the peak, predicted", "weights, predicted", "gradients at the peak, predicted"],
              predicted),
        "Measured (MiB):",
        table(["batch", "peak allocated, measured", "peak reserved, measured", "whole device used (NVML), measured"],
              measured),
        command(commands),
        f"The weights ({human_bytes(low.breakdown['weights'])}) do not depend on the batch, and neither do the "
        "gradients once backward is over: one per weight, as much again. The gradients *at the peak* differ a "
        "little, because the peak falls inside backward — which runs from the last layer to the first and allocates "
        "each layer's gradients when it gets there — before it has reached the first layers: "
        f"{'; '.join(gaps)}. Where in backward the peak falls depends on the batch (what backward frees as it goes, "
        "the saved activations, grows with the batch; what it allocates, the weight gradients, does not), so the "
        "gradients column is not constant. Activations grow linearly with the batch, so the peak grows less than "
        "the batch: "
        f"{ALEXNET_BATCHES[-1] // ALEXNET_BATCHES[0]}× the batch ({ALEXNET_BATCHES[0]} → {ALEXNET_BATCHES[-1]}) is "
        f"{ratio(high.peak_allocated_bytes, low.peak_allocated_bytes)} the peak allocated. The caching allocator "
        "reserves more than it allocates (rounded segments, freed blocks kept for reuse), and the whole device "
        "shows more again: the CUDA context and the cuDNN/cuBLAS libraries, a few GiB that no batch size changes. "
        f"{agreement}",
        "Accuracy, the other half of the question, needs a training run; this tool does not train. The notes' "
        f"figures for this exercise ({_by_value(claim('alexnet-memory').figures, 'GB')}) are checked in "
        f"{_claim_link('alexnet-memory')}.",
    ])


def _alexnet_time(data: ReportData, sd: SizeData) -> str:
    """7.1.4's time part: AlexNet's predicted time per layer at batch 128, with each layer's bound."""
    results = (sd.time_inference, sd.time_train)
    by_name = [{row.name: row for row in result.layers} for result in results]
    rows = []
    for layer in sd.inference.layers:
        timed = [names.get(layer.name) for names in by_name]
        if not any(row and row.ms_per_step for row in timed):
            continue
        cells = [layer.name, layer.type, f"{layer.intensity:.1f}" if layer.macs else "-"]
        for row, result in zip(timed, results, strict=True):
            cells += [ms_and_share(row.ms_per_step if row else None, result.step_ms),
                      row.bound if row and row.bound else "-"]
        rows.append(cells)
    memory = [[row for row in result.layers if row.bound == Bound.MEMORY] for result in results]
    shares = [share(sum(row.ms_per_step for row in rows_), result.step_ms)
              for rows_, result in zip(memory, results, strict=True)]
    spec = gpu_spec(GPU)
    working = [f"{row.type} {row.name} ({row.intensity:.1f} FLOP/B, under the {row.compute_roof.upper()} ridge at "
               f"{spec.ridge(Precision(row.compute_roof)):.0f})" for row in memory[0] if row.flops]
    starved = [f"{row.type} {row.name} ({row.intensity:.1f} FLOP/B, under the {row.compute_roof.upper()} ridge at "
               f"{spec.ridge(Precision(row.compute_roof)):.0f})" for row in results[0].layers
               if row.flops and row.bound == Bound.COMPUTE and row.compute_roof
               and row.intensity < spec.ridge(Precision(row.compute_roof))]
    idle = ", ".join(dict.fromkeys(row.type for row in memory[1] if not row.flops and row.type in
                                   {layer.type for layer in sd.inference.layers}))
    host = sd.time_train.idle_ms
    return "\n\n".join([
        f"**Time.** {PREDICTED_FOR[0].upper()}{PREDICTED_FOR[1:]} at batch {BATCH} (no GPU ran: the time model, "
        "fitted on the committed step times; [comparison.md](comparison.md) gives its errors), a step takes "
        f"{ms(sd.time_inference.step_ms)} ms for inference and {ms(sd.time_train.step_ms)} ms for training. A layer "
        "is memory-bound when its kernels spend more of their time on the bandwidth roof than on the compute roof: "
        f"every layer without FLOPs that runs a kernel ({idle}) and, at batch {BATCH}, "
        f"{' and '.join(working) or 'no other'}. The memory-bound rows take {shares[0]} of the inference step and "
        f"{shares[1]} of the training step (for training the loss and the optimizer update included"
        + (f"; the GPU waits {ms(host)} ms of it for the host)" if host else ")")
        + ". The other convolutions are compute-bound on the TF32 tensor cores, the two big fully connected layers "
        f"on the FP32 units (PyTorch does not use TF32 for matrix products by default): at batch {BATCH} each weight "
        f"they read serves {BATCH} images. "
        + (f"{' and '.join(starved)} {'is' if len(starved) == 1 else 'are'} compute-bound all the same: "
           f"{'its' if len(starved) == 1 else 'their'} matrix product makes too few output tiles to keep the "
           f"{spec.name}'s {spec.sm_count} SMs busy, which lowers the compute roof it can reach (the time model's "
           "wave share) below what its bytes take. " if starved else "")
        + ("Measured kernel times per layer stand beside these in [models/alexnet.md](models/alexnet.md)."
           if any(s.run("alexnet", LARGE, train, BATCH) for s in data.measured_times for train in (False, True))
           else "Per-layer times are predicted only: no measured per-layer time is committed yet to check them "
                "against."),
        table(["layer", "type", f"FLOP/B, batch {BATCH}", "inference ms (share), predicted", "bound, predicted",
               "training ms (share), predicted", "bound, predicted"], rows,
              ("left", "left", "right", "right", "left", "right", "left")),
    ])


def alexnet_parts(data: ReportData) -> str:
    """7.1.4: which part of AlexNet takes the memory, the compute, the bandwidth."""
    sd = data.models["alexnet"].sizes[LARGE]
    layers, batched = sd.layers, sd.inference
    fc = _linear(layers)
    fc_params = sum(layer.params for layer in fc)
    fc_param_bytes = sum(layer.param_bytes for layer in fc)
    conv_macs = sum(layer.macs for layer in layers.layers if layer.type == "Conv2d")
    conv_intensity = [layer.intensity for layer in layers.layers if layer.type == "Conv2d"]
    activations = sd.memory_train.layers
    first_block = sum(nbytes for name, nbytes in activations.items() if name in {"0", "1", "2"})
    breakdown = sd.memory_train.breakdown
    by_bytes = sorted(layers.layers, key=lambda layer: -layer.bytes)[:2]
    rows = [[a.name, a.type, share(a.macs, layers.totals.macs), human_bytes(a.bytes), f"{a.intensity:.1f}",
             human_bytes(b.bytes), f"{b.intensity:.1f}"]
            for a, b in zip(layers.layers, batched.layers, strict=True) if a.macs]
    run = data.measured.run("alexnet", LARGE, False, BATCH)
    measured = ""
    if run:
        measured = (f" Measured on the H200 at batch {BATCH}, inference takes {ms(run.ms_per_step)} ms. Dividing "
                    f"the counted work by it (derived): {teraflops_per_s(run.achieved_per_s(batched.totals.flops))} "
                    f"TFLOP/s but only {terabytes_per_s(run.achieved_per_s(batched.totals.bytes))} TB/s — more "
                    "arithmetic than the FP32 datasheet peak (cuDNN runs convolutions on TF32 tensor cores), far "
                    "less traffic than the card can move: at this batch AlexNet is limited by compute, not "
                    "bandwidth.")
    return "\n\n".join([
        "**Memory.** It depends on what is counted. *Parameters*: the fully connected layers "
        f"({', '.join(layer.name for layer in fc)}) hold {fc_params:,} of {layers.params:,} parameters "
        f"({share(fc_params, layers.params)}), {human_bytes(fc_param_bytes)} in float32 — and as much again in "
        "gradients while training. *Activations*: the first convolution, its ReLU and pool (layers 0–2) work on the "
        f"largest maps (96×54×54 per image): their forwards allocate {human_bytes(first_block)} at batch {BATCH}, "
        f"{share(first_block, sum(activations.values()))} of what all layers' forwards allocate (the convolution's "
        "output is freed once the ReLU has run; the ReLU's is kept for backward). At the training peak the "
        f"activations ({human_bytes(breakdown['activations'])}) outweigh weights + gradients "
        f"({human_bytes(breakdown['weights'] + breakdown['gradients'])}); at batch 1 the weights dominate. (Both "
        f"{PREDICTED_FOR}.) The notes' answer (line 360 of {NOTES_000}) names the first two convolutions and plays "
        "the fully connected layers down: right for activations, wrong for parameters.",
        f"**Compute.** The convolutions: {human_count(conv_macs)} of {human_count(layers.totals.macs)} MACs per "
        f"image ({share(conv_macs, layers.totals.macs)}); the three fully connected layers do "
        f"{human_count(sum(layer.macs for layer in fc))}. The notes' answer (line 364) — that the fully connected "
        "layers are the compute bottleneck — does not hold: they hold the parameters, not the work. (Line 368 "
        "leaves the bandwidth question open.)",
        f"**Bandwidth.** A fully connected layer reads each 4-byte weight to do one multiply-add (2 FLOPs) per "
        f"image: about 0.5 FLOP/B at batch 1, far below the {FP32_RIDGE_FLOP_PER_BYTE:.1f} FLOP/B where the H200's "
        f"datasheet roofs meet ({ROOFS}) — memory-bound. At batch 1 the two big ones move the most "
        f"bytes of any layer ({', '.join(f'{layer.name}: {human_bytes(layer.bytes)}' for layer in by_bytes)}). "
        f"At batch {BATCH} each weight read serves {BATCH} images and their intensity rises about a hundredfold. "
        "The convolutions re-use every weight at every output position: "
        f"{min(conv_intensity):.0f}–{max(conv_intensity):.0f} FLOP/B even at batch 1, above the FP32 ridge — but "
        f"they run on the TF32 tensor cores, whose ridge is at {TF32_RIDGE_FLOP_PER_BYTE:.0f} FLOP/B.{measured} "
        "Counted intensity against datasheet roofs, not a measurement:",
        table(["layer", "type", "share of MACs", "bytes moved, batch 1", "FLOP/B, batch 1",
               f"bytes moved, batch {BATCH}", f"FLOP/B, batch {BATCH}"], rows,
              ("left", "left", "right", "right", "right", "right", "right")),
        _alexnet_time(data, sd),
        command(f"python -m profiler params alexnet --size {LARGE}\n"
                f"python -m profiler flops alexnet --size {LARGE}\n"
                f"python -m profiler flops alexnet --size {LARGE} --batch {BATCH}\n"
                f"python -m profiler memory alexnet --size {LARGE} --batch {BATCH} --train {PREDICT}\n"
                f"python -m profiler bandwidth alexnet --size {LARGE} --batch {BATCH} {PREDICT}\n"
                f"python -m profiler bandwidth alexnet --size {LARGE} --batch {BATCH} --train {PREDICT}"),
    ])


# --------------------------------------------------------------------------------------------- 7.2 VGG

def vgg_vs_alexnet(data: ReportData) -> str:
    """7.2.2: why VGG is slower and needs more memory than AlexNet."""
    vgg, alex = data.models["vgg"].sizes[LARGE], data.models["alexnet"].sizes[LARGE]
    rows = []
    for name, sd in (("alexnet", alex), ("vgg", vgg)):
        train_run = data.measured.run(name, LARGE, True, BATCH)
        infer_run = data.measured.run(name, LARGE, False, BATCH)
        rows.append([name, f"{sd.layers.params:,}", human_count(sd.layers.totals.macs),
                     mib(sd.memory_train.breakdown["activations"]), mib(sd.memory_train.peak_allocated_bytes),
                     mib(train_run.peak_allocated_bytes if train_run else None),
                     ms(infer_run.ms_per_step if infer_run else None),
                     ms(train_run.ms_per_step if train_run else None)])
    top = max(vgg.layers.layers, key=lambda layer: layer.macs)
    first = "×".join(map(str, vgg.layers.layers[0].output_shape[1:]))
    biggest_act = max(vgg.memory_train.layers.items(), key=lambda kv: kv[1])
    fc1 = _linear(vgg.layers)[0]
    fc1_inputs = vgg.layers.layers[vgg.layers.layers.index(fc1) - 1].output_shape[1]  # the flattened map
    times = [data.measured.run(n, LARGE, True, BATCH) for n in ("vgg", "alexnet")]
    time_ratio = ratio(times[0].ms_per_step, times[1].ms_per_step) if all(times) else "-"
    return "\n\n".join([
        table(["model", "params", "MACs / image", f"activations at the peak, {PREDICTED_FOR} (MiB)",
               "training peak, predicted (MiB)", "training peak, measured (MiB)", "inference ms/step, measured",
               "training ms/step, measured"], rows),
        f"{LARGE}×{LARGE}, batch {BATCH}.",
        command(f"python -m profiler flops alexnet vgg --size {LARGE}\n"
                f"python -m profiler memory alexnet vgg --size {LARGE} --batch {BATCH} --train {PREDICT}"),
        f"**Compute.** VGG-11 does {ratio(vgg.layers.totals.macs, alex.layers.totals.macs)} AlexNet's MACs. "
        f"AlexNet's 11×11 stride-4 first layer shrinks the image to 54×54 at once; VGG's first block runs a 3×3 "
        f"convolution at the full {LARGE}×{LARGE} with 64 channels (output {first} per image), the second block "
        "at half that size with 128, where AlexNet's largest map is 54×54. "
        f"Its heaviest layer ({top.name}) alone does {human_count(top.macs)} MACs per image. Measured, a training "
        f"step takes {time_ratio} as long — less than the MAC ratio, because VGG's big regular convolutions keep "
        "the GPU busier.",
        f"**Memory.** Activations: layer {biggest_act[0]} (the first convolution) leaves "
        f"{human_bytes(biggest_act[1])} allocated at batch {BATCH}, more than AlexNet's whole activation memory. "
        f"Parameters: VGG's first fully connected layer sees {fc1_inputs:,} inputs "
        f"(512×7×7) and holds {fc1.params:,} parameters, {share(fc1.params, vgg.layers.params)} of the model.",
        "The notes' answer (lines 577–579) speaks of 16–19 convolution layers (the book's VGG-11 has 8) and of "
        "a 7×7 AlexNet kernel (it is 11×11). It also says smaller kernels need more parameters per kernel; that does "
        "not hold — a 3×3 kernel has 9 weights per channel pair, AlexNet's 11×11 has 121. VGG pays for "
        "resolution and width, not for kernel size.",
    ])


def shrink_input(data: ReportData) -> str:
    """7.2.3: 224 → 96 for the six models."""
    rows = []
    for name in CHAPTER7:
        small, large = data.models[name].sizes[SMALL], data.models[name].sizes[LARGE]
        runs = [data.measured.run(name, size, True, BATCH) for size in (LARGE, SMALL)]
        rows.append([name, f"{small.layers.params:,}", f"{large.layers.params:,}",
                     ratio(large.layers.totals.macs, small.layers.totals.macs),
                     ratio(large.memory_train.peak_allocated_bytes, small.memory_train.peak_allocated_bytes),
                     ratio(runs[0].ms_per_step, runs[1].ms_per_step) if all(runs) else "-"])
    alex = [_linear(data.models["alexnet"].sizes[s].layers)[0] for s in SIZES]
    vgg = [_linear(data.models["vgg"].sizes[s].layers)[0] for s in SIZES]
    pools = [[layer.output_shape[2] for layer in data.models["alexnet"].sizes[size].layers.layers
              if layer.type == "MaxPool2d"] for size in SIZES]
    macs = {name: ratio(*(data.models[name].sizes[s].layers.totals.macs for s in (LARGE, SMALL)))
            for name in ("alexnet", "nin")}
    return "\n\n".join([
        table(["model", f"params at {SMALL}", f"params at {LARGE}", f"MACs {LARGE}/{SMALL}",
               f"training peak {LARGE}/{SMALL}, predicted", f"training ms/step {LARGE}/{SMALL}, measured"], rows),
        f"Batch {BATCH}; the area grows ({LARGE}/{SMALL})² = {(LARGE / SMALL) ** 2:.2f}×. More in "
        f"[comparison.md](comparison.md#224-vs-96-ratio-22496-of-each-quantity).",
        command(f"python -m profiler flops {' '.join(CHAPTER7)} --size {SMALL} --size {LARGE}\n"
                f"python -m profiler memory {' '.join(CHAPTER7)} --size {SMALL} --size {LARGE} --batch {BATCH} "
                f"--train {PREDICT}"),
        "**What scales with the area:** the MACs of every convolution and the activations it leaves for "
        f"backward. AlexNet and NiN shrink even more than the area ({macs['alexnet']} and {macs['nin']} fewer "
        "MACs): their unpadded strided layers floor the map sizes. AlexNet's pools give "
        f"{'/'.join(map(str, pools[0]))} at {SMALL}, where scaling its {'/'.join(map(str, pools[1]))} at {LARGE} "
        f"would give {'/'.join(f'{m * SMALL / LARGE:.1f}' for m in pools[1])}.",
        "**What does not:** convolution weights — a kernel does not know the image size — so NiN, GoogLeNet, "
        "ResNet and DenseNet (global average pooling before one small classifier) have the same parameters at "
        "both sizes. The exception is a fully connected layer fed by the flattened map: AlexNet's first one has "
        f"{alex[1].params:,} parameters at {LARGE} and {alex[0].params:,} at {SMALL}; VGG's {vgg[1].params:,} and "
        f"{vgg[0].params:,}. Memory shrinks less than the MACs (weights, gradients and workspaces stay), and "
        "measured time less still: at 96 the GPU is not kept full.",
        "The notes' own experiment (a narrower VGG on Fashion-MNIST) is about accuracy and training time; the "
        "tool answers the cost side only.",
    ])


# --------------------------------------------------------------------------------------------- 7.3 NiN

def nin_resources(data: ReportData) -> str:
    """7.3.3: NiN's parameters, compute, training and inference memory."""
    model = data.models["nin"]
    hand = claim("nin-hand-count").figures
    hand_macs = sum(params * side ** 2 for params, side in zip(hand["params"], hand["maps"], strict=True))
    blocks: dict[str, int] = {}
    for layer in model.sizes[LARGE].layers.layers:
        if layer.params:
            block = layer.name.split(".")[0]
            blocks[block] = blocks.get(block, 0) + layer.params
    param_rows = [[f"block {block}", f"{params:,}", share(params, model.sizes[LARGE].layers.params)]
                  for block, params in blocks.items()]
    rows = []
    for size, sd in model.sizes.items():
        rows.append([f"{size}×{size}", human_count(sd.layers.totals.macs), _peak(sd.memory_inference),
                     _measured_peak(data, "nin", size, False), _peak(sd.memory_train),
                     _measured_peak(data, "nin", size, True)])
    return "\n\n".join([
        f"**Parameters:** {model.sizes[LARGE].layers.params:,} (1 input channel, 10 classes, biases included), "
        "the same at every input size: there is no fully connected layer.",
        table(["NiN block (zoo layer)", "params", "share"], param_rows),
        f"**Compute, training and inference memory** (memory at batch {BATCH}; {PREDICTED_FOR} and measured on "
        "the H200 where committed):",
        table(["input", "MACs / image", "inference peak, predicted", "inference peak, measured",
               "training peak, predicted", "training peak, measured"], rows),
        command(f"python -m profiler params nin --size {LARGE}\n"
                f"python -m profiler flops nin --size {SMALL} --size {LARGE}\n"
                f"python -m profiler memory nin --size {SMALL} --size {LARGE} --batch {BATCH} {PREDICT}\n"
                f"python -m profiler memory nin --size {SMALL} --size {LARGE} --batch {BATCH} --train {PREDICT}"),
        "The training peak is "
        + " and ".join(f"{ratio(sd.memory_train.peak_allocated_bytes, sd.memory_inference.peak_allocated_bytes)} "
                       f"(at {size})" for size, sd in model.sizes.items())
        + " the inference peak: every layer's output stays allocated until backward, and gradients join the "
        f"weights. The notes' hand count ({sum(hand['params']):,} parameters, {hand_macs / 1e8:.2f}·10⁸ "
        f"multiply-adds) is checked in {_claim_link('nin-hand-count')}.",
    ])


# --------------------------------------------------------------------------------------------- 7.4 GoogLeNet

def googlenet_smallest(data: ReportData) -> str:
    """7.4.2: the smallest input GoogLeNet accepts."""
    smallest = data.smallest_sizes["googlenet"]
    rows = [[name, "-" if size is None else f"{size}×{size}"] for name, size in data.smallest_sizes.items()]
    stats = data.googlenet_smallest
    notes, (cited,) = claim("googlenet-smallest").figures["size"], claim("googlenet-smallest").cited
    return "\n\n".join([
        f"**{smallest}×{smallest}.** Found by bisection over input sizes with batch-1 forwards on meta tensors "
        "(`profiler.models.smallest_input_size`); the command below runs GoogLeNet on it:",
        command(f"python -m profiler flops googlenet --size {smallest}"),
        f"It goes through: {stats.params:,} parameters, {human_count(stats.totals.macs)} MACs — every map is "
        "1×1, so each weight is used exactly once. Every GoogLeNet convolution and pool is padded so that a "
        "1×1 map stays 1×1 (7×7 stride 2 padding 3; 3×3 stride 2 padding 1), and the head is a global average "
        "pool, so nothing collapses. A 1×1 image is of course useless to classify: the book's 224 (and 96) is "
        f"about what the features can see, not what the layers accept. The notes answer {notes}×{notes} (line "
        f"{cited.lines[0]}); see {_claim_link('googlenet-smallest')}. For the other chapter-7 models:",
        table(["model", "smallest input"], rows),
        command(f"python -m profiler flops alexnet --size {data.smallest_sizes['alexnet'] - 1}"),
        "names the layer where the map collapses and the smallest size that works. (The zoo's AlexNet and VGG "
        "size their first fully connected layer lazily; with the book's hard-coded `nn.Linear(6400, 4096)` "
        "AlexNet accepts only inputs whose last map is 5×5.)",
    ])


def parameter_savings(data: ReportData) -> str:
    """7.4.3: parameter sizes of AlexNet, VGG, NiN vs GoogLeNet, and where the savings come from."""
    rows = []
    for name in ("alexnet", "vgg", "nin", "googlenet"):
        stats = data.models[name].sizes[LARGE].layers
        fc = sum(layer.params for layer in _linear(stats))
        rows.append([name, f"{stats.params:,}", human_bytes(stats.param_bytes), f"{fc:,}", share(fc, stats.params),
                     f"{data.pointwise_params[name]:,}", share(data.pointwise_params[name], stats.params)])
    google = data.models["googlenet"].sizes[LARGE].layers
    last_map = _layer(google, "b5.1").output_shape
    reduce, conv = _layer(google, "b3.0.p2_1"), _layer(google, "b3.0.p2_2")
    in_channels, out_channels = _layer(google, "b2.4").output_shape[1], conv.output_shape[1]
    head, direct = data.googlenet_avoided["flattened head"], data.googlenet_avoided["direct 3×3"]
    width = head.output_shape[1]
    return "\n\n".join([
        table(["model", "params", "float32", "in fully connected layers", "share", "in 1×1 convolutions",
               "share"], rows),
        f"At {LARGE}×{LARGE}, 1 input channel, 10 classes.",
        command(f"python -m profiler params alexnet vgg nin googlenet --size {LARGE}"),
        "**Where the savings come from.** (1) *No big fully connected layers.* AlexNet and VGG flatten their "
        f"last feature map into a {width}-wide layer, and that is where more than 90 % of their parameters are. "
        "NiN ends with a convolution to 10 channels and a global average pool (no fully connected layer at all); "
        f"GoogLeNet averages its {'×'.join(map(str, last_map[1:]))} map to {last_map[1]} values before one "
        f"{_linear(google)[-1].params:,}-parameter classifier. Flattening that map into a {width}-wide layer "
        f"as AlexNet does would cost {head.params:,} parameters on its own — "
        f"{ratio(head.params, google.params)} all of GoogLeNet. (2) *1×1 convolutions that reduce "
        "channels before the expensive kernels.* In the first Inception block, the 3×3 path first maps "
        f"{in_channels} channels to {reduce.output_shape[1]} with a 1×1 convolution ({reduce.params:,} params) "
        f"and then applies the 3×3 ({conv.params:,}): {reduce.params + conv.params:,} parameters, against "
        f"{direct.params:,} for a 3×3 straight from {in_channels} to {out_channels} channels. The notes' answer (lines "
        "1607–1611) names the right mechanisms for NiN; for GoogLeNet it credits the parallel paths, but "
        "running paths in parallel saves nothing by itself — the 1×1 reductions and the pooled head do.",
    ])


# --------------------------------------------------------------------------------------------- 7.6 ResNet

def resnet_variants(data: ReportData) -> str:
    """7.6.2 / 7.6.3: ResNet-18, -34 and -50 (bottleneck)."""
    names = ("resnet", "resnet34", "resnet50")
    rows = []
    for name in names:
        for size in (LARGE, SMALL):
            sd = data.models[name].sizes[size]
            rows.append([name, f"{size}×{size}", f"{sd.layers.params:,}", human_count(sd.layers.totals.macs),
                         _peak(sd.memory_inference), _peak(sd.memory_train),
                         _measured_peak(data, name, size, True)])
    r34, r50 = (data.models[n].sizes[LARGE] for n in ("resnet34", "resnet50"))
    return "\n\n".join([
        "ResNet-18 is the book's `resnet`; ResNet-34 and ResNet-50 follow Table 1 of the ResNet paper with the "
        "book's conventions (its stem, biases, batch norm after each convolution of the main path).",
        table(["model", "input", "params", "MACs / image", f"inference peak, {PREDICTED_FOR}",
               "training peak, predicted", "training peak, measured"], rows),
        f"Memory at batch {BATCH}.",
        command(f"python -m profiler flops resnet resnet34 resnet50 --size {LARGE} --size {SMALL}\n"
                f"python -m profiler memory resnet resnet34 resnet50 --size {LARGE} --size {SMALL} --batch {BATCH} "
                f"--train {PREDICT}"),
        f"The bottleneck (7.6.3) does what it promises for parameters and compute: ResNet-50 is 16 layers deeper "
        f"than ResNet-34 with {ratio(r50.layers.params, r34.layers.params)} its parameters and "
        f"{ratio(r50.layers.totals.macs, r34.layers.totals.macs)} its MACs. It does not for memory: its training "
        f"peak is {ratio(r50.memory_train.peak_allocated_bytes, r34.memory_train.peak_allocated_bytes)} "
        "ResNet-34's, because every block's 1×1 expansion writes 4× wider maps (256–2048 channels) and each of its "
        "three batch norms and ReLUs keeps its own output for backward.",
    ])


# --------------------------------------------------------------------------------------------- 7.7 DenseNet

def densenet_params(data: ReportData) -> str:
    """7.7.2: why DenseNet has fewer parameters than ResNet."""
    rows = []
    for name in ("densenet", "resnet", "densenet121", "resnet50"):
        stats = data.models[name].sizes[LARGE].layers
        convs = [layer for layer in stats.layers if layer.type == "Conv2d"]
        top = max(convs, key=lambda layer: layer.params)
        rows.append([name, f"{stats.params:,}", len(convs), f"{top.params:,} ({top.name})",
                     f"{stats.params // len(convs):,}"])
    dense, res = (data.models[n].sizes[LARGE].layers for n in ("densenet", "resnet"))
    widest = max((layer for layer in res.layers if layer.type == "Conv2d"), key=lambda layer: layer.params)
    return "\n\n".join([
        table(["model", "params", "convolutions", "largest convolution", "params per convolution, mean"], rows,
              ("left", "right", "right", "right", "right")),
        command(f"python -m profiler params densenet resnet densenet121 resnet50 --size {LARGE}"),
        f"The book's DenseNet has {ratio(res.params, dense.params)} fewer parameters than ResNet-18. A "
        "convolution's parameters are k×k × input channels × output channels. In ResNet both channel counts grow "
        f"to 512, so one 3×3 convolution of the last stage holds {widest.params:,} parameters. In a dense block every "
        "convolution outputs only the growth rate, 32 channels, whatever its input; transition layers halve the "
        "channels with 1×1 convolutions; and the classifier sees a few hundred pooled channels. The notes' answer "
        "(line 2571) credits fewer *input* channels; those in fact grow along each block as outputs are "
        "concatenated — the decisive difference is the output width, 32 channels against up to 512.",
    ])


def densenet_memory(data: ReportData) -> str:
    """7.7.3: DenseNet's memory at 224, 96 and 32, and what reduces it."""
    model = data.models["densenet"]
    configs = [(DENSENET_SMALL_SIZE, data.densenet_small),
               *((size, model.sizes[size].memory_train) for size in SIZES)]
    rows = [[f"{size}×{size}", mib(result.peak_allocated_bytes), mib(result.breakdown["activations"]),
             share(result.breakdown["activations"], result.peak_allocated_bytes),
             mib(run.peak_allocated_bytes) if (run := data.measured.run("densenet", size, True, BATCH)) else "-"]
            for size, result in configs]
    base = model.sizes[LARGE].memory_train
    alex, google = (data.models[n].sizes[LARGE].memory_train for n in ("alexnet", "googlenet"))
    saver_rows = [["none (float32)", mib(base.peak_allocated_bytes), "-"]]
    saver_rows += [[label, mib(result.peak_allocated_bytes), error(result.peak_allocated_bytes,
                                                                     base.peak_allocated_bytes)]
                   for label, result in data.densenet_savers.items()]
    train_macs = model.sizes[LARGE].train.totals.macs
    top = sorted(base.layers.items(), key=lambda kv: -kv[1])[:3]
    sizes = " ".join(f"--size {s}" for s in (LARGE, SMALL, DENSENET_SMALL_SIZE))
    notes = claim("densenet-memory").figures
    return "\n\n".join([
        f"**1. Is it true?** Training step, batch {BATCH}, MiB, {PREDICTED_FOR} (measured where committed):",
        table(["input", "peak allocated, predicted", "activations, predicted", "activations' share",
               "peak allocated, measured"], rows),
        command(f"python -m profiler memory densenet {sizes} --batch {BATCH} --train {PREDICT}"),
        "For its size, yes: DenseNet has the fewest parameters of the six "
        f"({model.sizes[LARGE].layers.params:,}) but, at {LARGE}×{LARGE}, a training peak "
        f"{ratio(base.peak_allocated_bytes, alex.peak_allocated_bytes)} AlexNet's and "
        f"{ratio(base.peak_allocated_bytes, google.peak_allocated_bytes)} GoogLeNet's "
        "([comparison.md](comparison.md)). Almost all of it is activations: every "
        "concatenation writes a new, wider tensor, and each conv block's batch norm and ReLU keep their own "
        f"outputs for backward. The largest are the stem's ({', '.join(f'{n}: {human_bytes(b)}' for n, b in top)}).",
        f"**2. What reduces it?** Predicted at {LARGE}×{LARGE}, batch {BATCH}:",
        table(["memory saver", "peak allocated (MiB)", "change"], saver_rows),
        command(f"python -m profiler memory densenet --size {LARGE} --batch {BATCH} --train {PREDICT} --checkpoint\n"
                f"python -m profiler memory densenet --size {LARGE} --batch {BATCH} --train {PREDICT} "
                "--dtype bfloat16\n"
                f"python -m profiler memory densenet --size {LARGE} --batch {BATCH} --train {PREDICT} --checkpoint "
                "--dtype bfloat16"),
        "Activation checkpointing (`torch.utils.checkpoint` per block) keeps only each block's input and "
        "recomputes the rest during backward — no framework change, about one extra forward of compute "
        f"(a forward is a third of the step's {human_count(train_macs)} MACs per batch). bfloat16 halves every "
        "activation and weight. The two compose. Of the remedies the notes list (lines 2648–2660), a smaller "
        "network or input, mixed precision and gradient accumulation over smaller batches also cut the peak; "
        "changing the optimizer does not here, since plain SGD keeps no state. The memory-efficient DenseNet of "
        "Pleiss et al. (2017) applies the same recompute idea to its concatenations and batch norms. The notes' "
        f"measurements ({', '.join(f'{mib:.1f} MB at {size}' for size, mib in notes.items())}) are checked in "
        f"{_claim_link('densenet-memory')}.",
    ])


#: The answer to each exercise of :data:`~profiler.site.content.EXERCISES`, by number.
ANSWERS: dict[str, Callable[[ReportData], str]] = {
    "7.1.3": alexnet_batches,
    "7.1.4": alexnet_parts,
    "7.2.2": vgg_vs_alexnet,
    "7.2.3": shrink_input,
    "7.3.3": nin_resources,
    "7.4.2": googlenet_smallest,
    "7.4.3": parameter_savings,
    "7.6.2–7.6.3": resnet_variants,
    "7.7.2": densenet_params,
    "7.7.3": densenet_memory,
}


def _section_line(number: str) -> str:
    """Which section of the book an exercise number belongs to, in both editions."""
    section = SECTIONS[".".join(number.split(".")[:2])]
    return (f"*Exercises of §{section.number} {section.title} ({EDITION}; §{section.english_number} "
            f"“{section.english_title}” in the English edition).*")


def exercises_page(data: ReportData) -> str:
    """``reports/exercises.md``."""
    lead = "\n\n".join([
        "The chapter-7 exercises of *Dive into Deep Learning* that ask what a network costs, answered with this "
        f"tool's numbers. Chapters, sections and exercises are numbered as in {EDITION_NAME}, the edition the "
        f"course notes follow ({EDITION} below); {ENGLISH_EDITION_NAME} numbers these sections one chapter later "
        "(chapter 8). Questions are paraphrased from the course notes "
        f"({NOTES_000}, cited by line; not in this repository). Each answer shows the command that prints its "
        f"numbers; counted figures need no GPU, memory and time are {PREDICTED_FOR} (the card of the committed "
        "reference), measured figures come from:",
        "\n".join(provenance_lines(data.measured)),
        f"Models: the book's definitions, 1 input channel, 10 classes, float32; batch {BATCH} unless stated.",
    ])
    sections = [f"## {e.number}\n\n{_section_line(e.number)}\n\n> {e.question} ({NOTES_000}, line {e.line})\n\n"
                f"{ANSWERS[e.number](data)}" for e in EXERCISES]
    return page("Chapter 7 exercises about resources, answered with numbers", lead, sections)
