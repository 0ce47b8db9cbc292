"""Counting: our counter against fvcore, torch's FlopCounterMode, torchinfo, thop and calflops — time, MACs, params.

The 12 configurations of issue 3 (the six chapter-7 families at 96 and 224; 1 channel, 10 classes) at batch 1 and 128.

* Our time is the whole job as :func:`profiler.counting.count_configs` does it: build the model on the meta device
  (sizing its lazy layers) and count on meta tensors.
* Each peer gets its model already built and its input already made, so its time is only its own analysis:
  fvcore (JIT trace), torchinfo and thop (module hooks) and calflops (hooks and patched functionals) run a real CPU
  forward with real weights, which is how they count; FlopCounterMode runs on meta tensors, as ours does. Every peer
  runs in eval mode under ``torch.no_grad()``, its cheapest setting.
* The tools take turns on each configuration (ours, fvcore, …, ours, fvcore, …) so drift lands on all alike.
* MACs and params are those the tools report at batch 1; where a peer's MACs differ from ours, its per-module counts
  (fvcore ``by_module``, torchinfo's layer list, thop's ``ret_layer_info``) are compared with ours layer by layer and
  the differences summed by layer type, and per output element of those layers, to show which convention causes them.
"""

from __future__ import annotations

import importlib
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod

import torch
from torch import nn

from benchmarks.common import (
    Section,
    Timing,
    interleaved,
    markdown_table,
    milliseconds,
    package_version,
    progress,
    ratio,
    text_table,
)
from profiler.counting import ModelStats, count_configs
from profiler.kinds import ROOT_ROW
from profiler.models import build, resolve
from profiler.models.loading import to_device
from profiler.models.zoo import CHAPTER7

SIZES = (96, 224)
CONFIGS = tuple((name, size) for name in CHAPTER7 for size in SIZES)
BATCHES = (1, 128)
#: Timed runs per (tool, configuration) at each batch size.
REPEATS = {1: 5, 128: 3}
#: A tool stops repeating a configuration once its runs of it add up to this many seconds (real batch-128 forwards
#: of VGG at 224 take tens of seconds on two cores); the tables say how many runs each time is the min/median of.
BUDGET_S = 60.0
#: Issue 3: our counter is at least this many times faster than fvcore on the 12 configurations at batch 128.
TARGET_SPEEDUP = 10
OURS = "profiler (ours)"


@dataclass(frozen=True)
class Count:
    """What a tool reports for one configuration. ``macs``: multiply-accumulates, one per fused multiply-add (fvcore
    calls these flops; FlopCounterMode's flops are halved). ``params``: None where the tool does not count them."""

    macs: int
    params: int | None


@dataclass(frozen=True)
class Peer:
    """A counting tool we compare with. ``count(model, x)`` calls its public API once; ``layer_macs(model, x)`` (where
    the tool exposes per-module counts) gives each module's own MACs, children excluded, by qualified name."""

    name: str
    package: str
    device: str  # "cpu": real weights and a real forward; "meta": shapes only
    api: str  # what is called, for the report
    count: Callable[[nn.Module, torch.Tensor], Count]
    layer_macs: Callable[[nn.Module, torch.Tensor], dict[str, int]] | None = None


def _own_counts(model: nn.Module, inclusive: dict[str, float]) -> dict[str, int]:
    """Per-module totals that include the children (``""`` = the model) → each module's own part."""
    own = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        children = sum(inclusive.get(prefix + child, 0) for child, _ in module.named_children())
        own[name] = int(inclusive.get(name, 0) - children)
    return own


def _fvcore_analysis(model: nn.Module, x: torch.Tensor):
    from fvcore.nn import FlopCountAnalysis

    return FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def _fvcore(model: nn.Module, x: torch.Tensor) -> Count:
    from fvcore.nn import parameter_count

    return Count(int(_fvcore_analysis(model, x).total()), parameter_count(model)[""])


