"""The optimizer, the train state, and how both are laid out over the devices.

Freezing: ``trainable`` (a filter over the model) picks the arrays that train; the optimizer holds state for those
only, and the step differentiates only them, so the rest stay bit-identical.

Parallelism is one named mesh over every device JAX sees (axis ``"data"``): batches are split along it, parameters
and optimizer state are replicated (data parallel) or, with ``fsdp=True``, split along it too. The same code runs on
1 CPU, 8 simulated CPU devices, a GPU, a TPU v5e-8 and, after ``jax.distributed.initialize()``, several hosts.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from tchaikovsky.config import ModelConfig, TrainConfig
from tchaikovsky.model import GPT, build, decay_mask
from tchaikovsky.training.schedule import lr_schedule


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh (axis ``"data"``) over ``devices``, by default every device of every process."""
    return jax.sharding.Mesh(np.array(jax.devices() if devices is None else list(devices)), ("data",))


def trainable_mask(model: GPT, trainable=None) -> GPT:
    """A pytree of bools shaped like ``model``: True exactly for the floating-point arrays that train.

    ``trainable``: None (every floating-point array), an Equinox filter spec over the model (a pytree of bools, or
    of per-leaf callables, whose structure is a prefix of the model's, as ``eqx.partition`` takes), or a function
    ``model -> filter spec`` (e.g. ``only(lambda m: (m.head, m.embed))``). Raises ValueError when nothing trains."""
    spec = trainable(model) if callable(trainable) and not isinstance(trainable, eqx.Module) else trainable
    kept = eqx.filter(model, True if spec is None else spec)
    mask = jax.tree.map(lambda x, k: k is not None and eqx.is_inexact_array(x), model, kept)
    if not any(jax.tree.leaves(mask)):
        raise ValueError("trainable selects no floating-point array of the model: nothing would train")
    return mask


def only(where) -> Callable[[GPT], GPT]:
    """A ``trainable`` that trains the subtrees ``where(model)`` selects and freezes the rest, e.g.
    ``only(lambda m: (m.head, m.embed))`` (the ``where`` of ``eqx.tree_at``)."""

    def spec(model):
        return eqx.tree_at(where, jax.tree.map(lambda _: False, model), replace_fn=lambda _: True)

    return spec


def scale_rows(vocab_size: int, rows: tuple[int, int], factor: float) -> optax.GradientTransformation:
    """Multiply the updates of the vocabulary rows ``rows[0] .. rows[1] - 1`` of the token embedding and of the
    output layer (weight and bias) by ``factor``: after the optimizer, so those rows learn at ``factor`` times its
    learning rate (Adam's step does not scale with the gradient's size). Other arrays pass unchanged; frozen ones
    (None) stay None. Stateless."""
    scale = np.ones(vocab_size, np.float32)
    scale[rows[0]: rows[1]] = factor

    def update(updates, state, params=None):
        del params
        for where, shape in ((lambda m: m.embed.weight, (-1, 1)), (lambda m: m.head.weight, (-1, 1)),
                             (lambda m: m.head.bias, (-1,))):
            u = where(updates)
            if u is not None:
                updates = eqx.tree_at(where, updates, u * jnp.asarray(scale, u.dtype).reshape(shape))
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(tc: TrainConfig, model: GPT, *, trainable=None, schedule=None,
                   condition_rows: tuple[int, int] | None = None) -> optax.GradientTransformation:
    """AdamW (decay on matrix weights only) after global-norm clipping, on ``schedule`` (default: the straight
    schedule of ``tc``). With ``trainable`` (see ``trainable_mask``) it updates only those arrays: its state and
    updates hold None for the frozen ones, as ``eqx.filter(model, trainable_mask(model, trainable))`` does. With
    ``condition_rows`` (the condition tokens' ids, ``[first, last + 1)``) and ``tc.condition_lr`` != 1, those rows of
    the embedding and the output layer learn at ``tc.condition_lr`` times the rate (``scale_rows``)."""
    # The mask goes in as a function: an eqx.Module is callable, so optax < 0.2.4 (``callable(mask)``) would call the
    # GPT-shaped mask tree itself as the mask function.
    mask = decay_mask(model)
    if trainable is not None:
        mask = eqx.filter(mask, trainable_mask(model, trainable))
    rows = ([scale_rows(model.config.vocab_size, condition_rows, tc.condition_lr)]
            if condition_rows is not None and tc.condition_lr != 1 else [])
    return optax.chain(
        optax.clip_by_global_norm(tc.grad_clip),
        optax.adamw(lr_schedule(tc) if schedule is None else schedule, b1=0.9, b2=tc.beta2,
                    weight_decay=tc.weight_decay, mask=lambda _: mask),
        *rows,
    )


class TrainState(eqx.Module):
    """Everything a step changes; each step returns a new one. ``key`` is raw uint32 key data (serialisable).
    ``trainable`` (static) is None when every floating-point array trains, else ``trainable_mask``'s bools."""

    step: jax.Array
    model: GPT
    opt_state: optax.OptState
    key: jax.Array
    trainable: GPT | None = eqx.field(static=True, default=None)

    @classmethod
    def create(cls, model: GPT, optim: optax.GradientTransformation, seed: int, trainable=None) -> "TrainState":
        """Step 0: ``optim`` (built with the same ``trainable``) initialised on the arrays that train."""
        mask = None if trainable is None else trainable_mask(model, trainable)
        opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array if mask is None else mask))
        key = jax.random.key_data(jax.random.key(seed))
        return cls(jnp.zeros((), jnp.int32), model, opt_state, key, mask)

    def partition(self) -> tuple[GPT, GPT]:
        """``(arrays that train, the rest)`` of the model, as ``eqx.partition`` splits it."""
        return eqx.partition(self.model, eqx.is_inexact_array if self.trainable is None else self.trainable)

    def frozen(self) -> list[str]:
        """Paths (``jax.tree_util.keystr``) of the model's floating-point arrays that do not train."""
        if self.trainable is None:
            return []
        leaves = jax.tree_util.tree_leaves_with_path(self.model)
        return [jax.tree_util.keystr(p) for (p, x), t in zip(leaves, jax.tree.leaves(self.trainable), strict=True)
                if eqx.is_inexact_array(x) and not t]


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


def setup(model_cfg: ModelConfig, tc: TrainConfig, *, seed: int = 0, devices=None, trainable=None,
          schedule=None, condition_rows=None) -> Setup:
    """The mesh over ``devices`` (default: all), a freshly initialised model (from ``seed``), its optimizer (on
    ``schedule``, default the straight schedule of ``tc``) and train state (training what ``trainable`` selects, see
    ``trainable_mask``; default everything; ``condition_rows``: see ``make_optimizer``), and the shardings of the state and of a batch. Raises ValueError when
    the micro-batch does not split evenly over the devices."""
    mesh = make_mesh(devices)
    n_dev = mesh.devices.size
    if tc.micro_batch % n_dev:
        raise ValueError(
            f"batch_size / accum_steps = {tc.micro_batch} must be divisible by the {n_dev} devices "
            f"({mesh.devices.flat[0].platform}); pick batch_size as a multiple of {n_dev * tc.accum_steps}"
        )
    model = build(model_cfg, jax.random.key(seed))
    optim = make_optimizer(tc, model, trainable=trainable, schedule=schedule, condition_rows=condition_rows)
    state = TrainState.create(model, optim, seed, trainable)
    return Setup(mesh, optim, state, state_shardings(state, mesh, tc.fsdp), NamedSharding(mesh, P(None, "data")))
