import sys

from vlaworld.serve.cli import main

sys.exit(main())
