"""The optimizer, the train state, and how both are laid out over the devices.

Parallelism is one named mesh over every device JAX sees (axis ``"data"``): batches are split along it, parameters
and optimizer state are replicated (data parallel) or, with ``fsdp=True``, split along it too. The same code runs on
1 CPU, 8 simulated CPU devices, a GPU, a TPU v5e-8 and, after ``jax.distributed.initialize()``, several hosts.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from tchaikovsky.config import ModelConfig, TrainConfig
from tchaikovsky.model import GPT, build, decay_mask


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh (axis ``"data"``) over ``devices``, by default every device of every process."""
    return jax.sharding.Mesh(np.array(jax.devices() if devices is None else list(devices)), ("data",))


def lr_schedule(tc: TrainConfig) -> optax.Schedule:
    warmup = max(1, min(tc.warmup_steps, tc.max_steps - 1))
    return optax.warmup_cosine_decay_schedule(
        0.0, tc.learning_rate, warmup, max(tc.max_steps, warmup + 1), tc.learning_rate * tc.min_lr_ratio
    )


def make_optimizer(tc: TrainConfig, model: GPT) -> optax.GradientTransformation:
    """AdamW (decay on matrix weights only) after global-norm clipping, on a warmup-cosine schedule."""
    # The mask goes in as a function: an eqx.Module is callable, so optax < 0.2.4 (``callable(mask)``) would call the
    # GPT-shaped mask tree itself as the mask function.
    mask = decay_mask(model)
    return optax.chain(
        optax.clip_by_global_norm(tc.grad_clip),
        optax.adamw(lr_schedule(tc), b1=0.9, b2=tc.beta2, weight_decay=tc.weight_decay, mask=lambda _: mask),
    )


class TrainState(eqx.Module):
    """Everything a step changes; each step returns a new one. ``key`` is raw uint32 key data (serialisable)."""

    step: jax.Array
    model: GPT
    opt_state: optax.OptState
    key: jax.Array

    @classmethod
    def create(cls, model: GPT, optim: optax.GradientTransformation, seed: int) -> "TrainState":
        opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array))
        key = jax.random.key_data(jax.random.key(seed))
        return cls(jnp.zeros((), jnp.int32), model, opt_state, key)


def _spec(shape: tuple[int, ...], n: int, fsdp: bool) -> P:
    """FSDP: split the largest axis divisible by the device count (ties: the last); otherwise replicate."""
    if not fsdp or n == 1 or not shape:
        return P()
    candidates = [i for i, s in enumerate(shape) if s % n == 0]
    if not candidates:
        return P()
    axis = max(candidates, key=lambda i: (shape[i], i))
    return P(*[("data" if i == axis else None) for i in range(len(shape))])


def state_shardings(state, mesh, fsdp: bool):
    n = mesh.devices.size
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _spec(x.shape, n, fsdp)) if eqx.is_array(x) else None, state
    )


class Setup(NamedTuple):
    """What a training run (or a benchmark of its step) starts from; ``state`` is not yet placed on the mesh."""

    mesh: jax.sharding.Mesh
    optim: optax.GradientTransformation
    state: TrainState
    shardings: TrainState  # a NamedSharding per array of the state
    batch_sharding: NamedSharding  # batches are (accum, micro_batch, T+1), split along micro_batch


def setup(model_cfg: ModelConfig, tc: TrainConfig, *, seed: int = 0, devices=None) -> Setup:
    """The mesh over ``devices`` (default: all), a freshly initialised model (from ``seed``), its optimizer and
    train state, and the shardings of the state and of a batch. Raises ValueError when the micro-batch does not
    split evenly over the devices."""
    mesh = make_mesh(devices)
    n_dev = mesh.devices.size
    if tc.micro_batch % n_dev:
        raise ValueError(
            f"batch_size / accum_steps = {tc.micro_batch} must be divisible by the {n_dev} devices "
            f"({mesh.devices.flat[0].platform}); pick batch_size as a multiple of {n_dev * tc.accum_steps}"
        )
    model = build(model_cfg, jax.random.key(seed))
    optim = make_optimizer(tc, model)
    state = TrainState.create(model, optim, seed)
    return Setup(mesh, optim, state, state_shardings(state, mesh, tc.fsdp), NamedSharding(mesh, P(None, "data")))
