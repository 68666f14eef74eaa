"""Preference optimisation: summed sequence log-probabilities, the DPO-Positive loss, and batches of pairs.

DPO-Positive (DPOP; Pal et al. 2024, "Smaug", as NotaGen's CLaMP-DPO uses it) on a pair of a chosen sequence ``w``
and a rejected one ``l`` under the policy ``pi`` and a frozen reference ``ref`` (the previous round's policy):

    loss = -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l) - lam * max(0, ref_w - pi_w)))

where ``pi_w`` is the SUMMED log-probability of the chosen sequence's generated tokens (not the prompt or condition
tokens, not PAD). ``lam = 0`` is plain DPO (Rafailov et al. 2023), which can lower the chosen sequences' likelihood
while widening the margin; the penalty stops that. The reference log-probabilities are computed once per round
(``PairShards.with_reference``) and travel in the batch, so the reference model is not in memory during a step.

``PairShards`` serves pairs to ``training.loop.train`` with the shards interface (``batch(step, ...)`` a pure
function of (seed, step), so resume is exact); ``DPOPLoss`` is the ``loss_fn``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from tchaikovsky.model import GPT, cast

__all__ = ["sequence_logprobs", "dpop_terms", "DPOPLoss", "PairShards", "reference_logprobs"]


def sequence_logprobs(model: GPT, tokens: Int[Array, "B T1"], mask: Float[Array, "B T"], dtype) -> Float[Array, " B"]:
    """Summed log-probability (nats, fp32) of the masked targets of each sequence: ``tokens[:, 1:]`` given the tokens
    before them, counted where ``mask`` (B, T) is nonzero (weighted by it). The model runs in ``dtype`` one sequence
    at a time under ``vmap``; the log-softmax is fp32."""
    logits = jax.vmap(cast(model, dtype))(tokens[:, :-1])  # (B, T, V) fp32
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, T)
    return (picked * mask.astype(jnp.float32)).sum(axis=-1)


def dpop_terms(pi_w, pi_l, ref_w, ref_l, beta: float, lam: float):
    """(per-pair loss, per-pair margin) of DPOP from summed log-probabilities (arrays of one shape). The margin is
    ``(pi_w - ref_w) - (pi_l - ref_l)`` (the DPO reward margin over beta), without the penalty."""
    margin = (pi_w - ref_w) - (pi_l - ref_l)
    penalty = jnp.maximum(0.0, ref_w - pi_w)
    return -jax.nn.log_sigmoid(beta * (margin - lam * penalty)), margin


class DPOPLoss(eqx.Module):
    """The DPOP loss as a ``LossFn`` (``training.losses``): ``loss(model, batch, dtype, pad_id)``.

    ``batch`` holds ``chosen`` / ``rejected`` int32 (B, T+1) token windows, ``chosen_mask`` / ``rejected_mask``
    float32 (B, T) over their targets (1 on generated tokens only), ``ref_chosen`` / ``ref_rejected`` float32 (B,)
    summed reference log-probabilities under the same masks (``PairShards`` builds such batches). Metrics:
    ``reward_margin`` (mean beta * margin), ``accuracy`` (share of pairs with margin > 0), ``chosen_logp_delta``
    (mean pi_w - ref_w: negative means the chosen pieces got less likely), ``rejected_logp_delta``,
    ``chosen_len`` / ``rejected_len`` (mean masked tokens). ``pad_id`` is unused: the masks already exclude PAD."""

    beta: float = eqx.field(static=True, default=0.1)
    lam: float = eqx.field(static=True, default=10.0)

    def __call__(self, model: GPT, batch: dict, dtype, pad_id: int):
        del pad_id
        pi_w = sequence_logprobs(model, batch["chosen"], batch["chosen_mask"], dtype)
        pi_l = sequence_logprobs(model, batch["rejected"], batch["rejected_mask"], dtype)
        ref_w, ref_l = batch["ref_chosen"], batch["ref_rejected"]
        losses, margin = dpop_terms(pi_w, pi_l, ref_w, ref_l, self.beta, self.lam)
        metrics = {
            "reward_margin": (self.beta * margin).mean(),
            "accuracy": (margin > 0).astype(jnp.float32).mean(),
            "chosen_logp_delta": (pi_w - ref_w).mean(),
            "rejected_logp_delta": (pi_l - ref_l).mean(),
            "chosen_len": batch["chosen_mask"].sum(axis=-1).mean(),
            "rejected_len": batch["rejected_mask"].sum(axis=-1).mean(),
        }
        return losses.mean(), metrics


def _window(ids: Sequence[int], prompt_len: int, width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 (width,), target mask float32 (width - 1,)) of one sequence cut to ``width`` tokens: the mask
    is 1 on targets at positions >= prompt_len (generated tokens) that are not PAD."""
    ids = np.asarray(ids, np.int32)[:width]
    tokens = np.full(width, pad_id, np.int32)
    tokens[: len(ids)] = ids
    pos = np.arange(1, width)
    mask = (pos >= prompt_len) & (pos < len(ids)) & (tokens[1:] != pad_id)
    return tokens, mask.astype(np.float32)


