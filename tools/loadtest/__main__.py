"""``python -m tools.loadtest``: the load and crash test of the review app (``tools.loadtest.harness.main``)."""

import sys

from tools.loadtest.harness import main

if __name__ == "__main__":
    sys.exit(main())
