"""``python -m tchaikovsky.evaluation --run-dir R``: evaluate a trained run (see ``report``)."""

from tchaikovsky.evaluation.report import main

main()
