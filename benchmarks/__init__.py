"""Benchmarks of the tchaikovsky package, outside it: ``python -m benchmarks {training,sampling,data}``.

Modules: ``common`` (device tables, timing, the JSON line), ``training``, ``sampling`` (with the recompute
baselines), ``breakdown`` (per-token cost: flatness along the sequence, cost by component), ``data``, and the CLI
in ``benchmarks.__main__``.
"""
