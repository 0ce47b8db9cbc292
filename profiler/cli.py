"""``python -m profiler``: parse the command line, call the analyzers, format their records. No math here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from profiler.errors import EXIT_USAGE, ProfilerError
from profiler.models import MAX_SIZE
from profiler.report.output import FORMATS, check_writable, emit

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
    from profiler.counting import OTHER_OPS_CONVENTIONS
    from profiler.report.counts import CONVENTION

    rules = "\n".join(f"  - {rule}" for rule in sorted(OTHER_OPS_CONVENTIONS))
    return f"conventions: {CONVENTION}.\n\nother-ops rules:\n{rules}"


def build_parser() -> argparse.ArgumentParser:
    """The full command line: models, params, flops (and the subcommands other modules register)."""
    parser = _Parser(prog=PROG, description="What a CNN costs — parameters, MACs, FLOPs, bytes moved, memory and "
                                            "time — layer by layer.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    models = sub.add_parser("models", help="list the model zoo", description="List the model zoo.")
    _add_output(models)
    models.set_defaults(handler=_cmd_models)

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
        cmd.set_defaults(handler=_cmd_count, what=name)
    return parser


def _cmd_models(args: argparse.Namespace) -> int:
    from profiler.report.zoo import format_zoo
    from profiler.runner import zoo_listing

    emit(format_zoo(zoo_listing(), args.format), args.output)
    return 0


def _cmd_count(args: argparse.Namespace) -> int:
    from profiler.report.counts import format_stats
    from profiler.runner import count_configs

    results = count_configs(args.models, args.size, batch=args.batch, channels=args.channels, classes=args.classes,
                            train=args.train, depth=args.depth, fast_start=True)
    emit(format_stats(results, args.format, what=args.what), args.output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, 2 for usage errors, 3 for out of memory)."""
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
