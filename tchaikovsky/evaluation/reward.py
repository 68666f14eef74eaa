"""The run's scorer: the in-project reward of preference tuning (``evaluation.scorer``), fitted once per run.

    scorer = run_scorer(run_dir)      # loaded from run_dir/preference/scorer, else fitted there first
    scorer.score(scores, {"composer": "Johann Sebastian Bach"})

It lives where notebook 05 keeps it (``run_dir/preference/scorer``, beside ``scorer_report.json``), so preference
tuning and best-of-N sampling (``generate.rerank``) use one scorer. A run without one gets it fitted here exactly
as preference tuning fits it: on the run's training pieces (decoded like the samples), its copy threshold
calibrated on the ``val`` pieces (of training works), its separation reported on the validation role's held-out
works, which it is never trained or calibrated on. Fitting takes ``ScorerConfig.steps`` steps (600: minutes on a
CPU, reported by a progress bar and the time in the report); afterwards a load is one deserialisation, and within
a process the loaded scorer is kept per run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tchaikovsky import io, progress
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.tokenizer import load_tokenizer
from tchaikovsky.evaluation import protocol
from tchaikovsky.evaluation.scorer import Scorer, ScorerConfig, separation
from tchaikovsky.evaluation.views import decoded_split

MIN_CALIBRATION = 10  # held-out pieces needed to calibrate the scorer's copy threshold (else it is off: 1.01)

_LOADED: dict[tuple, Scorer] = {}  # (scorer folder, its scorer.json's modification time) -> the loaded scorer


def scorer_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "preference" / "scorer"


def run_scorer(run_dir: str | Path, *, steps: int = ScorerConfig.steps, seed: int = 0, train=None, val=None,
               held=None) -> Scorer:
    """The scorer of ``run_dir``: loaded from ``preference/scorer`` (kept in memory for the next call), else
    fitted for ``steps`` steps with ``seed`` on the run's training pieces, saved there with its report
    (``preference/scorer_report.json``: ``fit_s``, ``n_train``, ``copy_threshold``, separation per label).
    ``train`` / ``val`` / ``held`` (``views.Decoded`` of the train split, the val split and the validation role's
    held-out works) spare decoding them again when the caller has them. Raises ValueError for a run whose
    training pieces carry no label (the scorer learns by label: nothing to reward)."""
    path = scorer_dir(run_dir)
    if (path / "scorer.json").is_file():
        key = (str(path.resolve()), (path / "scorer.json").stat().st_mtime_ns)
        if key not in _LOADED:
            _LOADED[key] = Scorer.load(path)
        return _LOADED[key]
    run_dir = Path(run_dir)
    if train is None:
        tok, shards = load_tokenizer(run_dir / "tokenizer.json"), Shards(run_dir / "shards")
        train = decoded_split(shards, tok, "train")
        val = decoded_split(shards, tok, "val") if "val" in shards.splits else []
        r = protocol.role("validation")
        held = decoded_split(shards, tok, r.split) if r.split in shards.splits else []
    return _fit(run_dir, train, val or [], held or [], steps, seed)


def _fit(run_dir: Path, train, val, held, steps: int, seed: int) -> Scorer:
    """Fit, calibrate, report and save the scorer (see ``run_scorer``)."""
    cfg = ScorerConfig(steps=steps)
    labels = {k: [getattr(p, k) for p in train] for k in cfg.labels}
    if load_conditions(run_dir) is None or not any(v for vals in labels.values() for v in vals):
        raise ValueError(f"{run_dir} has no labelled training pieces (no conditions): the scorer rewards closeness "
                         "to real pieces of the asked composer, period and instrumentation, so it needs a run "
                         "fine-tuned with conditions (notebook 03 with init_from)")
    progress.say(f"training the scorer on {len(train)} real pieces ({steps} steps) ...")
    t0 = time.time()
    scores = [p.score for p in train]
    scorer = Scorer.fit(scores, labels, config=cfg, seed=seed)
    scorer.with_reference(scores, labels)
    if len(val) >= MIN_CALIBRATION:  # fewer give no usable quantile: originality's copy flag alone then
        scorer.calibrate_copy_threshold([p.score for p in val])
    report = {"fit_s": time.time() - t0, "n_train": len(scores), "copy_threshold": scorer.info.get("copy_threshold")}
    for label in cfg.labels:  # held-out works of the validation role: the scorer never saw them
        pieces = [p for p in held if getattr(p, label)]
        if pieces:
            report[label] = separation(scorer, [p.score for p in pieces], label, [getattr(p, label) for p in pieces])
    scorer.info["separation"] = report
    path = scorer.save(scorer_dir(run_dir))
    io.atomic_write(run_dir / "preference" / "scorer_report.json", json.dumps(io.jsonable(report), indent=1))
    progress.say(f"scorer trained in {report['fit_s']:.0f} s, saved to {path}")
    _LOADED[(str(path.resolve()), (path / "scorer.json").stat().st_mtime_ns)] = scorer
    return scorer
