"""``python -m profiler``: parse the command line, call the analyzers, format their records. No math here."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from profiler.catalogue import DEFAULT_GPU, GPUS
from profiler.errors import EXIT_USAGE, ProfilerError
from profiler.format.output import FORMATS, emit
from profiler.kinds import Source
from profiler.models import MAX_SIZE
from profiler.step import DTYPES
from profiler.util.files import check_writable, check_writable_folder

PROG = "python -m profiler"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (what is wrong, where to look) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"profiler: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USAGE)


def _int_in(name: str, low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a whole number, not '{text}'") from None
        if value < low or (high is not None and value > high):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{name} must be {limit} (got {value})")
        return value
    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (terminal), markdown, json or csv (default: table)")
    parser.add_argument("--output", metavar="FILE", help="write to FILE (replaced atomically) instead of stdout")


def _add_model_args(parser: argparse.ArgumentParser, batch_default: int) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="zoo name (python -m profiler models), torchvision:NAME, or module.path:callable")
    parser.add_argument("--size", type=_int_in("--size", 1, MAX_SIZE), action="append", metavar="N",
                        help=f"input height and width, repeatable (default: 224; 28 for lenet; the weights' crop "
                             f"size for torchvision models; at most {MAX_SIZE})")
    parser.add_argument("--batch", type=_int_in("--batch", 1), default=batch_default,
                        help=f"batch size (default: {batch_default})")
    parser.add_argument("--channels", type=_int_in("--channels", 1, 4096),
                        help="input channels (default: 1 for the zoo, 3 for torchvision and factories)")
    parser.add_argument("--classes", type=_int_in("--classes", 1, 1_000_000),
                        help="output classes (default: 10 for the zoo, 1000 for torchvision)")
    _add_output(parser)


def _conventions_epilog() -> str:
    from profiler.counting import conventions, other_ops_conventions

    rules = "\n".join(f"  - {rule}" for rule in other_ops_conventions())
    return f"conventions: {conventions()}.\n\nother-ops rules:\n{rules}"


def _version() -> str:
    """``profiler X.Y.Z (torch A, torchvision B)``, read from the installed metadata (nothing imported)."""
    from importlib import metadata

    from profiler import __version__

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"profiler {__version__} (torch {version('torch')}, torchvision {version('torchvision')})"


def build_parser() -> argparse.ArgumentParser:
    """The full command line: models, params, flops (and the subcommands other modules register)."""
    parser = _Parser(prog=PROG, description="What a CNN costs — parameters, MACs, FLOPs, bytes moved, memory and "
                                            "time — layer by layer.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    models = sub.add_parser("models", help="list the model zoo", description="List the model zoo.")
    _add_output(models)
    models.set_defaults(handler=_cmd_models)

    gpus = sub.add_parser("gpus", help="list the GPUs predictions can target (--gpu)",
                          description="The catalogue of GPUs: memory, bandwidth, compute roofs, compute capability, "
                                      "the cuBLAS workspace PyTorch gives each handle, and the source of every figure.")
    _add_output(gpus)
    gpus.set_defaults(handler=_cmd_gpus)

    for name, what in (("params", "parameters per layer"), ("flops", "MACs, FLOPs, other ops and bytes per layer")):
        cmd = sub.add_parser(name, help=f"{what} (on meta tensors: no real compute)",
                             description=f"Count {what}, on meta tensors (no real compute: batch size is free).",
                             epilog=_conventions_epilog() if name == "flops" else None,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_model_args(cmd, batch_default=1)
        cmd.add_argument("--depth", type=_int_in("--depth", 1),
                         help="fold layers deeper than N name components into their parent block")
        cmd.add_argument("--train", action="store_true",
                         help="count one training step: forward + loss + backward (weight and input gradients)")
        cmd.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                         help="parameter and activation dtype: bytes moved depend on it (default: float32)")
        if name == "flops":
            cmd.add_argument("--compare", choices=("fvcore",),
                             help="print fvcore's flops per layer beside our MACs, with the reason for each "
                                  "difference (fvcore runs the real forward: a CPU copy at batch 1)")
        cmd.set_defaults(handler=_cmd_count, what=name)

    memory = sub.add_parser(
        "memory", help="peak GPU memory: measured on CUDA, predicted anywhere",
        description="Peak GPU memory of inference or one training step, with a breakdown. Measured where CUDA is "
                    "available, otherwise predicted for --gpu (and labelled so).")
    _add_model_args(memory, batch_default=128)
    memory.add_argument("--train", action="store_true", help="one training step (forward, backward, optimizer step)")
    how = memory.add_mutually_exclusive_group()
    how.add_argument("--measure", action="store_true", help="measure (needs CUDA, or --device cpu for host memory)")
    how.add_argument("--predict", action="store_true", help="predict for --gpu without running anything")
    memory.add_argument("--device", choices=("cuda", "cpu"), help="where to measure (default: cuda if available)")
    memory.add_argument("--optimizer", choices=("sgd", "sgd-momentum", "adam"), default="sgd",
                        help="optimizer of the training step (default: sgd, no momentum)")
    memory.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="parameter and activation dtype (default: float32)")
    memory.add_argument("--checkpoint", action="store_true",
                        help="activation checkpointing per block (recompute each block's activations in backward)")
    memory.add_argument("--gpu", choices=sorted(GPUS), default=DEFAULT_GPU, metavar="GPU",
                        help=f"GPU to predict for and give the fit verdict for: {', '.join(sorted(GPUS))} "
                             f"(default: {DEFAULT_GPU}; python -m profiler gpus lists them)")
    memory.add_argument("--gpu-memory", metavar="SIZE", help="total device memory for the fit verdict and "
                                                              "--max-batch, e.g. 80GiB or 40GB (default: the --gpu's, "
                                                              "or the device's when measuring)")
    memory.add_argument("--max-batch", action="store_true",
                        help="find the largest batch whose fit verdict is 'fits'")
    memory.add_argument("--trace", metavar="FILE", help="measured runs: save the allocator's memory history "
                                                       "(open it at https://pytorch.org/memory_viz)")
    memory.set_defaults(handler=_cmd_memory)

    bandwidth = sub.add_parser(
        "bandwidth", help="time, achieved FLOP/s and bandwidth per layer: measured (torch profiler, NVML) or "
                          "predicted for --gpu, with a roofline",
        description="Kernel time per layer from the torch profiler, achieved FLOP/s and bytes/s against the device's "
                    "peaks, NVML counters during the run. Without CUDA: predicted for --gpu by the time model "
                    "(labelled predicted); --device cpu measures the CPU instead (labelled CPU).")
    _add_model_args(bandwidth, batch_default=128)
    bandwidth.add_argument("--train", action="store_true", help="profile training steps instead of inference")
    bandwidth.add_argument("--steps", type=_int_in("--steps", 1, 10_000), default=20,
                           help="profiled steps of a measured run (default: 20)")
    bandwidth.add_argument("--warmup", type=_int_in("--warmup", 0, 10_000), default=5,
                           help="warm-up steps before profiling a measured run (default: 5)")
    where = bandwidth.add_mutually_exclusive_group()
    where.add_argument("--device", choices=("cuda", "cpu"), help="measure there (default: cuda if available, else "
                                                                 "predict for --gpu)")
    where.add_argument("--predict", action="store_true", help="predict for --gpu without running anything")
    bandwidth.add_argument("--gpu", metavar="CARD", help="catalogue key of the card to predict for (default: h100; "
                                                          "e.g. h200, a100-80gb, l4, t4)")
    bandwidth.add_argument("--gpu-memory", metavar="SIZE", help="predicted runs: device memory to check the step's "
                                                                "predicted peak against, e.g. 80GiB (a note)")
    bandwidth.add_argument("--optimizer", choices=("sgd", "sgd-momentum", "adam"), default="sgd",
                           help="optimizer of the training step (default: sgd, no momentum; measured runs: sgd only "
                                "for now)")
    bandwidth.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                           help="parameter and activation dtype (default: float32; measured runs: float32 only for "
                                "now)")
    bandwidth.add_argument("--plot", metavar="FILE.png", help="also draw a roofline of the layers to FILE.png")
    bandwidth.add_argument("--remeasure-peaks", action="store_true",
                           help="measured runs: calibrate the device's peaks again instead of reusing the ones "
                                "cached by an earlier run (the output says which it did)")
    bandwidth.set_defaults(handler=_cmd_bandwidth)

    report = sub.add_parser(
        "report", help="regenerate the markdown comparison reports (the README's main job)",
        description="Write the comparison reports: counts and predictions computed on the spot, measurements "
                    "read from the committed JSON under reports/data/. Deterministic; reads only the repository.")
    report.add_argument("--out", default="reports", metavar="DIR", help="output folder (default: reports)")
    report.set_defaults(handler=_cmd_report)
    return parser


def _cmd_models(args: argparse.Namespace) -> int:
    from profiler.format.zoo import format_zoo
    from profiler.models.zoo import zoo_listing

    emit(format_zoo(zoo_listing(), args.format), args.output)
    return 0


def _cmd_gpus(args: argparse.Namespace) -> int:
    from profiler.api import gpus
    from profiler.format.gpus import format_gpus

    emit(format_gpus(gpus(), args.format), args.output)
    return 0


def _cmd_count(args: argparse.Namespace) -> int:
    if getattr(args, "compare", None):
        return _cmd_compare(args)
    from profiler.counting import count_configs
    from profiler.format.counts import format_stats

    results = count_configs(args.models, args.size, batch=args.batch, channels=args.channels, classes=args.classes,
                            train=args.train, depth=args.depth, dtype=args.dtype, fast_start=True)
    emit(format_stats(results, args.format, what=args.what), args.output)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from profiler.counting.compare import compare_configs
    from profiler.format.compare import format_comparison

    extra = [flag for flag, given in (("--train", args.train), ("--depth", args.depth),
                                      ("--dtype", args.dtype != "float32")) if given]
    if extra:
        raise ProfilerError(f"--compare fvcore compares float32 inference per layer: drop {' and '.join(extra)} "
                            "(fvcore counts a forward only, at full depth)")
    results = compare_configs(args.models, args.size, batch=args.batch, channels=args.channels, classes=args.classes)
    emit(format_comparison(results, args.format), args.output)
    return 0


def _cmd_memory(args: argparse.Namespace) -> int:
    from profiler.catalogue import parse_bytes
    from profiler.format.memory import format_memory
    from profiler.memory.runner import peak_memory_configs

    _needs_train(args, "--optimizer", args.optimizer != "sgd")
    _needs_train(args, "--checkpoint", args.checkpoint)
    gpu_memory = parse_bytes(args.gpu_memory) if args.gpu_memory else None  # malformed: exit 2 before any work
    measure = True if args.measure else False if args.predict else None
    results = peak_memory_configs(args.models, args.size, batch=args.batch, channels=args.channels,
                                  classes=args.classes, train=args.train, optimizer=args.optimizer, dtype=args.dtype,
                                  checkpoint=args.checkpoint, gpu=args.gpu, gpu_memory=gpu_memory, measure=measure,
                                  device=args.device, max_batch=args.max_batch, trace=args.trace)
    emit(format_memory(results, args.format), args.output)
    predicted = [r for r in results if r.source == Source.PREDICTED]
    if predicted:  # said once it succeeded, so that a user error stays the only line on stderr
        reason = "predicted" if args.predict else "no CUDA device: predicted"
        sys.stderr.write(f"profiler: {reason} peak memory for {predicted[0].device} (nothing ran on a GPU)\n")
    return 0


def _cmd_bandwidth(args: argparse.Namespace) -> int:
    from profiler.api import layer_time_configs
    from profiler.catalogue import parse_bytes
    from profiler.format.bandwidth import format_bandwidth

    _needs_train(args, "--optimizer", args.optimizer != "sgd")
    if args.plot:
        check_writable(args.plot, "--plot")
    gpu_memory = parse_bytes(args.gpu_memory) if args.gpu_memory else None
    results = layer_time_configs(args.models, args.size, batch=args.batch, channels=args.channels,
                                 classes=args.classes, train=args.train, optimizer=args.optimizer, dtype=args.dtype,
                                 gpu=args.gpu, gpu_memory=gpu_memory, predict=True if args.predict else None,
                                 device=args.device, steps=args.steps, warmup=args.warmup,
                                 remeasure_peaks=args.remeasure_peaks, fast_start=True)
    emit(format_bandwidth(results, args.format), args.output)
    if args.plot:
        from profiler.format.plots import roofline_plot

        roofline_plot(results, args.plot)
    if not args.predict and results and results[0].source == Source.PREDICTED:
        sys.stderr.write(f"profiler: no CUDA device here: predicted for {results[0].device_name} (--gpu; nothing ran "
                         "on a GPU); --device cpu measures the CPU instead\n")
    return 0


def _needs_train(args: argparse.Namespace, flag: str, given: bool) -> None:
    """A flag about the training step does nothing without --train: a usage error, not silence."""
    if given and not args.train:
        raise ProfilerError(f"{flag} applies to a training step: add --train, or leave {flag} out")


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    check_writable_folder(args.out)  # fail before even importing the generator and what it pulls in
    from profiler.counting import dynamo_import_skipped
    from profiler.site.generate import generate

    with dynamo_import_skipped():  # the reports compile nothing; the checkpointed steps import dynamo if they need it
        paths = generate(Path(args.out))
    for path in paths:
        sys.stdout.write(f"wrote {path}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, 2 for usage errors, 3 for out of memory)."""
    if os.getcwd() not in sys.path and "" not in sys.path:  # `profiler` finds module:factory as `python -m` does
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "output", None):
            check_writable(args.output)
        return args.handler(args)
    except ProfilerError as err:
        sys.stderr.write(f"profiler: error: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("profiler: interrupted\n")
        return 130


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The program (``python -m profiler``, the ``profiler`` script): :func:`main`, then exit without the
    interpreter's teardown.

    Tearing down torch — C++ static destructors, millions of Python objects, matplotlib — takes 0.5–1 s after the
    work is done, a tenth of ``report``, and does nothing a finished command needs: every file a command writes is
    complete and closed (written under a temporary name, then renamed) before :func:`main` returns, and the output
    streams are flushed here. The normal exit runs instead where something still waits for it: a tracer or profiler
    (coverage, cProfile) writes its results at exit, and another thread that is not a daemon would be waited for."""
    try:
        code = main(argv)
    except SystemExit as done:  # argparse's usage errors, --help, --version
        code = 0 if done.code is None else done.code
        if not isinstance(code, int):  # a message, which Python's own exit would print
            sys.stderr.write(f"{code}\n")
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`), a stream already closed
            pass
    if _watched() or any(t.is_alive() and not t.daemon for t in threading.enumerate()
                         if t is not threading.main_thread()):
        sys.exit(code)
    os._exit(code)


def _watched() -> bool:
    """Whether a tracer or profiler runs (``sys.settrace``/``setprofile``, or a ``sys.monitoring`` tool)."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(6))
