"""Entry point of ``python -m vlaworld.bench`` (see ``vlaworld.bench.cli``)."""

import sys

from vlaworld.bench.cli import main

sys.exit(main())
