"""Speed and accuracy of ``profiler`` against the tools people use today, measured side by side on the machine at hand.

``python -m benchmarks`` runs every benchmark and writes ``reports/benchmarks.md``; ``python -m benchmarks NAME ...``
runs only those and keeps the other sections of the file as they were. Not part of CI or pytest: timings need minutes
and a quiet machine.

Each benchmark is a module with ``run() -> Section`` (:class:`benchmarks.common.Section`). To add one, write the module
and list it in :data:`BENCHMARKS`; its section takes that place in the report.
"""

#: Benchmark name → module exposing ``run() -> Section``, in report order. Modules are imported only when they run, so
#: one benchmark's peers never slow another down.
BENCHMARKS: dict[str, str] = {
    "counting": "benchmarks.counting",
    "startup": "benchmarks.startup",
    "memory": "benchmarks.memory",
    "timing": "benchmarks.timing",
    "reports": "benchmarks.reports",
}
