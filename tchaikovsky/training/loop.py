"""The training loop: a restore-or-init step (``training.restore``), then a plain step loop whose log steps hand
one history record to a list of hooks: evaluation, the history file, the caller's hooks (wandb, samples), the
checkpoints (``training.hooks``).

Writes ``run_dir/history.jsonl`` (one JSON object per logged step) and ``run_dir/checkpoints/``. Batches are a pure
function of (seed, step), so a resumed run continues exactly as an uninterrupted one would. A run starts from fresh
weights or from another run's (``init_from``), trains all or part of the model (``trainable``) on any loss
(``loss_fn``), and calls ``Hook``s (wandb, samples) at its log steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from tchaikovsky import progress
from tchaikovsky.config import ModelConfig, TrainConfig, compute_dtype
from tchaikovsky.data.fim import Fill
from tchaikovsky.training.hooks import Checkpoints, History, Hook, evaluation
from tchaikovsky.training.losses import LossFn, next_token_loss
from tchaikovsky.training.restore import restore_or_init
from tchaikovsky.training.state import TrainState
from tchaikovsky.training.step import make_train_step


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    history: list[dict]
    stopped: str  # "max_steps" | "max_minutes" | "until_step"
    checkpoint: Path | None


def train(
    run_dir: str | Path,
    model_cfg: ModelConfig,
    tc: TrainConfig,
    shards,
    *,
    seed: int = 0,
    resume: bool = True,
    init_from: str | Path | None = None,
    trainable=None,
    loss_fn: LossFn = next_token_loss,
    hooks: Sequence[Hook] = (),
    max_minutes: float | None = None,
    until_step: int | None = None,
    pad_id: int | None = None,
    extra_meta: dict | None = None,
    devices=None,
) -> TrainResult:
    """Train (or continue training) the model described by ``model_cfg`` on ``shards``; see the module docstring.

    Arguments:
        shards: the data: ``batch(step, batch_size, seq_len, *, seed, process_index, process_count)`` gives this
            process's rows of a global batch (an array, or a pytree of arrays, with a leading row axis) for
            ``loss_fn``; ``eval_batches``/``n_notes`` give the held-out next-token loss; ``tokenizer_hash``.
        resume: continue an existing checkpoint exactly (same losses as an uninterrupted run); with False an existing
            checkpoint is an error rather than silently overwritten. Resuming with other schedule settings (a larger
            ``max_steps``: training longer) re-plans the learning rate from the current step, continuously (see
            ``training.schedule``).
        init_from: a fresh run takes its weights from another run (a run directory, its ``checkpoints/``, a
            ``step_*`` directory or a ``model.eqx`` file) of the same model configuration and tokenizer; the
            optimizer, schedule, step and RNG start fresh. Ignored once the run has its own checkpoint. When the
            shards' condition vocabulary extends the pretrained one, or the fill-in-the-middle sentinels join, the
            embedding and output rows grow with it (``restore.grow_vocab``). ``model_cfg.vocab_size`` must be
            ``restore.model_vocab``'s (with the sentinels when ``tc.fim_rate > 0`` or the model continued has them).
        trainable: which arrays train (``state.trainable_mask``; default all); the others never change. A resumed
            run must train the same ones.
        loss_fn: the loss (contract in ``training.losses``); its metrics join each history record.
        hooks: ``Hook``s called with each history record and the current state (wandb, samples).
        max_minutes, until_step: end the run early, with a final checkpoint.

    A non-finite loss or gradient stops the run with FloatingPointError and leaves the last good checkpoint in place.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pad_id = getattr(shards, "pad_id", 0) if pad_id is None else pad_id
    dtype = compute_dtype(tc.compute_dtype)
    start = restore_or_init(run_dir, model_cfg, tc, shards, seed=seed, resume=resume, init_from=init_from,
                            trainable=trainable, devices=devices)
    mesh, optim, state, shardings, batch_sharding = start.setup
    history = History(run_dir / "history.jsonl", start.history)
    history.rewrite()  # on resume, drops the records logged after the checkpoint
    meta = {
        "model_config": model_cfg.to_dict(),
        "train_config": tc.to_dict(),
        "tokenizer_hash": shards.tokenizer_hash,
        "seed": seed,
        "lr_plans": start.plans,
        "frozen": state.frozen(),
        **({"init_from": start.origin} if start.origin else {}),
        **(extra_meta or {}),
    }
    saver = Checkpoints(run_dir / "checkpoints", meta, keep=tc.keep_checkpoints, last=start.resumed)
    # in this order: evaluation adds its numbers to the record; then it is written, seen by the caller's hooks,
    # and saved with the checkpoint
    on_log = [evaluation(shards, tc, dtype, pad_id, mesh), Hook(history.append), *hooks,
             Hook(saver.save, every=tc.checkpoint_every, at_end=True)]
    step_fn = make_train_step(optim, dtype, pad_id, shardings, batch_sharding, loss_fn=loss_fn)
    fill = Fill(shards.vocab_size) if tc.fim_rate else None  # the model has them after the shards' ids (restore)
    batches = functools.partial(global_batch, shards, tc, seed=seed, sharding=batch_sharding, fill=fill)

    first, end = int(state.step), tc.max_steps if until_step is None else min(until_step, tc.max_steps)
    deadline = Deadline(None if max_minutes is None else time.time() + 60.0 * max_minutes, tc.log_every)
    with progress.bar(total=end, initial=first, desc="train", dynamic_ncols=True) as bar:
        meter = Meter(tc.batch_size * tc.seq_len, start.schedule, bar, saver.ckpt_dir)
        state, out_of_time = run_steps(state, range(first, end), step_fn, batches, on_log, meter, deadline,
                                       log_every=tc.log_every, checkpoint_every=tc.checkpoint_every)
    stopped = ("max_minutes" if out_of_time else
               "max_steps" if until_step is None or until_step >= tc.max_steps else "until_step")
    return TrainResult(state, history.rows, stopped, saver.last)


