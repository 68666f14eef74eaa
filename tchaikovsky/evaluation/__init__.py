"""Evaluation layer: how generated music compares with real music.

``features`` (per-piece measures, pure functions of notes) < ``compare`` (set comparison: overlapped area, KL)
and ``originality`` (verbatim copies of the training tokens) and ``baselines`` (bigram, random tokens) <
``judge`` (the independent composer / period / instrumentation classifier) < ``plots`` < ``report``
(``evaluate_run`` on a trained run, its summary table, ``python -m tchaikovsky.evaluation``) < ``temperature``
(the sampling temperature chosen on validation seeds and reported on test seeds: ``--temperatures``), ``cli``.
Under the evaluation protocol: ``protocol`` (the validation and test roles), ``intervals`` (rates with n and 95%
intervals, differences), ``views`` (decoded splits, failures kept), ``control`` (the judge's check of conditioned
sampling), ``roll`` + ``scorer`` (the preference reward).
"""
