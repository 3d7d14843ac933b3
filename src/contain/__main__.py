"""``python -m contain``."""

import sys

from contain.cli.main import main

sys.exit(main())
