"""Training losses and their contract.

A loss is any callable ``loss_fn(model, batch, dtype, pad_id) -> (loss, metrics)`` over ONE micro-batch:

- ``model``: the GPT being trained (fp32 master weights; cast to ``dtype`` for compute inside the loss);
- ``batch``: a pytree of arrays whose leaves share a leading micro-batch axis; for ``next_token_loss`` it is token
  windows ``(B, T+1)``, for a preference loss it could be ``{"chosen": (B, T+1), "rejected": (B, T+1)}``;
- ``dtype``: the compute dtype (``config.compute_dtype``); ``pad_id``: the padding token, never a target;
- returns a scalar fp32 ``loss`` to minimise and a dict of scalar metrics (may be empty), both averaged over the
  micro-batches of a step by ``step.make_train_step`` and logged under their own names.

Frozen inputs (a reference model, a temperature) belong to the loss itself: write it as an ``eqx.Module`` whose
fields hold them. The train step passes the loss into the compiled function as an argument, so its arrays are
inputs of the program (not constants baked into it) and are never donated or updated.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from tchaikovsky.model import GPT, token_losses

LossFn = Callable[..., tuple[Float[Array, ""], dict[str, Float[Array, ""]]]]


def next_token_loss(model: GPT, tokens: Int[Array, "B T1"], dtype, pad_id: int):
    """Mean next-token negative log-likelihood over the non-PAD targets of token windows (B, T+1). No metrics."""
    nll, targets = token_losses(model, tokens, dtype)
    mask = (targets != pad_id).astype(jnp.float32)
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0), {}
