"""Records → text, for every command: terminal tables and markdown (tabulate), JSON, CSV, plots. Nothing is computed
here beyond choosing units: the analyzers' records carry every figure."""
