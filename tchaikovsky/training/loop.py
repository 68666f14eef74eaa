"""The training loop: logs, evaluates, checkpoints and resumes a run directory.

Writes ``run_dir/history.jsonl`` (one JSON object per logged step) and ``run_dir/checkpoints/``. Batches are a pure
function of (seed, step), so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from tchaikovsky import io
from tchaikovsky.config import ModelConfig, TrainConfig, compute_dtype
from tchaikovsky.training import checkpoint
from tchaikovsky.training.state import TrainState, lr_schedule, setup
from tchaikovsky.training.step import evaluate, make_eval_step, make_train_step


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    history: list[dict]
    stopped: str  # "max_steps" | "max_minutes" | "until_step"
    checkpoint: Path | None



def _check_resume(meta: dict, model_cfg: ModelConfig, tok_hash: str | None, path: Path):
    saved = meta.get("model_config", {})
    if saved != model_cfg.to_dict():
        diff = {k: (saved.get(k), v) for k, v in model_cfg.to_dict().items() if saved.get(k) != v}
        raise ValueError(
            f"cannot resume from {path}: it was trained with another model configuration "
            f"(checkpoint vs now: {diff}). Use the same preset, or a new run_dir, or resume=False."
        )
    if tok_hash and meta.get("tokenizer_hash") and meta["tokenizer_hash"] != tok_hash:
        raise ValueError(
            f"cannot resume from {path}: it was trained with another tokenizer "
            f"(hash {meta['tokenizer_hash']} vs {tok_hash}). Retokenize with the original tokenizer or use a new run_dir."
        )


def train(
    run_dir: str | Path,
    model_cfg: ModelConfig,
    tc: TrainConfig,
    shards,
    *,
    seed: int = 0,
    resume: bool = True,
    max_minutes: float | None = None,
    until_step: int | None = None,
    pad_id: int | None = None,
    progress: bool = True,
    logger=None,
    on_log=None,
    extra_meta: dict | None = None,
    devices=None,
) -> TrainResult:
    """Train (or continue training) the model described by ``model_cfg`` on ``shards``; see the module docstring.

    Writes ``run_dir/history.jsonl`` (one JSON object per logged step) and ``run_dir/checkpoints/``. With
    ``resume=True`` an existing checkpoint is continued exactly (same losses as an uninterrupted run); with
    ``resume=False`` an existing checkpoint is an error rather than silently overwritten. ``max_minutes`` and
    ``until_step`` end the run early with a final checkpoint. A non-finite loss stops the run with an error and
    leaves the last good checkpoint in place. ``logger(record)`` is called with every history record (wandb);
    ``on_log(record, state)`` too, with the current state (e.g. to render a sample now and then).
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    history_path = run_dir / "history.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    pad_id = getattr(shards, "pad_id", 0) if pad_id is None else pad_id
    tok_hash = shards.tokenizer_hash
    dtype = compute_dtype(tc.compute_dtype)

    mesh, optim, state, shardings, batch_sharding = setup(model_cfg, tc, seed=seed, devices=devices)
    procs, proc = jax.process_count(), jax.process_index()
    history: list[dict] = []

    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        if not resume:
            raise ValueError(
                f"{run_dir} already holds checkpoints (latest {last.name}); set resume=True to continue it, "
                f"or choose a new run_dir"
            )
        meta = checkpoint.read_meta(last)
        _check_resume(meta, model_cfg, tok_hash, last)
        state = checkpoint.load(last, state)
        history = io.read_jsonl(history_path, upto_step=int(state.step))
    writer = proc == 0  # one history file per run, like the checkpoints: process 0 writes for everyone
    if writer:  # drop rows logged after the checkpoint we resume from; atomically, so a crash here loses nothing
        io.write_jsonl(history_path, history)
    state = eqx.filter_shard(state, shardings)

    step_fn = make_train_step(optim, dtype, pad_id, shardings, batch_sharding)
    eval_step = make_eval_step(dtype, pad_id)
    schedule = lr_schedule(tc)
    meta = {
        "model_config": model_cfg.to_dict(),
        "train_config": tc.to_dict(),
        "tokenizer_hash": tok_hash,
        "seed": seed,
        **(extra_meta or {}),
    }

    def get_batch(step: int) -> jax.Array:
        local = shards.batch(step, tc.batch_size, tc.seq_len, seed=seed, process_index=proc, process_count=procs)
        local = local.reshape(tc.accum_steps, -1, local.shape[-1])
        return jax.make_array_from_process_local_data(batch_sharding, local)

    def log(record: dict):
        history.append(record)
        if writer:
            with open(history_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if logger is not None and writer:
            logger(record)

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
            if on_log is not None:
                on_log(record, state)
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
