"""``python -m vlaworld.eval``: see vlaworld.eval.cli."""

import os
import sys

# Before torch loads: spinning OpenMP threads in the policy process starve the simulator workers on
# the same cores (small-model chunks ran 10-100x slower on a busy 2-core machine). A user value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vlaworld.eval.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
