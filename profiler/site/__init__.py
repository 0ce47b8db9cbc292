"""The generator of ``reports/`` (``python -m profiler report``): collect every record the pages show
(:mod:`.collect`), render the pages and plots in memory, then write them (:mod:`.generate`)."""
