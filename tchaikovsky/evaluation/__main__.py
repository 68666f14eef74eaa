"""``python -m tchaikovsky.evaluation --run-dir R``: evaluate a trained run (see ``report``); with ``--temperatures``,
choose the sampling temperature on validation seeds and report it on test seeds (see ``temperature``)."""

from tchaikovsky.evaluation.report import main

main()