def run_steps(state: TrainState, steps: range, step_fn, batches: Callable[[int], object], hooks: Sequence[Hook],
              meter: Meter, deadline: Deadline, *, log_every: int, checkpoint_every: int) -> tuple[TrainState, bool]:
    """Apply ``step_fn(state, batches(step))`` for each step of ``steps``. After a step that logs (a multiple of
    ``log_every`` or ``checkpoint_every``, the last of ``steps``, or the one after which ``deadline`` has passed),
    ``meter`` makes one history record of the steps since the previous one and each hook is called with it, in
    order. Returns the final state and whether the deadline ended the run early."""
    next_batch = batches(steps.start) if steps else None
    for step in steps:
        s = step + 1  # the state's step once this one is applied: records and checkpoints carry it
        # the next batch is built on the host while the device still runs the step dispatched before this one
        batch, next_batch = next_batch, (batches(s) if s < steps.stop else None)
        state, metrics = step_fn(state, batch)
        meter.add(s, metrics)
        out_of_time = deadline.passed(s)
        final = s == steps.stop or out_of_time
        if final or s % log_every == 0 or s % checkpoint_every == 0:
            record = meter.record(s)  # the interval's one host sync; FloatingPointError if anything is non-finite
            for hook in hooks:
                hook(record, state, final=final)
        if out_of_time:
            return state, True
    return state, False


def global_batch(shards, tc: TrainConfig, step: int, *, seed: int, sharding, fill: Fill | None = None):
    """The global batch of ``step``, a pure function of (seed, step), as arrays (accum, micro, ...) on the mesh of
    ``sharding``: each process reads only its own rows (``process_index`` of ``process_count``) and
    ``make_array_from_process_local_data`` joins them. With ``tc.fim_rate``, that share of the windows is reordered
    for fill-in-the-middle with the model's sentinels ``fill``, ``tc.fim_spm`` of them in SPM order
    (``Shards.batch``); the loss counts every target as in any window (the sentinels too; PAD never)."""
    extra = {k: v for k, v in (("condition_dropout", tc.condition_dropout),
                               ("unconditional_rate", tc.unconditional_rate)) if v}  # only Shards has these
    if tc.fim_rate:
        extra.update(fim_rate=tc.fim_rate, fim_spm=tc.fim_spm, fill=fill)
    local = shards.batch(step, tc.batch_size, tc.seq_len, seed=seed, process_index=jax.process_index(),
                         process_count=jax.process_count(), **extra)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        sharding, x.reshape(tc.accum_steps, -1, *x.shape[1:])), local)


class Meter:
    """The step metrics since the last record, left on the device until a record needs them (one host sync per log
    interval), with the clock behind ``tokens_per_s`` and the progress bar."""

    def __init__(self, tokens_per_step: int, schedule: Callable, bar, ckpt_dir: Path):
        self.tokens_per_step, self.schedule, self.bar, self.ckpt_dir = tokens_per_step, schedule, bar, ckpt_dir
        self.pending: list[tuple[int, dict]] = []  # (step, metrics of device scalars)
        self.since, self.steps = time.time(), 0

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))
        self.steps += 1
        self.bar.update(1)

    def record(self, step: int) -> dict:
        """The history record of ``step``: its loss, the mean loss since the last record, gradient norm, learning
        rate, tokens/s since the last record (the time of its hooks included: evaluation, checkpoints) and the loss's own metrics. Raises
        FloatingPointError when any pending step had a non-finite loss or gradient norm."""
        metrics = [(s, {k: float(v) for k, v in m.items()}) for s, m in self.pending]
        self.pending = []
        for s, m in metrics:
            # a finite loss with non-finite gradients has already poisoned the weights: never checkpoint them
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                raise FloatingPointError(
                    f"non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}) at step {s}: stopping; the "
                    f"last good checkpoint in {self.ckpt_dir} is intact. Try a lower learning_rate or "
                    f"compute_dtype='float32'."
                )
        last = metrics[-1][1]
        record = {
            "step": step,
            "loss": last["loss"],
            "loss_avg": float(np.mean([m["loss"] for _, m in metrics])),
            "grad_norm": last["grad_norm"],
            "lr": float(self.schedule(step - 1)),  # the rate the step to ``step`` used
            "tokens_per_s": self.tokens_per_step * self.steps / max(time.time() - self.since, 1e-9),
            **{k: v for k, v in last.items() if k not in ("loss", "grad_norm")},  # the loss's own
        }
        self.since, self.steps = time.time(), 0
        self.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
        return record


@dataclasses.dataclass(frozen=True)
class Deadline:
    """``passed(step)``: whether the wall-clock time ``at`` (``time.time()``; None: never) has passed after
    ``step``. Every process must stop at the same step: with several, process 0's clock decides, at log steps only
    (one broadcast per ``log_every`` steps)."""
    at: float | None
    log_every: int

    def passed(self, step: int) -> bool:
        if self.at is None:
            return False
        if jax.process_count() == 1:
            return time.time() > self.at
        if step % self.log_every:
            return False

        return bool(multihost_utils.broadcast_one_to_all(np.array(time.time() > self.at)))
