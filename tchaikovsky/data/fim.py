"""Fill-in-the-middle: the four sentinel tokens, and where their ids sit in a model's vocabulary.

A FIM training window (Bavarian et al. 2022) is ``[conditions] <fill_prefix> prefix <fill_suffix> suffix
<fill_middle> middle <fill_end>`` ("PSM" order) or ``[conditions] <fill_suffix> suffix <fill_prefix> prefix
<fill_middle> middle <fill_end>`` ("SPM": the middle goes on from the prefix as it would left to right, the suffix
read before both): the model learns to write the middle once it has seen both sides. The
sentinels are ours, not miditok's: like the condition tokens (``data.conditions``), their ids follow the vocabulary
before them, so ``tokenizer.json`` stays a plain miditok file. The layout of a model's vocabulary is

    [tokenizer ids: 0 .. len(tok) - 1] [condition ids, in a conditioned run] [the 4 sentinels, in a FIM-capable model]

A model has the sentinel rows when it was trained (or initialised from a model trained) with ``fim_rate > 0``:
``Fill.of_model`` tells from its vocabulary size. A model without them grows them on ``init_from``
(``vocab_sources`` says which old row each id of a new vocabulary starts from, by name).

Training windows (``Shards.batch(fim_rate=..., fim_spm=...)``): ``fim_rows`` reorders a share of them with ``psm``,
which cuts a window's first piece at two bar boundaries, so the middle is whole bars, and puts a share ``fim_spm`` of
those in SPM order; ``reading_order`` undoes either. ``ORDERS`` names the two; ``order_of`` says which a run's
sampling uses (``fim_spm`` > 0: SPM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tchaikovsky.data.tokenizer import base_tokens

SENTINELS = ("Fill_prefix", "Fill_suffix", "Fill_middle", "Fill_end")  # miditok-style ``Kind_value`` names
ORDERS = ("psm", "spm")  # prefix-suffix-middle, suffix-prefix-middle


def order_of(meta: dict | None) -> str:
    """The order a model's infilling prompts take, from its checkpoint metadata (``train_config``): "spm" when it was
    trained with SPM windows (``fim_spm`` > 0; it learned PSM too when ``fim_spm`` < 1), else "psm"."""
    return "spm" if float(((meta or {}).get("train_config") or {}).get("fim_spm") or 0) > 0 else "psm"


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: the fill-in-the-middle orders are {', '.join(ORDERS)}")
    return order


def arrange(front, prefix, suffix, fill: "Fill", order: str = "psm") -> np.ndarray:
    """``front <Fill_prefix> prefix <Fill_suffix> suffix <Fill_middle>`` ("psm") or ``front <Fill_suffix> suffix
    <Fill_prefix> prefix <Fill_middle>`` ("spm"): what precedes a middle, in training windows and prompts alike."""
    sides = [[fill.prefix], prefix, [fill.suffix], suffix]
    if check_order(order) == "spm":
        sides = sides[2:] + sides[:2]
    return np.concatenate([np.asarray(front, np.int64), *(np.asarray(s, np.int64) for s in sides),
                           [fill.middle]])


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


def opens_bar(tok, size: int | None = None) -> np.ndarray:
    """(size,) bool, ``size`` defaulting to ``len(tok)``: the ids whose first base token is a ``Bar``
    (``tokenizer.base_tokens``), where a bar begins (BPE never merges across a bar line). Ids from ``len(tok)`` on
    (condition tokens) are False."""
    out = np.zeros(len(tok) if size is None else size, bool)
    out[: len(tok)] = [bool(run) and run[0].split("_", 1)[0] == "Bar" for run in base_tokens(tok)]
    return out


def cut_points(src, n: int, opens_bar: np.ndarray, eos: int) -> np.ndarray:
    """The positions 0..n of ``src`` where a FIM window may be cut: bar boundaries of its first piece, that is the
    tokens that open a bar and the piece's EOS (its end), up to that EOS. Position ``n`` counts when ``src[n]``
    (the first token past the window's source) opens a bar or is the EOS."""
    src = np.asarray(src)[: n + 1]
    ends = np.flatnonzero(src == eos)
    last = int(ends[0]) if ends.size else len(src) - 1
    return np.flatnonzero(opens_bar[src[: last + 1]] | (src[: last + 1] == eos))


def psm(row, u, *, pinned: int, opens_bar: np.ndarray, eos: int, fill: Fill, spm: bool = False) -> np.ndarray:
    """A training window (W ids) reordered for fill-in-the-middle: its first ``pinned`` ids (the condition tokens)
    stay first, then ``<Fill_prefix> prefix <Fill_suffix> suffix <Fill_middle> middle <Fill_end> rest`` (with
    ``spm``: ``<Fill_suffix> suffix <Fill_prefix> prefix <Fill_middle> ...``), where
    prefix, middle, suffix and rest are the next ``W - pinned - 4`` ids (the source) cut at three points i < j <= k:
    i and j two of its ``cut_points`` (chosen uniformly among the pairs from ``u[0]``, ``u[1]``), k, where the
    suffix ends, a cut point from j on or the source's end (uniformly, from ``u[2]``). The rest, the source after
    k, follows ``<Fill_end>`` left to right: so ``<Fill_end>`` lands anywhere in the window, after the middle's last
    bar, and the model learns to end a middle where its bars end, not where a window ends (Bavarian et al. apply
    FIM per document before packing for the same reason). The result holds exactly the source's ids and the 4
    sentinels (length W); the middle is one or more whole bars; prefix, suffix or rest may be empty. The row comes
    back unchanged when its source has fewer than two cut points."""
    row = np.asarray(row)
    n = len(row) - pinned - len(SENTINELS)
    src = row[pinned:]
    cuts = cut_points(src, n, opens_bar, eos)
    if n < 1 or len(cuts) < 2:
        return row
    a, b = int(u[0] * len(cuts)), int(u[1] * (len(cuts) - 1))
    i, j = sorted((cuts[a], cuts[b + (b >= a)]))  # two distinct cut points, each pair equally likely
    ends = np.append(cuts[(cuts >= j) & (cuts < n)], n)  # where the suffix may end: a cut point, or the source's end
    k = int(ends[min(int(u[2] * len(ends)), len(ends) - 1)]) if len(u) > 2 else n
    parts = (arrange(row[:pinned], src[:i], src[j:k], fill, "spm" if spm else "psm"), src[i:j], [fill.end], src[k:n])
    return np.concatenate(parts).astype(row.dtype)


def reading_order(window, fill: Fill) -> np.ndarray:
    """The ids of a ``psm`` window (either order) in reading order, sentinels dropped: what comes before the first
    sentinel, then prefix, middle, suffix, and what follows ``<Fill_end>``. ValueError unless the window holds each
    sentinel once, in PSM or SPM order."""
    window = np.asarray(window)
    p, s, m, e = (np.flatnonzero(window == t) for t in (fill.prefix, fill.suffix, fill.middle, fill.end))
    if any(len(a) != 1 for a in (p, s, m, e)) or not (max(p[0], s[0]) < m[0] < e[0] and p[0] != s[0]):
        raise ValueError(f"not a fill-in-the-middle window: it must hold {', '.join(SENTINELS)} once each, in "
                         "PSM or SPM order")
    p, s, m, e = int(p[0]), int(s[0]), int(m[0]), int(e[0])
    prefix, suffix = (window[p + 1 : s], window[s + 1 : m]) if p < s else (window[p + 1 : m], window[s + 1 : p])
    return np.concatenate([window[: min(p, s)], prefix, window[m + 1 : e], suffix, window[e + 1 :]])


def draws(seed: int, step: int, batch_size: int) -> np.ndarray:
    """(batch_size, 5) uniforms for ``fim_rows``, a pure function of (seed, step): whether a row is reordered and
    its cuts (``default_rng([seed, step, 2])``), and its order (``default_rng([seed, step, 4])``, apart, so that a
    run's PSM windows do not change with ``fim_spm``)."""
    return np.column_stack([np.random.default_rng([seed, step, 2]).random((batch_size, 4)),
                            np.random.default_rng([seed, step, 4]).random(batch_size)])


def fim_rows(rows: np.ndarray, draws: np.ndarray, rate: float, *, fill: Fill | None, opens_bar: np.ndarray,
             eos: int, conditions=None, spm: float = 0.0) -> np.ndarray:
    """Training windows ``rows`` (R, W) with those whose ``draws[r, 0] < rate`` reordered by ``psm`` (cuts from
    ``draws[r, 1:4]``), in SPM order where also ``draws[r, 4] < spm`` (``draws``: (R, 5) uniforms, ``draws``).
    ``opens_bar`` covers the shards' vocabulary, so the sentinels' ``fill.base`` must be its length. Each row's
    leading condition tokens stay first."""
    for name, value in (("fim_rate", rate), ("fim_spm", spm)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value!r} must be in [0, 1]")
    if rate > 0 and (fill is None or fill.base != len(opens_bar)):
        raise ValueError(f"fim_rate > 0 needs the model's sentinels after the shards' {len(opens_bar)} ids: "
                         f"fill=Fill({len(opens_bar)}), got {fill}")
    out = rows.copy()
    for r in np.flatnonzero(draws[:, 0] < rate):
        pinned = int(np.argmin(np.append(conditions.is_condition(rows[r]), False))) if conditions else 0
        out[r] = psm(rows[r], draws[r, 1:4], pinned=pinned, opens_bar=opens_bar, eos=eos, fill=fill,
                     spm=bool(draws[r, 4] < spm))
    return out


def vocab_sources(tok_len: int, conditions, fill: Fill | None, old_conditions, old_fill: Fill | None) -> np.ndarray:
    """For each id of a model's new vocabulary (``[tokenizer][conditions][sentinels]``; None: a part it lacks), the
    id of the old vocabulary (the same tokenizer, ``old_conditions``, ``old_fill``) its rows start from, -1 for the
    mean row (``model.remap_vocab``). By name: tokenizer ids map to themselves, condition tokens as
    ``Conditions.sources`` says, the sentinels to the old sentinels. ValueError when the new vocabulary would lose the
    old one's condition tokens or sentinels (a FIM-capable model keeps them, whatever its later fim_rate)."""
    if old_conditions is not None and conditions is None:
        raise ValueError("the model to start from has condition tokens, these shards have none: fine-tune it on "
                         "conditioned data (its conditions.json extended)")
    if old_fill is not None and fill is None:
        raise ValueError("the model to start from has the fill-in-the-middle sentinels, and a model never loses them: "
                         f"give it {len(SENTINELS)} more ids (notebook.pipeline.run_preset does)")
    out = list(range(int(tok_len))) + (conditions.sources(old_conditions) if conditions is not None else [])
    if fill is not None:
        # new sentinels mean nothing the old model knows: the mean row makes each start as no token in particular
        # (its logit the average one, so unlikely), and leaves every left-to-right prediction as it was
        out += old_fill.ids().tolist() if old_fill is not None else [-1] * len(SENTINELS)
    return np.asarray(out, np.int64)
