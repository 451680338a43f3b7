"""``python -m instantid.bench``: the benchmark's command line (``instantid.bench.cli.main``)."""

import sys

from instantid.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
