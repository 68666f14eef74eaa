"""The judge: an independent classifier of composer, period or instrumentation from decoded notes.

It never sees our tokens, the model or the reward: ``judge_features`` turns the pitched notes of a piece into
musicological features (key-normalised pitch-class histogram, 12x12 pitch-class transitions, interval,
note-length and inter-onset histograms, density, polyphony, range, ...; built from ``evaluation.features``), and
``Judge`` is a standardised multinomial logistic regression on them (numpy, full-batch gradient descent with L2).
Train it on a split of real pieces disjoint by work from everything else (``split_by_work``); its accuracy on
held-out real pieces is the ceiling, its accuracy on generated pieces for each requested label the
controllability. ``save`` / ``load`` keep it in a run directory as ``judge.json`` + ``judge.npz``.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from tchaikovsky import io
from tchaikovsky.evaluation import features as F

__all__ = ["FEATURE_NAMES", "judge_features", "feature_matrix", "split_by_work", "Judge"]

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


def judge_features(score_or_path) -> np.ndarray:
    """The judge's feature vector of one piece (a symusic Score or MIDI path), float64, shape
    (len(FEATURE_NAMES),): pitch classes counted from the estimated tonic (so transposition does not change it),
    undefined values (a piece with one note) as 0. Drum tracks and programs are ignored: only pitched notes."""
    notes = F.Notes(score_or_path)
    if notes.n == 0:
        raise ValueError("the judge needs pitched notes; this piece has none")
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


def feature_matrix(pieces: Sequence) -> np.ndarray:
    """(n_pieces, n_features) judge features of pieces (Piece objects, objects with a ``score``, MIDI paths or
    symusic Scores); a file's
    features are computed once per process (cached by path, modification time and size)."""
    rows = []
    for p in pieces:
        src = p.score if hasattr(p, "score") else getattr(p, "path", p)  # decoded pieces carry their Score
        if isinstance(src, (str, os.PathLike)):
            st = os.stat(src)
            rows.append(_file_features(str(src), st.st_mtime_ns, st.st_size))
        else:
            rows.append(judge_features(src))
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))


def split_by_work(pieces: Sequence, fraction: float, seed: int = 0, *, stratify: str | None = None):
    """Split pieces into (rest, chosen) so that no work has pieces on both sides: about ``fraction`` of the pieces
    (whole works, shuffled with ``seed``) go to ``chosen``. A piece's work is ``piece.work``, else its rel_path.
    With ``stratify`` (a label such as "composer"), each value of that label (a work counted under its first
    piece's value) gives about ``fraction`` of its pieces, so that every class is seen on both sides when it has
    at least two works. Order within each side follows ``pieces``. Deterministic for a given seed."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    works: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pieces):
        works[getattr(p, "work", None) or getattr(p, "rel_path", None) or str(getattr(p, "path", p))].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for w, idx in works.items():
        strata[str(getattr(pieces[idx[0]], stratify, None)) if stratify else ""].append(w)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for key in sorted(strata):
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
        fewer than two classes."""
        ys = list(labels) if labels is not None else [getattr(p, label) for p in pieces]
        keep = [i for i, y in enumerate(ys) if y is not None]
        classes = sorted({ys[i] for i in keep})
        if len(classes) < 2:
            raise ValueError(f"the judge needs at least two values of {label!r} among the pieces, got {classes}")
        X = feature_matrix([pieces[i] for i in keep])
        y = np.array([classes.index(ys[i]) for i in keep])
        mean, std = X.mean(axis=0), X.std(axis=0)
        std = np.where(std > 1e-9, std, 1.0)
        Z = (X - mean) / std
        Y = np.eye(len(classes))[y]
        W, b = np.zeros((X.shape[1], len(classes))), np.zeros(len(classes))
        for _ in range(steps):  # convex: plain gradient descent converges; deterministic
            G = (_softmax(Z @ W + b) - Y) / len(y)
            W -= lr * (Z.T @ G + l2 * W)
            b -= lr * G.sum(axis=0)
        works = sorted({getattr(pieces[i], "work", None) or "" for i in keep} - {""})
        info = {"n_train": len(keep), "train_works": works, "l2": l2, "steps": steps, "lr": lr,
                "train_counts": {c: int((y == k).sum()) for k, c in enumerate(classes)}}
        return cls(label, classes, mean, std, W, b, info)

    def predict_proba(self, pieces: Sequence) -> np.ndarray:
        """(n_pieces, n_classes) class probabilities, columns in ``classes`` order."""
        X = feature_matrix(pieces)
        return _softmax(((X - self.mean) / self.std) @ self.W + self.b)

    def predict(self, pieces: Sequence) -> list[str]:
        """The most probable class of each piece."""
        return [self.classes[k] for k in self.predict_proba(pieces).argmax(axis=1)] if len(pieces) else []

    def _truth(self, pieces, labels) -> tuple[list, list]:
        ys = list(labels) if labels is not None else [getattr(p, self.label) for p in pieces]
        keep = [i for i, y in enumerate(ys) if y is not None]
        return [pieces[i] for i in keep], [ys[i] for i in keep]

    def accuracy(self, pieces: Sequence, labels: Sequence[str] | None = None) -> float:
        """Share of pieces whose predicted class is their label (``labels``, e.g. the labels requested of
        generated pieces, else each piece's own ``label``); pieces with an unknown label are left out. NaN if
        none is left."""
        pieces, ys = self._truth(pieces, labels)
        return float(np.mean([p == y for p, y in zip(self.predict(pieces), ys)])) if ys else float("nan")

    def confusion(self, pieces: Sequence, labels: Sequence[str] | None = None) -> np.ndarray:
        """(n_classes, n_classes) int counts: row = true (or requested) label, column = predicted, in ``classes``
        order. A label the judge does not know raises ValueError."""
        pieces, ys = self._truth(pieces, labels)
        if unknown := sorted(set(ys) - set(self.classes)):
            raise ValueError(f"labels {unknown} are not among the judge's classes {self.classes}")
        m = np.zeros((len(self.classes),) * 2, np.int64)
        for y, p in zip(ys, self.predict(pieces)):
            m[self.classes.index(y), self.classes.index(p)] += 1
        return m

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
