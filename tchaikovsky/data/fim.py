"""Fill-in-the-middle: the four sentinel tokens, and where their ids sit in a model's vocabulary.

A FIM training window (Bavarian et al. 2022, "PSM" order) is ``[conditions] <fill_prefix> prefix <fill_suffix>
suffix <fill_middle> middle <fill_end>``: the model learns to write the middle once it has seen both sides. The
sentinels are ours, not miditok's: like the condition tokens (``data.conditions``), their ids follow the vocabulary
before them, so ``tokenizer.json`` stays a plain miditok file. The layout of a model's vocabulary is

    [tokenizer ids: 0 .. len(tok) - 1] [condition ids, in a conditioned run] [the 4 sentinels, in a FIM-capable model]

A model has the sentinel rows when it was trained (or initialised from a model trained) with ``fim_rate > 0``:
``Fill.of_model`` tells from its vocabulary size. A model without them grows them on ``init_from``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SENTINELS = ("Fill_prefix", "Fill_suffix", "Fill_middle", "Fill_end")  # miditok-style ``Kind_value`` names


def vocab_base(tok_len: int, conditions=None) -> int:
    """The ids before the sentinels: the tokenizer's, then the condition tokens (``conditions.vocab_size``)."""
    return conditions.vocab_size if conditions is not None else int(tok_len)


@dataclass(frozen=True)
class Fill:
    """The sentinel ids of a FIM-capable vocabulary: ``base`` .. ``base + 3`` (``vocab_base``)."""

    base: int

    @property
    def prefix(self) -> int:
        return self.base

    @property
    def suffix(self) -> int:
        return self.base + 1

    @property
    def middle(self) -> int:
        return self.base + 2

    @property
    def end(self) -> int:
        return self.base + 3

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary with the sentinels."""
        return self.base + len(SENTINELS)

    def ids(self) -> np.ndarray:
        return np.arange(self.base, self.vocab_size, dtype=np.int64)

    def is_sentinel(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.base) & (ids < self.vocab_size)

    @classmethod
    def of_model(cls, model_vocab: int, tok_len: int, conditions=None) -> "Fill | None":
        """The sentinels of a model whose vocabulary has ``model_vocab`` ids, None when it has none (trained without
        FIM); ValueError when the size fits neither layout (a checkpoint of another run)."""
        base = vocab_base(tok_len, conditions)
        if model_vocab == base:
            return None
        if model_vocab == base + len(SENTINELS):
            return cls(base)
        what = f"{tok_len} tokenizer ids" + (f" + {len(conditions.tokens)} condition tokens" if conditions else "")
        raise ValueError(f"the model has {model_vocab} ids; this run's vocabulary has {what} = {base} "
                         f"(or {base + len(SENTINELS)} with the fill-in-the-middle sentinels): the checkpoint "
                         "comes from another run")
