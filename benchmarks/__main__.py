"""``python -m benchmarks {training,sampling,data}``: see ``benchmarks.bench``."""

from benchmarks.bench import main

main()
