"""How a run's data was made, as one frozen object: the corpus, the tokenizer and the splits.

``DataSpec`` travels from the notebooks' parameters through ``notebook.pipeline`` to the shards, whose index keeps
it (``index.json["data_spec"]``). A rerun compares what it asks for with what its shards were made with, and a
fine-tune compares its data with its parent's, so either can say what differs.

    spec = DataSpec.of(globals())          # a notebook: the names of its parameters cell that DataSpec knows
    spec.differences(DataSpec.of_shards(shards))   # ["vocab_size: 2048 asked, 1024 in the shards", ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    data_dir: str = ""  # "" = the embedded music21 corpus
    max_files: int | None = None  # None: a folder whole, the embedded corpus's default count
    composers: str = "bach"  # embedded corpus only: music21 composers, comma-separated
    vocab_size: int = 2048  # BPE vocabulary (unused with tokenizer_from)
    val_fraction: float = 0.1  # pieces (not held out) for the validation loss
    seed: int = 0  # the train / val shuffle
    transpose_range: int = 0  # training copies transposed by 1..N semitones up and down
    conditions: bool = False  # condition tokens in front of every piece
    judge_fraction: float = 0.0  # works held out by their hash: half validation, half test (data.splits)
    tokenizer_from: str = ""  # a fine-tune: the parent run whose tokenizer (and conditions) the data uses
    # the fields the caller set (``of``): only these are compared, so a notebook without, say, transpose_range
    # does not report the shards' value of it as a difference; not part of the spec itself
    given: frozenset = dataclasses.field(default=frozenset(), compare=False, repr=False)

    @property
    def transpositions(self) -> tuple[int, ...]:
        return tuple(t for t in range(-self.transpose_range, self.transpose_range + 1) if t)

    @classmethod
    def of(cls, namespace: Mapping, **overrides) -> "DataSpec":
        """The spec of the names in ``namespace`` (e.g. a notebook's ``globals()``) that are fields, then
        ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"given"}
        values = {**{k: v for k, v in namespace.items() if k in names}, **overrides}
        return cls(**values, given=frozenset(values))

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "given"}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "DataSpec | None":
        """A spec read back from an index (unknown keys ignored, missing ones default); None for None."""
        if d is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)} - {"given"}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def of_shards(cls, shards) -> "DataSpec | None":
        """The spec a ``data.shards.Shards`` was made with; None for shards made before specs were kept."""
        return cls.from_dict(shards.index.get("data_spec"))

    def differences(self, other: "DataSpec", fields=None, here: str = "asked",
                    there: str = "in the shards") -> list[str]:
        """One line per field (of ``fields``; default: those the caller set, else all) whose value differs from
        ``other``'s."""
        names = fields or sorted(self.given) or [f.name for f in dataclasses.fields(self) if f.name != "given"]
        return [f"{n}: {getattr(self, n)!r} {here}, {getattr(other, n)!r} {there}" for n in names
                if getattr(self, n) != getattr(other, n)]
