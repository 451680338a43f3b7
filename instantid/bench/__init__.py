"""The benchmark of the engine: arms, stacks, statistics and reports (``python -m instantid.bench``)."""
