"""Condition tokens: what a piece is (period, composer, instrumentation), as tokens in front of its BOS.

A conditioned piece is ``[Period_x, Composer_y, Instrumentation_z, BOS, ..., EOS]`` (NotaGen's
"period-composer-instrumentation" prompt, one token per condition). miditok knows nothing of these tokens: their ids
continue after the tokenizer's vocabulary, so ``tokenizer.json`` stays a plain miditok file, and the condition
vocabulary is kept beside it as ``conditions.json`` (in the run directory and in its shards). Each kind has an
``unknown`` token (ids ``base``, ``base + 1``, ``base + 2``): a piece whose label is not known gets it, a sampler
asked for "any" composer gives it, and ``condition_dropout`` swaps known conditions for it during training, so one
model serves conditioned and unconditioned sampling.

The vocabulary only grows: ``extended`` appends the values new data brings after the existing ones, so every id a
model has learned keeps its meaning when a fine-tune adds composers (``sources`` says which existing row a new
embedding row starts from). ``combinations`` counts the (period, composer, instrumentation) triples of the training
pieces, to warn about requests the model never saw.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tchaikovsky import io
from tchaikovsky.data.labels import fold

KINDS = ("period", "composer", "instrumentation")
UNKNOWN = "unknown"
FILE = "conditions.json"
_FORMAT = "tchaikovsky-conditions/1"


def token_name(kind: str, value: str) -> str:
    """``("composer", "Johann Sebastian Bach") -> "Composer_Johann Sebastian Bach"`` (miditok's ``Kind_value``)."""
    return f"{kind.capitalize()}_{value}"


def _labels(piece) -> tuple[str, ...]:
    """A piece's (period, composer, instrumentation), UNKNOWN for None (a Piece, or a dict such as a shard entry)."""
    get = piece.get if isinstance(piece, dict) else lambda k: getattr(piece, k, None)
    return tuple(str(get(k) or UNKNOWN) for k in KINDS)


@dataclass(frozen=True)
class Conditions:
    """The condition vocabulary of a run: ``tokens[i]`` (``Kind_value``) has id ``base + i``; ``base`` is the
    tokenizer's ``len(tok)``. ``combinations`` maps "period|composer|instrumentation" to its training pieces."""

    base: int
    tokens: tuple[str, ...] = tuple(token_name(k, UNKNOWN) for k in KINDS)
    combinations: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if list(self.tokens[: len(KINDS)]) != [token_name(k, UNKNOWN) for k in KINDS]:
            raise ValueError("a condition vocabulary starts with the three unknown tokens")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("condition tokens must be unique")

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def build(cls, base: int, pieces: Iterable = ()) -> "Conditions":
        """The vocabulary of ``pieces`` (Piece objects or dicts): the unknown tokens, then each kind's values
        sorted; ``base`` = ``len(tok)``."""
        return cls(base).extended(pieces)

    def extended(self, pieces: Iterable, counted: Iterable | None = None) -> "Conditions":
        """These conditions plus the values of ``pieces`` not yet known, appended (existing ids keep their
        meaning); the combinations of ``counted`` (default: ``pieces``; a run passes its training pieces only, so
        held-out works leave no trace in what sampling is told was seen) are counted in (a fine-tune keeps the
        pretraining's counts and adds its own)."""
        pieces = list(pieces)
        labels = [_labels(p) for p in pieces]
        new = [token_name(k, v) for i, k in enumerate(KINDS) for v in sorted({lab[i] for lab in labels})]
        combos = Counter(self.combinations)
        combos.update("|".join(_labels(p)) for p in (pieces if counted is None else counted))
        return Conditions(self.base, self.tokens + tuple(t for t in new if t not in self.tokens), dict(combos))

    # ------------------------------------------------------------------------------------------------ looking up
    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the tokenizer's ids, then these."""
        return self.base + len(self.tokens)

    def ids(self) -> dict[str, int]:
        return {t: self.base + i for i, t in enumerate(self.tokens)}

    def known(self, kind: str) -> list[str]:
        """The values of ``kind`` this vocabulary has (without ``unknown``), in id order."""
        prefix = token_name(_kind(kind), "")
        return [t[len(prefix):] for t in self.tokens if t.startswith(prefix) and t != token_name(kind, UNKNOWN)]

    def unknown_id(self, kind: str) -> int:
        return self.base + KINDS.index(_kind(kind))

    def encode(self, piece) -> list[int]:
        """The condition ids of a piece (Piece or dict) for the data: one per kind, ``unknown`` for a value this
        vocabulary does not have."""
        ids = self.ids()
        return [ids.get(token_name(k, v), self.unknown_id(k)) for k, v in zip(KINDS, _labels(piece))]

    def resolve(self, kind: str, value: str | None) -> str:
        """The known value a user means: "" or None is "any" (``unknown``); otherwise matched without case or
        accents, by the whole name or, when only one known value has it, the last word ("bach" finds "Johann
        Sebastian Bach"). Raises ValueError listing the known values when nothing (or several) match."""
        kind = _kind(kind)
        if value is None or not str(value).strip() or fold(str(value)) in (UNKNOWN, "any"):
            return UNKNOWN
        known, want = self.known(kind), fold(str(value))
        hits = [v for v in known if fold(v) == want] or [v for v in known if fold(v).split()[-1:] == [want]]
        if len(hits) == 1:
            return hits[0]
        what = "is ambiguous" if hits else "is not known to this model"
        raise ValueError(f"{kind} {value!r} {what}; known {kind} values: {', '.join(known) or '(none)'} "
                         f"(or \"\" for any)")

    def prefix(self, period: str | None = "", composer: str | None = "", instrumentation: str | None = "") -> list[int]:
        """The condition ids a sampler starts from (before BOS); see ``resolve`` for the values it accepts."""
        ids = self.ids()
        values = (period, composer, instrumentation)
        return [ids[token_name(k, self.resolve(k, v))] for k, v in zip(KINDS, values)]

    def unseen(self, period: str | None = "", composer: str | None = "",
               instrumentation: str | None = "") -> str | None:
        """A warning when the requested values were never seen together in training ("" matches anything), else
        None. Such a request is allowed: the model may still follow it, but it has no example of it."""
        want = [self.resolve(k, v) for k, v in zip(KINDS, (period, composer, instrumentation))]
        if all(w == UNKNOWN for w in want) or not self.combinations:
            return None
        for combo in self.combinations:
            have = combo.split("|")
            if all(w == UNKNOWN or w == h for w, h in zip(want, have)):
                return None
        asked = ", ".join(f"{k}={w!r}" for k, w in zip(KINDS, want) if w != UNKNOWN)
        return f"no training piece has {asked} together: the model has not seen this combination"

    def is_condition(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.base) & (ids < self.vocab_size)

    def dropout_targets(self) -> np.ndarray:
        """(vocab_size,) int: every id maps to itself, except a condition id, which maps to its kind's unknown id:
        what ``condition_dropout`` replaces a dropped condition with."""
        out = np.arange(self.vocab_size, dtype=np.int64)
        for i, t in enumerate(self.tokens):
            out[self.base + i] = self.unknown_id(t.split("_", 1)[0].lower())
        return out

    def sources(self, old: "Conditions | None") -> list[int]:
        """For each token of this vocabulary, the id of ``old`` (a pretrained run's conditions; None: it had none)
        whose embedding and output rows it starts from when a model grows to this vocabulary
        (``data.fim.vocab_sources``): the same token in ``old``, else its kind's unknown token (a new composer starts
        as "some composer"), else -1 (the mean of the existing rows). ValueError unless these extend ``old``."""
        if old is None:
            return [-1] * len(self.tokens)
        if old.base != self.base or old.tokens != self.tokens[: len(old.tokens)]:
            raise ValueError("these conditions do not extend the pretrained run's (other ids or order): fine-tune "
                             "with the pretrained run's conditions.json extended, never rebuilt")
        ids = old.ids()
        return [ids.get(t, old.unknown_id(t.split("_", 1)[0].lower())) for t in self.tokens]

    # ------------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "base": self.base, "tokens": list(self.tokens),
                "combinations": dict(sorted(self.combinations.items()))}

    @classmethod
    def from_dict(cls, d: dict) -> "Conditions":
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"not a condition vocabulary ({_FORMAT})")
        return cls(int(d["base"]), tuple(d["tokens"]), dict(d.get("combinations", {})))

    def save(self, path: str | Path) -> Path:
        """Write ``conditions.json`` (``path`` may be a directory), atomically."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / FILE
        return io.atomic_write(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))


def _kind(kind: str) -> str:
    kind = str(kind).lower()
    if kind not in KINDS:
        raise ValueError(f"unknown condition kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return kind


def load_conditions(path: str | Path, tok=None) -> Conditions | None:
    """The conditions saved at ``path`` (a ``conditions.json`` or a directory holding one), None if there is none.
    With ``tok``, checks they were made for this tokenizer's vocabulary."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        return None
    try:
        cond = Conditions.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a condition vocabulary: {e}") from e
    if tok is not None and cond.base != len(tok):
        raise ValueError(f"{path} was made for a tokenizer of {cond.base} ids, this one has {len(tok)}: the "
                         "conditions and tokenizer.json come from different runs")
    return cond
