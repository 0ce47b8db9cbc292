"""The generator of ``reports/`` (``python -m profiler report``): collect every record the pages show
(:mod:`.collect`), render the pages and plots in memory, then write them (:mod:`.generate`). The course's
questions, claims and quoted figures are data in :mod:`.content`; the other modules compute and render the answers."""