class PairShards:
    """Preference pairs with the interface ``training.loop.train`` reads from shards.

    Arguments:
        chosen, rejected: per pair, the token ids of the whole sequence (condition/prompt tokens, then generated
            ones); sequences longer than the training window are cut to it (sample no more than the model's
            context, so the log-probabilities are those the sampler used).
        prompt_len: per pair (or one int for all), how many leading tokens are the prompt: never targets.
        pad_id: the padding id; ``tokenizer_hash``: the tokenizer's hash, checked against ``init_from``.
        ref: optional (ref_chosen, ref_rejected) float arrays (n_pairs,) for a window of ``ref_seq_len``; set
            by ``with_reference``.

    ``batch(step, batch_size, seq_len, *, seed, process_index, process_count)`` draws ``batch_size`` pairs with
    ``default_rng([seed, step])`` (with replacement) and returns this process's rows as the dict ``DPOPLoss``
    reads. ``eval_batches`` yields the chosen sequences with their masks, so the loop's held-out loss is the
    policy's mean NLL of the chosen generated tokens (``n_notes`` is 0: no bits per note)."""

    def __init__(self, chosen, rejected, prompt_len, *, pad_id: int = 0, tokenizer_hash: str | None = None,
                 ref: tuple[np.ndarray, np.ndarray] | None = None, ref_seq_len: int | None = None):
        if len(chosen) != len(rejected) or not len(chosen):
            raise ValueError(f"need as many chosen as rejected sequences, at least one: {len(chosen)} vs "
                             f"{len(rejected)}")
        self.chosen, self.rejected = [list(c) for c in chosen], [list(r) for r in rejected]
        n = len(self.chosen)
        self.prompt_len = np.broadcast_to(np.asarray(prompt_len, np.int64), (n,)).copy()
        self.pad_id, self.tokenizer_hash = pad_id, tokenizer_hash
        self.ref, self.ref_seq_len = ref, ref_seq_len

    def __len__(self) -> int:
        return len(self.chosen)

    def windows(self, idx, seq_len: int) -> dict[str, np.ndarray]:
        """The tokens and masks of pairs ``idx`` cut to ``seq_len + 1`` tokens (no reference log-probabilities)."""
        out: dict[str, list] = {"chosen": [], "chosen_mask": [], "rejected": [], "rejected_mask": []}
        for i in idx:
            for side, seqs in (("chosen", self.chosen), ("rejected", self.rejected)):
                t, m = _window(seqs[i], int(self.prompt_len[i]), seq_len + 1, self.pad_id)
                out[side].append(t)
                out[f"{side}_mask"].append(m)
        return {k: np.stack(v) for k, v in out.items()}

    def with_reference(self, model: GPT, seq_len: int, *, dtype=jnp.float32, batch_size: int = 16) -> "PairShards":
        """A copy holding the reference log-probabilities of every pair under ``model`` (this round's frozen
        reference) for windows of ``seq_len + 1`` tokens; ``batch`` then serves them."""
        ref_w, ref_l = reference_logprobs(model, self, seq_len, dtype=dtype, batch_size=batch_size)
        return PairShards(self.chosen, self.rejected, self.prompt_len, pad_id=self.pad_id,
                          tokenizer_hash=self.tokenizer_hash, ref=(ref_w, ref_l), ref_seq_len=seq_len)

    def batch(self, step: int, batch_size: int, seq_len: int, *, seed: int = 0, split: str = "train",
              process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        if self.ref is None or self.ref_seq_len != seq_len:
            raise ValueError(f"PairShards needs reference log-probabilities for seq_len={seq_len}: call "
                             f"with_reference(reference_model, {seq_len}) first (have {self.ref_seq_len})")
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
        rows = batch_size // process_count
        idx = np.random.default_rng([seed, step]).integers(0, len(self), size=batch_size)
        idx = idx[process_index * rows: (process_index + 1) * rows]
        out = self.windows(idx, seq_len)
        out["ref_chosen"] = self.ref[0][idx].astype(np.float32)
        out["ref_rejected"] = self.ref[1][idx].astype(np.float32)
        return out

    def eval_batches(self, batch_size: int, seq_len: int, *, split: str = "val"
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every chosen sequence once (each pair's, repeats included), as (tokens (B, T+1), mask (B, T)); the last
        batch is padded with all-PAD rows of mask 0."""
        for start in range(0, len(self), batch_size):
            idx = list(range(start, min(start + batch_size, len(self))))
            w = self.windows(idx, seq_len)
            tokens, mask = w["chosen"], w["chosen_mask"]
            if len(idx) < batch_size:
                extra = batch_size - len(idx)
                tokens = np.concatenate([tokens, np.full((extra, tokens.shape[1]), self.pad_id, np.int32)])
                mask = np.concatenate([mask, np.zeros((extra, mask.shape[1]), np.float32)])
            yield tokens, mask

    def n_notes(self, split: str = "val") -> int:
        return 0


def reference_logprobs(model: GPT, pairs: PairShards, seq_len: int, *, dtype=jnp.float32,
                       batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(ref_chosen, ref_rejected) float32 (n_pairs,): ``sequence_logprobs`` of every pair's windows of
    ``seq_len + 1`` tokens under ``model``, in batches of ``batch_size`` (the last padded, so one compiled
    shape)."""
    fn = eqx.filter_jit(sequence_logprobs)
    out_w, out_l = [], []
    n = len(pairs)
    for start in range(0, n, batch_size):
        idx = [min(i, n - 1) for i in range(start, start + batch_size)]  # pad by repeating the last pair
        w = pairs.windows(idx, seq_len)
        k = min(batch_size, n - start)
        out_w.append(np.asarray(fn(model, w["chosen"], w["chosen_mask"], dtype))[:k])
        out_l.append(np.asarray(fn(model, w["rejected"], w["rejected_mask"], dtype))[:k])
    return np.concatenate(out_w).astype(np.float32), np.concatenate(out_l).astype(np.float32)
