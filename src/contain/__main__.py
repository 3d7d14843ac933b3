"""``python -m contain``."""

from contain.cli.main import run

run()
