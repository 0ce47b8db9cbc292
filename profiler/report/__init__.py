"""Records → text: terminal tables and markdown (tabulate), JSON, CSV, plots, and the ``reports/`` generator."""
