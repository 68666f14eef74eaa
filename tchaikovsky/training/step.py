"""The compiled steps: next-token loss, one optimizer step over a (micro-batched) global batch, and the exact
held-out loss over a whole split."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from tchaikovsky.model import GPT, cast
from tchaikovsky.training.state import TrainState, make_mesh


def token_losses(model: GPT, tokens: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """Per-target negative log-likelihood (nats, fp32). tokens (B, T+1) -> nll (B, T), and targets (B, T)."""
    logits = jax.vmap(cast(model, dtype))(tokens[:, :-1])  # (B, T, V) fp32
    targets = tokens[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], targets


def make_train_step(optim, dtype, pad_id: int, shardings, batch_sharding):
    """One optimizer step over a global batch laid out (accum, micro, T+1): gradients are summed over the
    micro-batches with ``lax.scan`` so the global batch does not depend on device memory."""

    def micro_loss(model, tokens):
        nll, targets = token_losses(model, tokens, dtype)
        mask = (targets != pad_id).astype(jnp.float32)
        return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    @eqx.filter_jit(donate="all")
    def step(state: TrainState, batch: jax.Array):
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        params, static = eqx.partition(state.model, eqx.is_inexact_array)
        grad_fn = jax.value_and_grad(lambda p, t: micro_loss(eqx.combine(p, static), t))

        def accumulate(carry, tokens):
            loss, grads = grad_fn(params, tokens)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, batch)
        k = batch.shape[0]
        loss, grads = loss / k, jax.tree.map(lambda g: g / k, grads)
        updates, opt_state = optim.update(grads, state.opt_state, params)
        model = eqx.combine(optax.apply_updates(params, updates), static)
        new = TrainState(state.step + 1, model, opt_state, state.key)
        new = eqx.filter_shard(new, shardings)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        return new, {"loss": loss, "grad_norm": grad_norm}

    return step


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
