"""``python -m vlaworld.eval``: see vlaworld.eval.cli."""

import sys

from vlaworld.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
