"""The compiled steps: one optimizer step over a (micro-batched) global batch for any loss (``losses``), and the
exact held-out next-token loss over a whole split."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from tchaikovsky.model import GPT
from tchaikovsky.training.losses import LossFn, next_token_loss, token_losses
from tchaikovsky.training.state import TrainState, make_mesh

# optax >= 0.2.5 names it optax.tree.norm (and deprecates global_norm); pyproject allows optax 0.2.3
global_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


def make_train_step(optim, dtype, pad_id: int, shardings, batch_sharding, *, loss_fn: LossFn = next_token_loss):
    """``step(state, batch) -> (state, metrics)``: one optimizer step of ``optim`` on ``loss_fn`` (the contract is in
    ``tchaikovsky.training.losses``) over a global batch: a pytree whose leaves are laid out (accum, micro, ...), e.g.
    token windows (accum, micro, T+1). Loss, metrics and gradients are averaged over the ``accum`` micro-batches
    with ``lax.scan``, so the global batch does not depend on device memory; only the arrays the state marks
    trainable are differentiated and updated. ``metrics`` holds ``loss``, ``grad_norm`` (global norm of the averaged
    gradient, before clipping) and the loss's own metrics. The state and batch are donated, ``loss_fn`` is not."""

    @eqx.filter_jit(donate="all-except-first")
    def step(loss_fn, state: TrainState, batch):
        batch = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), batch)
        params, static = state.partition()

        def micro_loss(p, b):
            loss, metrics = loss_fn(eqx.combine(p, static), b, dtype, pad_id)
            if {"loss", "grad_norm"} & set(metrics):
                raise ValueError(f"a loss's metrics may not be named 'loss' or 'grad_norm': {sorted(metrics)}")
            return loss, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def accumulate(carry, b):
            return jax.tree.map(jnp.add, carry, grad_fn(params, b)), None

        first = jax.tree.map(lambda x: x[0], batch)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, params, first))
        ((loss, metrics), grads), _ = jax.lax.scan(accumulate, zeros, batch)
        k = jax.tree.leaves(batch)[0].shape[0]
        loss, metrics, grads = jax.tree.map(lambda x: x / k, (loss, metrics, grads))
        updates, opt_state = optim.update(grads, state.opt_state, params)
        model = eqx.combine(optax.apply_updates(params, updates), static)
        new = eqx.tree_at(lambda s: (s.step, s.model, s.opt_state), state, (state.step + 1, model, opt_state))
        new = eqx.filter_shard(new, shardings)
        return new, {"loss": loss, "grad_norm": global_norm(grads), **metrics}

    return functools.partial(step, loss_fn)


def make_eval_step(dtype, pad_id: int):
    @eqx.filter_jit
    def step(model, tokens, mask):
        nll, targets = token_losses(model, tokens, dtype)
        mask = mask * (targets != pad_id)
        return (nll * mask).sum(), mask.sum()

    return step


def evaluate(model: GPT, shards, *, batch_size: int, seq_len: int, dtype=jnp.float32, pad_id: int = 0,
             mesh=None, split: str = "val", eval_step=None) -> dict:
    """Exact held-out loss over the whole split: mean nats per token, and bits per note (tokenizer independent:
    total bits / number of notes, so it compares across vocab sizes and tokenizers)."""
    mesh = mesh or make_mesh()
    eval_step = eval_step or make_eval_step(dtype, pad_id)
    n = mesh.devices.size
    batch_size = max(n, batch_size // n * n)
    sharding = NamedSharding(mesh, P("data"))
    total, count = 0.0, 0.0
    for tokens, mask in shards.eval_batches(batch_size, seq_len, split=split):
        s, c = eval_step(model, jax.device_put(tokens, sharding), jax.device_put(mask, sharding))
        total, count = total + float(s), count + float(c)
    if count == 0:
        return {"eval_loss": float("nan"), "bits_per_note": None}
    notes = shards.n_notes(split)
    return {
        "eval_loss": total / count,
        "bits_per_note": (total / math.log(2) / notes) if notes else None,
    }
