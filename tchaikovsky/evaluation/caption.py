"""Did the model obey? A caption under each generated piece: what was asked, and what the run's judge hears.

    caption(run_dir, {"composer": "bach", "period": "", "instrumentation": ""}, "samples/piece.mid")
    # 'asked: Johann Sebastian Bach, any period, any instrumentation. The judge hears Johann Sebastian Bach (0.71),
    #  Baroque (0.93)'
    note_once(run_dir)   # why there is no judge (no held-out works, ...), the first time per run; else None

The judge is the one every reported figure uses (``evaluation.protocol``'s "test" role): a ``Judge`` of the
composer (and of the period, where the held-out works have two periods) trained on the run's ``judge_test``
works, on the values ``control.judged_values`` keeps, exactly as ``control.controllability(role="test")`` trains
it. It never saw the model, the scorer or the pieces' tokens. It is fitted on the first caption of a run and kept
for the process (decoding the held-out works and fitting both judges: 0.4 s measured on the conditioned test
fixture's two held-out pieces, growing with the held-out works a real run decodes; ``tests/evaluation/
test_caption.py`` prints it), so a caption costs one feature vector and a matrix product. The probability is the judge's ``predict_proba`` of the value it hears best.

A piece the judge cannot hear (it failed to decode, or has no pitched notes) says so. A run without held-out
works (``judge_fraction`` = 0 in 02/03), or whose held-out works have fewer than two composers, gets only what was
asked, and ``note_once`` says why; an unconditioned run gets no caption.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from tchaikovsky.data.conditions import KINDS, UNKNOWN, load_conditions
from tchaikovsky.data.shards import INDEX_FILE, Shards
from tchaikovsky.data.tokenizer import load_tokenizer, try_decode
from tchaikovsky.evaluation import protocol
from tchaikovsky.evaluation.control import judged_values
from tchaikovsky.evaluation.judge import Judge
from tchaikovsky.evaluation.views import decoded_split

ROLE = "test"  # the protocol role whose judge speaks: the one of the reported figures
LABELS = ("composer", "period")  # what the judge is asked; the composer's judge is required, the period's optional
MIN_PIECES = 2  # held-out pieces a value needs to be judged (controllability's default)
_ORDER = ("composer", "period", "instrumentation")  # how the request reads

_RUNS: dict[tuple, "_Run"] = {}
_NOTED: set[str] = set()


class _Run:
    """What captions of one run need, loaded once: conditions, judges by label (or why there are none), the
    tokenizer (when ids are to be decoded)."""

    def __init__(self, run_dir: Path, min_pieces: int):
        self.run_dir = run_dir
        self.cond = load_conditions(run_dir)
        self.judges: dict[str, Judge] = {}
        self.why: str | None = None
        if self.cond is None:
            self.why = f"{run_dir} has no conditions: nothing was asked, so there is nothing to check"
            return
        try:
            shards, r = Shards(run_dir / "shards"), protocol.role(ROLE)
            protocol.require_split(shards, r)
            real = decoded_split(shards, self.tok, r.split)
            for label in LABELS:
                try:
                    values = judged_values(real, self.cond, label, min_pieces)
                except ValueError:
                    if label == LABELS[0]:
                        raise
                    continue  # a period judge needs two periods among the held-out works: none then
                self.judges[label] = Judge.fit([p for p in real if getattr(p, label) in values], label)
        except (ValueError, FileNotFoundError) as e:
            self.why = f"no judge's verdict under the pieces: {e}"

    @functools.cached_property
    def tok(self):
        return load_tokenizer(self.run_dir / "tokenizer.json")


def _run(run_dir: str | Path, min_pieces: int = MIN_PIECES) -> _Run:
    """The run's ``_Run``, kept per process; rebuilt when its shards or conditions change on disk."""
    run_dir = Path(run_dir).resolve()

    def stamp(p: Path):
        return p.stat().st_mtime_ns if p.exists() else None

    key = (str(run_dir), min_pieces, stamp(run_dir / "shards" / INDEX_FILE), stamp(run_dir / "conditions.json"))
    if key not in _RUNS:
        _RUNS[key] = _Run(run_dir, min_pieces)
    return _RUNS[key]


def judges(run_dir: str | Path, *, min_pieces: int = MIN_PIECES) -> dict[str, Judge]:
    """The run's judges by label (``LABELS``; empty when there are none: ``no_judge_reason`` says why), each
    trained on the values of its label with at least ``min_pieces`` held-out pieces (``control.judged_values``).
    Every function here takes ``min_pieces``: 2, as the reported figures use, unless a caller says otherwise."""
    return dict(_run(run_dir, min_pieces).judges)


