"""The judge: an independent classifier of composer, period or instrumentation from decoded notes.

It never sees our tokens, the model or the reward: ``judge_features`` turns the pitched notes of a piece into
musicological features (key-normalised pitch-class histogram, 12x12 pitch-class transitions, interval,
note-length and inter-onset histograms, density, polyphony, range, ...; built from ``evaluation.features``), and
``Judge`` is a standardised multinomial logistic regression on them (numpy, full-batch gradient descent with L2).
Train it on real pieces disjoint by work from everything else (``split_by_work``). Its ceiling is its accuracy on
real pieces of works it never trained on (``cross_validate``: every piece predicted once, by a judge trained
without its work); its rate on generated pieces for each requested label (``Judge.rate``) is the controllability.
Every rate is a ``Rate`` (k of n, Wilson 95% interval); a piece the judge cannot hear (no pitched notes, or None:
a generated piece that failed to decode) is a miss that stays in n. ``save`` / ``load`` keep it in a run
directory as ``judge_<label>.json`` + ``.npz``.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from tchaikovsky import io
from tchaikovsky.evaluation import features as F
from tchaikovsky.evaluation.intervals import Rate

__all__ = ["FEATURE_NAMES", "judge_features", "feature_matrix", "split_by_work", "Judge", "cross_validate"]

_FORMAT = "tchaikovsky-judge/1"
_SCALARS = ("pitch_range", "n_pitch_classes", "pitch_class_entropy", "scale_consistency", "polyphony",
            "note_density", "mean_ioi")
FEATURE_NAMES = (
    [f"pc_hist_{i}" for i in range(12)] + [f"pc_trans_{i}_{j}" for i in range(12) for j in range(12)]
    + [f"interval_{i}" for i in range(-12, 13)] + [f"duration_{x}" for x in F.DURATION_LABELS]
    + [f"ioi_{x}" for x in F.DURATION_LABELS] + list(_SCALARS)
    + ["minor", "key_clarity", "mean_pitch", "pitch_std", "lowest_pitch", "highest_pitch", "notes_per_beat",
       "chord_onsets"]
)


class _NoNotes(ValueError):
    """A piece without pitched notes: the judge cannot hear it."""


def judge_features(score_or_path) -> np.ndarray:
    """The judge's feature vector of one piece (a symusic Score or MIDI path), float64, shape
    (len(FEATURE_NAMES),): pitch classes counted from the estimated tonic (so transposition does not change it),
    undefined values (a piece with one note) as 0. Drum tracks and programs are ignored: only pitched notes."""
    notes = F.Notes(score_or_path)
    if notes.n == 0:
        raise _NoNotes("the judge needs pitched notes; this piece has none")
    tonic, mode, clarity = F.estimate_key(notes)
    pc = np.bincount((notes.pitch - tonic) % 12, weights=np.maximum(notes.duration, 1), minlength=12)
    onsets, counts = np.unique(notes.time, return_counts=True)
    extra = [mode == "minor", clarity, notes.pitch.mean() / 128, notes.pitch.std() / 12, notes.pitch.min() / 128,
             notes.pitch.max() / 128, notes.n * notes.tpq / max(int(notes.end.max() - notes.time.min()), 1),
             np.mean(counts > 1)]
    scalars = [getattr(F, n)(notes) for n in _SCALARS]
    x = np.concatenate([pc / pc.sum(), F.pitch_class_transitions(notes, tonic).ravel(), F.interval_histogram(notes),
                        F.duration_histogram(notes), F.ioi_histogram(notes), scalars, extra]).astype(np.float64)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


@functools.lru_cache(maxsize=4096)
def _file_features(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return judge_features(path)


def _features(piece) -> np.ndarray | None:
    """The features of one piece; None for a piece that is None (or whose ``score`` is) or has no pitched notes."""
    src = None if piece is None else piece.score if hasattr(piece, "score") else getattr(piece, "path", piece)
    if src is None:
        return None
    try:
        if isinstance(src, (str, os.PathLike)):
            st = os.stat(src)
            return _file_features(str(src), st.st_mtime_ns, st.st_size)
        return judge_features(src)
    except _NoNotes:
        return None


def _stack(rows: list) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))


def feature_matrix(pieces: Sequence) -> np.ndarray:
    """(n_pieces, n_features) judge features of pieces (Piece objects, objects with a ``score``, MIDI paths or
    symusic Scores); a file's features are computed once per process (cached by path, modification time and
    size). Raises ValueError for a piece without pitched notes (or None)."""
    rows = [_features(p) for p in pieces]
    if any(r is None for r in rows):
        raise ValueError("the judge needs pitched notes; a piece has none (or is None)")
    return _stack(rows)


def _work_of(piece) -> str:
    return getattr(piece, "work", None) or getattr(piece, "rel_path", None) or str(getattr(piece, "path", piece))


def _grouped(pieces: Sequence, idx, label: str | None) -> tuple[dict, dict]:
    """({work: indices of its pieces among idx}, {``label`` of a work's first piece (None without label): works})."""
    works: dict[str, list[int]] = defaultdict(list)
    for i in idx:
        works[_work_of(pieces[i])].append(i)
    strata: dict = defaultdict(list)
    for w, ii in works.items():
        strata[getattr(pieces[ii[0]], label, None) if label else None].append(w)
    return works, strata


def split_by_work(pieces: Sequence, fraction: float, seed: int = 0, *, stratify: str | None = None):
    """Split pieces into (rest, chosen) so that no work has pieces on both sides: about ``fraction`` of the pieces
    (whole works, shuffled with ``seed``) go to ``chosen``. A piece's work is ``piece.work``, else its rel_path.
    With ``stratify`` (a label such as "composer"), each value of that label (a work counted under its first
    piece's value) gives about ``fraction`` of its pieces, so that every class is seen on both sides when it has
    at least two works. Order within each side follows ``pieces``. Deterministic for a given seed."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    works, strata = _grouped(pieces, range(len(pieces)), stratify)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for key in sorted(strata, key=str):
        names = sorted(strata[key])
        rng.shuffle(names)
        total = sum(len(works[w]) for w in names)
        taken, both = 0, bool(stratify) and len(names) > 1 and 0 < fraction < 1  # keep each class on both sides
        for k, w in enumerate(names):
            if (both and k == len(names) - 1) or (taken >= fraction * total and not (both and k == 0)):
                break
            chosen.update(works[w])
            taken += len(works[w])
    rest = [p for i, p in enumerate(pieces) if i not in chosen]
    return rest, [p for i, p in enumerate(pieces) if i in chosen]


def _confusion(classes: list, truth: Sequence, predicted: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(true x predicted counts of the heard pieces, per-true-class counts of the unheard ones: prediction None)."""
    m, failed = np.zeros((len(classes),) * 2, np.int64), np.zeros(len(classes), np.int64)
    for y, p in zip(truth, predicted):
        if p is None:
            failed[classes.index(y)] += 1
        else:
            m[classes.index(y), classes.index(p)] += 1
    return m, failed


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Judge:
    """A standardised multinomial logistic regression of one label over ``judge_features``.

    Fields: ``label`` (the Piece attribute it predicts), ``classes`` (sorted label values), ``mean`` / ``std``
    (feature standardisation, shape (n_features,)), ``W`` (n_features, n_classes), ``b`` (n_classes,), ``info``
    (JSON-able facts: training pieces and works, hyperparameters, any metrics the caller adds)."""

    def __init__(self, label, classes, mean, std, W, b, info=None):
        self.label, self.classes = label, list(classes)
        self.mean, self.std, self.W, self.b = (np.asarray(a, np.float64) for a in (mean, std, W, b))
        self.info = dict(info or {})

    @classmethod
    def fit(cls, pieces: Sequence, label: str = "composer", *, labels: Sequence[str] | None = None,
            l2: float = 1e-2, steps: int = 2000, lr: float = 0.5) -> "Judge":
        """Train on ``pieces`` (Piece objects, or paths/Scores with ``labels``) whose ``label`` is known (pieces
        with None are left out). ``l2`` weights the penalty 0.5 * l2 * |W|^2 on the mean cross-entropy; ``steps``
        of gradient descent at rate ``lr`` (standardised features make one rate fit all). Raises ValueError with
        fewer than two classes or for a piece without pitched notes."""
        ys = list(labels) if labels is not None else [getattr(p, label) for p in pieces]
        keep = [i for i, y in enumerate(ys) if y is not None]
        works = sorted({getattr(pieces[i], "work", None) or "" for i in keep} - {""})
        return cls._fit(label, feature_matrix([pieces[i] for i in keep]), [ys[i] for i in keep], works,
                        l2=l2, steps=steps, lr=lr)

    @classmethod
    def _fit(cls, label: str, X: np.ndarray, ys: list, works: list, *, l2: float = 1e-2, steps: int = 2000,
             lr: float = 0.5) -> "Judge":
        classes = sorted(set(ys))
        if len(classes) < 2:
            raise ValueError(f"the judge needs at least two values of {label!r} among the pieces, got {classes}")
        y = np.array([classes.index(v) for v in ys])
        mean, std = X.mean(axis=0), X.std(axis=0)
        std = np.where(std > 1e-9, std, 1.0)
        Z = (X - mean) / std
        Y = np.eye(len(classes))[y]
        W, b = np.zeros((X.shape[1], len(classes))), np.zeros(len(classes))
        for _ in range(steps):  # convex: plain gradient descent converges; deterministic
            G = (_softmax(Z @ W + b) - Y) / len(y)
            W -= lr * (Z.T @ G + l2 * W)
            b -= lr * G.sum(axis=0)
        info = {"n_train": len(y), "train_works": works, "l2": l2, "steps": steps, "lr": lr,
                "train_counts": {c: int((y == k).sum()) for k, c in enumerate(classes)}}
        return cls(label, classes, mean, std, W, b, info)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax(((X - self.mean) / self.std) @ self.W + self.b)

    def predict_proba(self, pieces: Sequence) -> np.ndarray:
        """(n_pieces, n_classes) class probabilities, columns in ``classes`` order; a row of NaN for a piece the
        judge cannot hear (None, or no pitched notes)."""
        rows = [_features(p) for p in pieces]
        out = np.full((len(rows), len(self.classes)), np.nan)
        if heard := [i for i, r in enumerate(rows) if r is not None]:
            out[heard] = self._proba(_stack([rows[i] for i in heard]))
        return out

    def spread(self, pieces: Sequence) -> float | None:
        """How varied ``pieces`` are as the judge sees them: the mean distance between two of them in its
        standardised feature space (the features scaled as for its decisions). Pieces it cannot hear are left out;
        None with fewer than two. A set of near-copies spreads little: compare with real pieces of the same label."""
        rows = [r for r in (_features(p) for p in pieces) if r is not None]
        if len(rows) < 2:
            return None
        Z = (_stack(rows) - self.mean) / self.std
        d = np.sqrt(np.maximum(((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1), 0.0))
        return float(d[~np.eye(len(rows), dtype=bool)].mean())

    def predict(self, pieces: Sequence) -> list[str | None]:
        """The most probable class of each piece; None for a piece the judge cannot hear (None: a failed decode,
        or no pitched notes)."""
        return [None if np.isnan(row).any() else self.classes[int(row.argmax())] for row in self.predict_proba(pieces)]

    def _truth(self, pieces, labels) -> tuple[list, list]:
        ys = list(labels) if labels is not None else [None if p is None else getattr(p, self.label) for p in pieces]
        if len(ys) != len(pieces):
            raise ValueError(f"{len(ys)} labels for {len(pieces)} pieces")
        keep = [i for i, y in enumerate(ys) if y is not None]
        return [pieces[i] for i in keep], [ys[i] for i in keep]

    def rate(self, pieces: Sequence, labels: Sequence[str] | None = None) -> Rate:
        """The share of pieces recognised as their label (``labels``, e.g. the labels requested of generated
        pieces, else each piece's own ``label``): a ``Rate`` k/n with its Wilson interval. A piece the judge cannot
        hear (None: a failed decode, or no pitched notes) is a miss, in n; so is a label outside ``classes``.
        Pieces whose label is None (unknown) are left out."""
        pieces, ys = self._truth(pieces, labels)
        return Rate.of([p == y for p, y in zip(self.predict(pieces), ys)])

    def accuracy(self, pieces: Sequence, labels: Sequence[str] | None = None) -> float:
        """``rate(pieces, labels).value``: NaN if no piece has a known label."""
        return self.rate(pieces, labels).value

    def confusion(self, pieces: Sequence, labels: Sequence[str] | None = None, *, with_failed: bool = False):
        """(n_classes, n_classes) int counts of the pieces the judge could hear: row = true (or requested) label,
        column = predicted, in ``classes`` order. With ``with_failed``, returns ``(matrix, failed)``, ``failed``
        (n_classes,) int counts per row of pieces it could not hear (None, or no pitched notes), so that
        ``matrix.sum(1) + failed`` is the number of pieces of each label. Pieces whose label is None are left out;
        a label the judge does not know raises ValueError."""
        pieces, ys = self._truth(pieces, labels)
        if unknown := sorted(set(ys) - set(self.classes)):
            raise ValueError(f"labels {unknown} are not among the judge's classes {self.classes}")
        m, failed = _confusion(self.classes, ys, self.predict(pieces))
        return (m, failed) if with_failed else m

    def save(self, directory: str | Path, name: str | None = None) -> Path:
        """Write ``<name>.json`` (format, label, classes, feature names, info) and ``<name>.npz`` (mean, std, W,
        b) into ``directory``, each atomically; ``name`` defaults to ``judge_<label>``. Returns the json path."""
        d, name = Path(directory), name or f"judge_{self.label}"

        def arrays(f):
            np.savez(f, mean=self.mean, std=self.std, W=self.W, b=self.b)

        io.atomic_write(d / f"{name}.npz", arrays)
        meta = {"format": _FORMAT, "label": self.label, "classes": self.classes, "features": FEATURE_NAMES,
                "info": self.info}
        return io.atomic_write(d / f"{name}.json", json.dumps(meta, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "Judge":
        """A judge saved by ``save``, from its .json path (the .npz beside it). Raises ValueError if the file is
        not a judge or was made with other features."""
        path = Path(path)
        meta = json.loads(path.read_text())
        if meta.get("format") != _FORMAT or meta.get("features") != FEATURE_NAMES:
            raise ValueError(f"{path} is not a judge with this version's features ({_FORMAT})")
        with np.load(path.with_suffix(".npz")) as a:
            return cls(meta["label"], meta["classes"], a["mean"], a["std"], a["W"], a["b"], meta.get("info"))


def cross_validate(pieces: Sequence, label: str, *, folds: int = 5, seed: int = 0, **fit_kwargs) -> dict:
    """The judge's ceiling: its accuracy on real pieces of works it never trained on, by work-grouped,
    label-stratified k-fold cross-validation. A work is ``piece.work``, else its rel_path; a value of ``label``
    found in at least two works is testable. Each testable value deals its works (those whose first piece of a
    testable value has it), shuffled with ``seed``, round-robin into ``folds`` folds (the deal continues from value
    to value), so each fold holds every value that has at least ``folds`` works. Fold f's pieces of testable values
    are predicted by a judge (``Judge.fit(**fit_kwargs)``) trained on the labelled pieces of every work not in fold
    f: each is predicted exactly once, never by a judge that saw its work. A piece of a value found in one work only
    is never predicted (``not_testable``); it is trained on whenever its work is not held out. Pieces whose label
    is None are left out; a piece without pitched notes is a miss (and never trained on).

    Returns a JSON-able dict: ``label``, ``folds``, ``seed``, ``classes`` (sorted values, trained ones included);
    ``accuracy`` (``Rate.to_dict``: rate, lo, hi, k, n over the tested pieces); ``recall`` {value: Rate dict};
    ``majority`` (Rate dict of always guessing ``majority_class``, the most common value among the tested
    pieces: the best constant guess, measured on the same pieces); ``confusion`` (rows true, columns predicted,
    ``classes`` order, heard pieces) and ``failed`` (per row: pieces not heard); ``n_pieces`` / ``n_works`` (tested
    pieces and their works); ``not_testable`` {value: pieces not predicted}; ``unlabelled`` (pieces left out);
    ``fold`` and ``predicted`` (per input piece: the fold that held it out and its predicted class; None where it
    was not tested, and ``predicted`` None also for a tested piece not heard).
    Deterministic for a given seed. Raises ValueError with fewer than two values or no value of two works."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    ys = [None if p is None else getattr(p, label) for p in pieces]
    labelled = [i for i, y in enumerate(ys) if y is not None]
    classes = sorted({ys[i] for i in labelled})
    if len(classes) < 2:
        raise ValueError(f"cross-validating the judge needs at least two values of {label!r}, got {classes}")
    works = _grouped(pieces, labelled, None)[0]
    n_works = Counter(v for idx in works.values() for v in {ys[i] for i in idx})
    testable, strata = {v for v, n in n_works.items() if n > 1}, defaultdict(list)
    if not testable:
        raise ValueError(f"no value of {label!r} has two works to hold one out: {dict(n_works)}")
    for w, idx in works.items():
        if firsts := [ys[i] for i in idx if ys[i] in testable]:
            strata[firsts[0]].append(w)
    rng, work_fold = random.Random(seed), {}
    for v in sorted(strata):
        rng.shuffle(names := sorted(strata[v]))
        for w in names:
            work_fold[w] = len(work_fold) % folds
    held = {i: work_fold.get(_work_of(pieces[i])) for i in labelled}  # the fold that holds its work out
    fold = [held[i] if i in held and ys[i] in testable else None for i in range(len(pieces))]
    not_testable = dict(sorted(Counter(ys[i] for i in labelled if fold[i] is None).items()))
    rows = {i: _features(pieces[i]) for i in labelled}
    predicted: list = [None] * len(pieces)
    for f in range(folds):
        test = [i for i in labelled if fold[i] == f and rows[i] is not None]
        if not test:
            continue
        train = [i for i in labelled if held[i] != f and rows[i] is not None]
        judge = Judge._fit(label, _stack([rows[i] for i in train]), [ys[i] for i in train], [], **fit_kwargs)
        for i, k in zip(test, judge._proba(_stack([rows[i] for i in test])).argmax(axis=1)):
            predicted[i] = judge.classes[int(k)]
    tested = [i for i in labelled if fold[i] is not None]
    counts = {v: sum(ys[i] == v for i in tested) for v in classes}
    majority = max(classes, key=lambda v: counts[v])  # ties: the first in sorted order
    confusion, failed = _confusion(classes, [ys[i] for i in tested], [predicted[i] for i in tested])
    return {"label": label, "folds": folds, "seed": seed, "classes": classes,
            "accuracy": Rate.of([predicted[i] == ys[i] for i in tested]).to_dict(),
            "recall": {v: Rate.of([predicted[i] == v for i in tested if ys[i] == v]).to_dict()
                       for v in classes if counts[v]},
            "majority": Rate(counts[majority], len(tested)).to_dict(), "majority_class": majority,
            "confusion": confusion.tolist(), "failed": failed.tolist(), "n_pieces": len(tested),
            "n_works": len({_work_of(pieces[i]) for i in tested}), "not_testable": not_testable,
            "unlabelled": len(pieces) - len(labelled), "fold": fold, "predicted": predicted}
