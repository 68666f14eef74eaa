"""The training loop: logs, evaluates, checkpoints and resumes a run directory.

Writes ``run_dir/history.jsonl`` (one JSON object per logged step) and ``run_dir/checkpoints/``. Batches are a pure
function of (seed, step), so a resumed run continues exactly as an uninterrupted one would. A run starts from fresh
weights or from another run's (``init_from``), trains all or part of the model (``trainable``) on any loss
(``loss_fn``), and calls ``Hook``s (wandb, samples) at its log steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from tchaikovsky import io
from tchaikovsky.config import ModelConfig, TrainConfig, compute_dtype
from tchaikovsky.training import checkpoint
from tchaikovsky.training.losses import LossFn, next_token_loss
from tchaikovsky.training.restore import restore_or_init
from tchaikovsky.training.state import TrainState
from tchaikovsky.training.step import evaluate, make_eval_step, make_train_step


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    history: list[dict]
    stopped: str  # "max_steps" | "max_minutes" | "until_step"
    checkpoint: Path | None


@dataclasses.dataclass(frozen=True)
class Hook:
    """``fn(record, state)``, called after each logged history record whose step is a multiple of ``every``, on
    every process (a hook that writes files or logs remotely checks ``jax.process_index() == 0`` itself)."""

    fn: Callable[[dict, Any], None]
    every: int = 1

    def __call__(self, record: dict, state) -> None:
        if record["step"] % self.every == 0:
            self.fn(record, state)


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
    progress: bool = True,
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
            shards' condition vocabulary extends the pretrained one, the embedding and output rows grow with it.
        trainable: which arrays train (``state.trainable_mask``; default all); the others never change. A resumed
            run must train the same ones.
        loss_fn: the loss (contract in ``training.losses``); its metrics join each history record.
        hooks: ``Hook``s called with each history record and the current state (wandb, samples).
        max_minutes, until_step: end the run early, with a final checkpoint.

    A non-finite loss or gradient stops the run with FloatingPointError and leaves the last good checkpoint in place.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    history_path = run_dir / "history.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    pad_id = getattr(shards, "pad_id", 0) if pad_id is None else pad_id
    tok_hash = shards.tokenizer_hash
    dtype = compute_dtype(tc.compute_dtype)

    procs, proc = jax.process_count(), jax.process_index()
    start = restore_or_init(run_dir, model_cfg, tc, shards, seed=seed, resume=resume, init_from=init_from,
                            trainable=trainable, devices=devices)
    mesh, optim, state, shardings, batch_sharding = start.setup
    last, plans, origin, schedule, history = start.resumed, start.plans, start.origin, start.schedule, start.history
    writer = proc == 0  # one history file per run, like the checkpoints: process 0 writes for everyone
    if writer:  # drop rows logged after the checkpoint we resume from; atomically, so a crash here loses nothing
        io.write_jsonl(history_path, history)

    step_fn = make_train_step(optim, dtype, pad_id, shardings, batch_sharding, loss_fn=loss_fn)
    eval_step = make_eval_step(dtype, pad_id)
    meta = {
        "model_config": model_cfg.to_dict(),
        "train_config": tc.to_dict(),
        "tokenizer_hash": tok_hash,
        "seed": seed,
        "lr_plans": plans,
        "frozen": state.frozen(),
        **({"init_from": origin} if origin else {}),
        **(extra_meta or {}),
    }

    def get_batch(step: int):
        dropout = {"condition_dropout": tc.condition_dropout} if tc.condition_dropout else {}  # only Shards has it
        local = shards.batch(step, tc.batch_size, tc.seq_len, seed=seed, process_index=proc, process_count=procs,
                             **dropout)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
            batch_sharding, x.reshape(tc.accum_steps, -1, *x.shape[1:])), local)

    def log(record: dict):
        history.append(record)
        if writer:
            with open(history_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def time_is_up(s: int) -> bool:
        if deadline is None:
            return False
        if procs == 1:
            return time.time() > deadline
        if s % tc.log_every:  # every process must stop at the same step: process 0's clock decides, at log steps
            return False
        from jax.experimental import multihost_utils

        return bool(multihost_utils.broadcast_one_to_all(np.array(time.time() > deadline)))

    def save() -> Path | None:
        return checkpoint.save(ckpt_dir, state, meta, keep=tc.keep_checkpoints)

    start_step = int(state.step)
    end_step = tc.max_steps if until_step is None else min(until_step, tc.max_steps)
    deadline = None if max_minutes is None else time.time() + 60.0 * max_minutes
    stopped, ckpt = "max_steps" if until_step is None or until_step >= tc.max_steps else "until_step", None
    tokens_per_step = tc.batch_size * tc.seq_len
    bar = tqdm(total=end_step, initial=start_step, desc="train", disable=not progress, dynamic_ncols=True)
    pending: list[tuple[int, dict]] = []
    t_mark, steps_since = time.time(), 0
    next_batch = get_batch(start_step) if start_step < end_step else None

    def flush(step: int):
        """Fetch the pending step metrics (one host sync per log interval), check them, write one record."""
        nonlocal pending, t_mark, steps_since
        metrics = [(s, {k: float(v) for k, v in m.items()}) for s, m in pending]
        pending = []
        for s, m in metrics:
            # a finite loss with non-finite gradients has already poisoned the weights: never checkpoint them
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                raise FloatingPointError(
                    f"non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}) at step {s}: stopping; the "
                    f"last good checkpoint in {ckpt_dir} is intact. Try a lower learning_rate or "
                    f"compute_dtype='float32'."
                )
        dt = time.time() - t_mark
        record = {
            "step": step,
            "loss": metrics[-1][1]["loss"],
            "loss_avg": float(np.mean([m["loss"] for _, m in metrics])),
            "grad_norm": metrics[-1][1]["grad_norm"],
            "lr": float(schedule(step - 1)),
            "tokens_per_s": tokens_per_step * steps_since / max(dt, 1e-9),
            **{k: v for k, v in metrics[-1][1].items() if k not in ("loss", "grad_norm")},  # the loss's own
        }
        t_mark, steps_since = time.time(), 0
        return record

    for step in range(start_step, end_step):
        batch, next_batch = next_batch, (get_batch(step + 1) if step + 1 < end_step else None)
        state, metrics = step_fn(state, batch)
        pending.append((step + 1, metrics))
        steps_since += 1
        s = step + 1
        out_of_time = time_is_up(s)
        if s % tc.log_every == 0 or s == end_step or out_of_time or s % tc.checkpoint_every == 0:
            record = flush(s)
            if s % tc.eval_every == 0 or s == end_step or out_of_time:
                record.update(evaluate(state.model, shards, batch_size=tc.micro_batch, seq_len=tc.seq_len,
                                       dtype=dtype, pad_id=pad_id, mesh=mesh, eval_step=eval_step))
            log(record)
            for hook in hooks:
                hook(record, state)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if s % tc.checkpoint_every == 0 or s == end_step or out_of_time:
                ckpt = save()
        bar.update(1)
        if out_of_time:
            stopped = "max_minutes"
            break
    bar.close()
    if start_step >= end_step and last is not None:
        ckpt = last
    return TrainResult(state, history, stopped, ckpt)
