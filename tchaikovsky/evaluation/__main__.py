"""``python -m tchaikovsky.evaluation``: see ``cli``."""

from tchaikovsky.evaluation.cli import main

main()