def no_judge_reason(run_dir: str | Path, *, min_pieces: int = MIN_PIECES) -> str | None:
    """Why the run has no judge to caption with (no conditions, no held-out works, too few composers), or None."""
    return _run(run_dir, min_pieces).why


def note_once(run_dir: str | Path, *, min_pieces: int = MIN_PIECES) -> str | None:
    """``no_judge_reason`` the first time it is asked for a conditioned run in this process; None afterwards, for a
    run with a judge and for an unconditioned run (nothing asked: nothing to explain). A notebook prints it once
    above the captions."""
    run, key = _run(run_dir, min_pieces), str(Path(run_dir).resolve())
    why = run.why if run.cond is not None else None
    if why is None or key in _NOTED:
        return None
    _NOTED.add(key)
    return why


def _score(run: _Run, piece):
    """A Score (or a MIDI path, as the judge takes it) from a Score, a MIDI path or token ids; None when the ids do
    not decode (or for None)."""
    if piece is None or isinstance(piece, (str, os.PathLike)) or hasattr(piece, "note_num"):
        return piece
    return try_decode(run.tok, np.asarray(piece))


def heard(run_dir: str | Path, piece, *, min_pieces: int = MIN_PIECES) -> dict[str, tuple[str, float]] | None:
    """What the run's judges hear in ``piece`` (a symusic Score, a MIDI path, or the token ids ``generate``
    returned): {label: (most probable value, its ``predict_proba``)}; None when the judge cannot hear the piece (it
    failed to decode or has no pitched notes); {} when the run has no judge."""
    run = _run(run_dir, min_pieces)
    if not run.judges:
        return {}
    score = _score(run, piece)
    out = {}
    for label, judge in run.judges.items():
        p = judge.predict_proba([score])[0]
        if np.isnan(p).any():
            return None
        k = int(p.argmax())
        out[label] = (judge.classes[k], float(p[k]))
    return out


def asked_text(cond, asked: dict) -> str:
    """The request as it reads: each value resolved to the run's (``Conditions.resolve``: ValueError for one it
    does not know), "any <kind>" for none; composer first."""
    parts = []
    for kind in _ORDER:
        v = cond.resolve(kind, (asked or {}).get(kind))
        parts.append(f"any {kind}" if v == UNKNOWN else v)
    return ", ".join(parts)


def caption(run_dir: str | Path, asked: dict, piece, *, min_pieces: int = MIN_PIECES) -> str:
    """The line under a generated piece of ``run_dir``: "asked: <request>. The judge hears <composer> (<p>),
    <period> (<p>)" (``asked_text``, ``heard``); "... The judge cannot hear it (no notes)" for a piece without
    pitched notes ("(it did not decode)" for ids that do not); only "asked: ..." without a judge; "" for an
    unconditioned run. ``asked`` is {kind: value}, "" or None for any, as 04's parameters and the panel's dropdowns give it."""
    if unknown := sorted(set(asked or {}) - set(KINDS)):
        raise ValueError(f"asked for {unknown}: the condition kinds are {', '.join(KINDS)}")
    run = _run(run_dir, min_pieces)
    if run.cond is None:
        return ""
    text = f"asked: {asked_text(run.cond, asked)}."
    if not run.judges:
        return text
    score = _score(run, piece)
    verdict = heard(run_dir, score, min_pieces=min_pieces)
    if verdict is None:
        return f"{text} The judge cannot hear it ({'it did not decode' if score is None else 'no notes'})."
    return f"{text} The judge hears " + ", ".join(f"{v} ({p:.2f})" for v, p in verdict.values())


def rerank_text(info: dict | None) -> str:
    """One line on a best-of-N piece (``generate.rerank.Pick.info``): how many candidates, which one was kept
    (0: the plain piece of its seed) and its scorer score; "" for plain sampling."""
    if not info or info.get("n", 1) <= 1:
        return ""
    kept = info["scores"][info["rank"]]
    return (f"best of {info['n']} by the scorer: candidate {info['rank']} kept (score {kept:.3f}; the others "
            + ", ".join(f"{s:.3f}" for i, s in enumerate(info["scores"]) if i != info["rank"]) + ")")


def describe(run_dir: str | Path, asked: dict, cell: dict, *, min_pieces: int = MIN_PIECES) -> str:
    """What notebook 04 and the sampler panel print under a piece (a ``render.samples.write_samples`` dict): the
    ``note_once`` (first time only), the ``caption`` of its MIDI file and its ``rerank_text``, one per line; ""
    when there is nothing to say (an unconditioned run, plain sampling)."""
    lines = [note_once(run_dir, min_pieces=min_pieces),
             caption(run_dir, asked, cell["midi_path"], min_pieces=min_pieces), rerank_text(cell.get("rerank"))]
    return "\n".join(x for x in lines if x)
