"""``python -m instantid.bench``: the benchmark's command line (``instantid.bench.runner.main``)."""

import sys

from instantid.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
