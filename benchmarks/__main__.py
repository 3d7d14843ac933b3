"""``python -m benchmarks``: run the side-by-side benchmarks without the contain CLI."""

import sys

from .driver import cli

sys.exit(cli())