def _fvcore_layers(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    return _own_counts(model, dict(_fvcore_analysis(model, x).by_module()))


def _flop_counter_mode(model: nn.Module, x: torch.Tensor) -> Count:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        model(x)
    return Count(mode.get_total_flops() // 2, None)


def _torchinfo(model: nn.Module, x: torch.Tensor) -> Count:
    from torchinfo import summary

    stats = summary(model, input_data=x, verbose=0)
    return Count(stats.total_mult_adds, stats.total_params)


def _torchinfo_layers(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Leaf layers only: torchinfo's total sums those (a container's ``macs`` would count its children's
    parameters again, and its own functional calls are never counted)."""
    from torchinfo import summary

    names = {id(module): name for name, module in model.named_modules()}
    own: dict[str, int] = defaultdict(int)
    for layer in summary(model, input_data=x, verbose=0).summary_list:
        if layer.is_leaf_layer:
            own[names[id(layer.module)]] += layer.macs
    return own


def _thop(model: nn.Module, x: torch.Tensor) -> Count:
    from thop import profile

    macs, params = profile(model, inputs=(x,), verbose=False)
    return Count(int(macs), int(params))


def _thop_layers(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    from thop import profile

    total, _, children = profile(model, inputs=(x,), verbose=False, ret_layer_info=True)
    inclusive = {"": total}

    def walk(prefix: str, tree: dict) -> None:
        for child, (ops, _, grandchildren) in tree.items():
            inclusive[prefix + child] = ops
            walk(f"{prefix}{child}.", grandchildren)

    walk("", children)
    return _own_counts(model, inclusive)


def _calflops(model: nn.Module, x: torch.Tensor) -> Count:
    from calflops import calculate_flops

    _, macs, params = calculate_flops(model, args=[x], print_results=False, print_detailed=False,
                                      output_as_string=False)
    return Count(int(macs), int(params))


PEERS = (
    Peer("fvcore", "fvcore", "cpu", "`FlopCountAnalysis(model, x).total()`, `parameter_count`", _fvcore,
         _fvcore_layers),
    Peer("FlopCounterMode", "torch", "meta", "a forward inside `FlopCounterMode()`, total flops ÷ 2",
         _flop_counter_mode),
    Peer("torchinfo", "torchinfo", "cpu", "`summary(model, input_data=x)`: `total_mult_adds`, `total_params`",
         _torchinfo, _torchinfo_layers),
    Peer("thop", "thop", "cpu", "`thop.profile(model, inputs=(x,))`", _thop, _thop_layers),
    Peer("calflops", "calflops", "cpu", "`calculate_flops(model, args=[x])`: MACs, params", _calflops),
)


def _usable(peers: tuple[Peer, ...]) -> tuple[list[Peer], dict[str, str]]:
    """The peers that import here, and why each other one does not."""
    usable, missing = [], {}
    for peer in peers:
        try:
            importlib.import_module(peer.package)
            usable.append(peer)
        except Exception as err:  # a peer's import can fail in its own dependencies (calflops needs transformers)
            missing[peer.name] = f"{type(err).__name__}: {err}"
    return usable, missing


@dataclass
class _Config:
    """A configuration ready for the tools: its models (by device) and input tensors, built outside the timing."""

    name: str
    size: int
    batch: int
    models: dict[str, nn.Module]
    inputs: dict[str, torch.Tensor]

    @classmethod
    def prepare(cls, name: str, size: int, batch: int, devices: set[str]) -> _Config:
        spec = resolve(name)
        shape = spec.input_shape(batch, size)
        models, inputs = {}, {}
        for device in devices:
            model = build(spec, size)
            models[device] = (to_device(model, device) if device != "meta" else model).eval()
            inputs[device] = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        return cls(name, size, batch, models, inputs)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.size}"

    def task(self, peer: Peer, count: Callable[[nn.Module, torch.Tensor], object] | None = None
             ) -> Callable[[], object]:
        """``peer.count`` (or ``count``) on this configuration, in eval mode under no_grad, warnings silenced."""
        def call() -> object:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return (count or peer.count)(self.models[peer.device], self.inputs[peer.device])
        return call


@dataclass
class _TypeDiff:
    """Where one peer's MACs differ from ours on layers of one type, summed over the configurations."""

    layers: int = 0
    ours_macs: int = 0
    peer_macs: int = 0
    per_output_element: list[float] = field(default_factory=list)


def _compare_layers(ours: ModelStats, peer_own: dict[str, int], model: nn.Module,
                    into: dict[str, _TypeDiff]) -> None:
    """Add one configuration's layer-by-layer differences (peer − ours, by module name) to ``into`` by layer type."""
    types = {name: type(module).__name__ for name, module in model.named_modules()}
    rows = {("" if row.name == ROOT_ROW else row.name): row for row in ours.layers}
    for name in sorted(set(rows) | set(peer_own)):
        row = rows.get(name)
        our_macs = row.macs if row else 0
        peer_macs = peer_own.get(name, 0)
        if peer_macs == our_macs:
            continue
        diff = into.setdefault(types.get(name, "-"), _TypeDiff())
        diff.layers += 1
        diff.ours_macs += our_macs
        diff.peer_macs += peer_macs
        if row and row.output_shape:
            diff.per_output_element.append((peer_macs - our_macs) / prod(row.output_shape))


@dataclass
class _Results:
    timings: dict[int, dict[str, dict[str, Timing]]] = field(default_factory=dict)  # batch → config → tool → Timing
    counts: dict[str, dict[str, Count]] = field(default_factory=dict)  # config → tool → Count at batch 1
    layer_diffs: dict[str, dict[str, _TypeDiff]] = field(default_factory=dict)  # peer → layer type → diff


def run() -> Section:
    """Warm every tool up once (imports, first-call caches), then time the 12 configurations at each batch size and
    compare the batch-1 counts."""
    peers, missing = _usable(PEERS)
    devices = {peer.device for peer in peers}
    progress("counting: warm-up, one untimed call per tool on nin@96, batch 1")
    warm = _Config.prepare("nin", 96, 1, devices)
    count_configs(["nin"], [96], 1)
    for peer in peers:
        warm.task(peer)()
    results = _Results(layer_diffs={peer.name: {} for peer in peers if peer.layer_macs})
    for batch in BATCHES:
        results.timings[batch] = {}
        for name, size in CONFIGS:
            config = _Config.prepare(name, size, batch, devices)
            tasks = {OURS: lambda c=config: count_configs([c.name], [c.size], c.batch)[0]}
            tasks.update((peer.name, config.task(peer)) for peer in peers)
            timings = interleaved(tasks, REPEATS[batch], BUDGET_S)
            results.timings[batch][config.label] = timings
            progress(f"counting: batch {batch} {config.label}: " + ", ".join(
                f"{tool} {milliseconds(t.median_s)} ms ×{t.n}" for tool, t in timings.items()))
            if batch == 1:
                _record_counts(config, timings, peers, results)
    return _section(results, peers, missing)


def _record_counts(config: _Config, timings: dict[str, Timing], peers: list[Peer], results: _Results) -> None:
    ours: ModelStats = timings[OURS].result
    results.counts[config.label] = {OURS: Count(ours.totals.macs, ours.params),
                                    **{peer.name: timings[peer.name].result for peer in peers}}
    for peer in peers:
        if peer.layer_macs and results.counts[config.label][peer.name].macs != ours.totals.macs:
            own = config.task(peer, peer.layer_macs)()
            _compare_layers(ours, own, config.models[peer.device], results.layer_diffs[peer.name])


# --- the report ----------------------------------------------------------------------------------------------------

def _section(results: _Results, peers: list[Peer], missing: dict[str, str]) -> Section:
    tools = [OURS, *(peer.name for peer in peers)]
    totals_headers, totals_rows = _totals(results, tools)
    target = _target(results)
    agreement = _agreement_lines(results, peers)
    body = [
        _method(peers, missing),
        markdown_table(("target", "measured", "result"), [target]),
        f"### Total time per tool ({len(CONFIGS)} configurations)",
        "Sum over the configurations of each tool's per-configuration median, and of its min; each ÷ ours at the "
        "same batch. Intermittent load from other processes inflates medians more than mins.",
        markdown_table(totals_headers, totals_rows, ("left",) + ("right",) * (len(totals_headers) - 1)),
    ]
    for batch in sorted(BATCHES, reverse=True):
        body += [f"### Time per configuration, batch {batch}",
                 "Median ms over ×n runs; in brackets, the tool's median ÷ ours (the totals above also give mins).",
                 _per_config_table(results.timings[batch], tools)]
    body += ["### MACs and params at batch 1", "\n".join(agreement), _counts_table(results, peers),
             "### Where the MACs differ, by layer type (batch 1, summed over the configurations that differ)",
             _layer_diff_table(results), CONVENTIONS.format(**{p: package_version(p) for p in
                                                                 ("fvcore", "torchinfo", "thop", "calflops")})]
    summary = "\n".join([
        text_table(totals_headers, totals_rows, ("left",) + ("right",) * (len(totals_headers) - 1)),
        f"target: {target[0]}: {target[1]} → {target[2]}",
        *(line.replace("`", "") for line in agreement),
        *(f"not run: {name} ({why})" for name, why in missing.items()),
    ])
    return Section("Counting: time and MACs against fvcore, FlopCounterMode, torchinfo, thop, calflops",
                   "\n\n".join(body), summary)


def _method(peers: list[Peer], missing: dict[str, str]) -> str:
    lines = [
        f"The {len(CONFIGS)} configurations: {', '.join(f'{n}@{s}' for n, s in CONFIGS)} (1 channel, 10 classes), "
        f"each at batch {' and '.join(map(str, BATCHES))}. Runs per (tool, configuration): "
        + ", ".join(f"{REPEATS[b]} at batch {b}" for b in BATCHES)
        + f", fewer where a tool's runs of one configuration pass {BUDGET_S:.0f} s (the ×n in the tables); tools take "
        "turns on each configuration, after one untimed warm-up call each.",
        "",
        markdown_table(("tool", "runs on", "what is timed"), [
            (OURS, "meta tensors", "`count_configs([name], [size], batch)` (profiler.counting): build the model on "
                                   "meta, size its lazy layers, count"),
            *((_versioned(peer), "real CPU forward, real weights" if peer.device == "cpu" else "meta tensors",
               peer.api) for peer in peers)]),
        "",
        "Peers get their model built beforehand (untimed: on the CPU with initialized weights, or on meta) and run in "
        "eval mode under `torch.no_grad()`; their time is their analysis alone, ours includes building the model.",
    ]
    lines += [f"\nNot run: {name} — {why}." for name, why in missing.items()]
    return "\n".join(lines)


def _versioned(peer: Peer) -> str:
    version = package_version(peer.package)
    return f"{peer.name} {version}" if peer.package == peer.name else f"{peer.name} ({peer.package} {version})"


def _total_s(results: _Results, batch: int, tool: str, stat: str) -> float:
    """A tool's time for all configurations at ``batch``: the sum of its per-configuration ``stat`` (median/min)."""
    return sum(getattr(by_tool[tool], f"{stat}_s") for by_tool in results.timings[batch].values())


def _target(results: _Results) -> tuple[str, str, str]:
    """Issue 3's speed target, judged on both the medians and the mins: PASS only if both ratios reach it."""
    batch = max(BATCHES)
    goal = f"ours ≥ {TARGET_SPEEDUP}× faster than fvcore, {len(CONFIGS)} configurations at batch {batch}"
    if not all("fvcore" in by_tool for by_tool in results.timings[batch].values()):
        return goal, "fvcore not run", "not measured"
    medians, mins = ({tool: _total_s(results, batch, tool, stat) for tool in ("fvcore", OURS)}
                     for stat in ("median", "min"))
    speedup = min(medians["fvcore"] / medians[OURS], mins["fvcore"] / mins[OURS])
    measured = (f"{ratio(medians['fvcore'], medians[OURS])} by total medians (fvcore {medians['fvcore']:.1f} s, "
                f"ours {medians[OURS]:.2f} s), {ratio(mins['fvcore'], mins[OURS])} by total mins")
    return goal, measured, "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"


def _totals(results: _Results, tools: list[str]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    headers = ("tool", *(f"batch {b}: {what}" for b in BATCHES
                         for what in ("median s", "min s", "÷ ours, medians", "÷ ours, mins")))
    rows = []
    for tool in tools:
        row = [tool]
        for batch in BATCHES:
            median, least = (_total_s(results, batch, tool, stat) for stat in ("median", "min"))
            row += [f"{median:.2f}", f"{least:.2f}", ratio(median, _total_s(results, batch, OURS, "median")),
                    ratio(least, _total_s(results, batch, OURS, "min"))]
        rows.append(tuple(row))
    return headers, rows


def _per_config_table(timings: dict[str, dict[str, Timing]], tools: list[str]) -> str:
    rows = []
    for label, by_tool in timings.items():
        ours = by_tool[OURS].median_s
        rows.append((label, *(f"{milliseconds(t.median_s)} ×{t.n}" + ("" if tool == OURS else
                                                                       f" ({ratio(t.median_s, ours)})")
                              for tool, t in by_tool.items())))
    return markdown_table(("config", *tools), rows, ("left",) + ("right",) * len(tools))


def _agreement_lines(results: _Results, peers: list[Peer]) -> list[str]:
    """One line per peer: on how many configurations its MACs and params equal ours, and the largest difference."""
    lines = []
    for peer in peers:
        macs_equal = params_equal = 0
        worst = 0.0
        for counts in results.counts.values():
            ours, theirs = counts[OURS], counts[peer.name]
            macs_equal += theirs.macs == ours.macs
            params_equal += theirs.params == ours.params
            worst = max(worst, abs(theirs.macs - ours.macs) / ours.macs)
        params = ("does not count params" if all(c[peer.name].params is None for c in results.counts.values())
                  else f"params equal ours on {params_equal}/{len(results.counts)}")
        lines.append(f"- `{peer.name}`: MACs equal ours on {macs_equal}/{len(results.counts)} configurations "
                     f"(largest difference {worst:.3%}); {params}.")
    return lines


def _counts_table(results: _Results, peers: list[Peer]) -> str:
    headers = ("config", "params (ours)", "MACs (ours)", *(f"{peer.name} − ours" for peer in peers))
    rows = []
    for label, counts in results.counts.items():
        ours = counts[OURS]
        rows.append((label, f"{ours.params:,}", f"{ours.macs:,}",
                     *(_signed(counts[peer.name].macs - ours.macs, ours.macs) for peer in peers)))
    return ("MACs of each peer minus ours (0: equal); params are compared in the lines above.\n\n"
            + markdown_table(headers, rows, ("left",) + ("right",) * (len(headers) - 1)))


def _signed(diff: int, base: int) -> str:
    return "0" if diff == 0 else f"{diff:+,} ({diff / base:+.3%})"


def _layer_diff_table(results: _Results) -> str:
    rows = []
    for peer, by_type in results.layer_diffs.items():
        for layer_type, diff in sorted(by_type.items()):
            ratios = diff.per_output_element
            spread = "—" if not ratios else (f"{min(ratios):.3g}" if max(ratios) - min(ratios) < 1e-9
                                             else f"{min(ratios):.3g} … {max(ratios):.3g}")
            rows.append((peer, layer_type, str(diff.layers), f"{diff.ours_macs:,}", f"{diff.peer_macs:,}",
                         f"{diff.peer_macs - diff.ours_macs:+,}", spread))
    if not rows:
        return "Every peer with per-layer counts agrees with ours on every layer."
    headers = ("peer", "layer type", "layers", "ours", "peer", "peer − ours", "per output element")
    return markdown_table(headers, rows, ("left", "left") + ("right",) * 5)


#: What the tables above show, read against each peer's source at the versions named; rerun and reread when they change.
#: Our convention: 1 MAC per multiply-accumulate of a conv/linear/matmul; bias adds and all elementwise,
#: normalization and pooling work go to ``other_ops``, which no peer reports separately and this page does not compare.
CONVENTIONS = """\
How to read the differences (the per-layer table above, checked against each peer's source at the version named):

- **fvcore {fvcore}** counts one fused multiply-add as one flop, so its `total()` is a MAC count, and its conv and
  linear counts equal ours. Its handles add `batch_norm` at inference as 2 per element (scale and shift, affine) and
  `adaptive_avg_pool2d` as 1 per input element (the window size per output element). `max_pool2d`, `avg_pool2d` and the
  residual `add_` have no handle (reported as unsupported, counted 0); `relu` and `cat` are on its ignore list.
- **FlopCounterMode** (torch) counts 2 flops per multiply-accumulate of convolutions and matrix products (linear
  layers included) and nothing else, on meta tensors as ours does: half its total is our MAC count.
- **torchinfo {torchinfo}** derives mult-adds from parameter counts rather than from the ops run, and sums leaf layers
  only. A conv layer counts (weight + bias elements) × output positions × batch, so its bias adds 1 per output element;
  any other layer counts its parameters × batch: a linear layer's bias adds 1 per output feature, a BatchNorm layer
  its 2 × channels (γ, β) once per sample whatever the feature-map size (hence the varying per-element figure). Layers
  without parameters count 0.
- **thop {thop}** counts conv and linear without bias (equal to ours), BatchNorm as 4 per element (2 per element,
  doubled for the affine γ, β), average pooling as 1 per output element, adaptive average pooling as window + 1 per
  output element, ReLU and max pooling as 0, and no functional calls (the residual add, `torch.cat`).
- **calflops {calflops}** (module hooks plus patched `torch.nn.functional` calls): MACs equal ours.
"""
