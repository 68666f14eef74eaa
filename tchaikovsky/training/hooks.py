"""What the training loop does at its log steps, as hooks over one history record: evaluation, the history file,
checkpoints, and the caller's own (wandb, samples: ``Hook(fn, every=...)``).

A hook is called on every process, in the order the loop lists them; only process 0 writes files, and saving
gathers sharded arrays from every process first (``checkpoint.save``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from tchaikovsky import io
from tchaikovsky.config import TrainConfig
from tchaikovsky.training import checkpoint
from tchaikovsky.training.step import evaluate, make_eval_step


@dataclasses.dataclass(frozen=True)
class Hook:
    """``fn(record, state)``, called after each logged history record whose step is a multiple of ``every`` (with
    ``at_end``, also at the run's last step, whether ``max_steps``, ``until_step`` or ``max_minutes`` ended it), on
    every process (a hook that writes files or logs remotely checks ``jax.process_index() == 0`` itself). A hook
    may add entries to ``record`` for the hooks after it: the loop's evaluation adds the held-out loss so, before
    the history hook writes the record and the caller's hooks see it."""

    fn: Callable[[dict, Any], None]
    every: int = 1
    at_end: bool = False

    def __call__(self, record: dict, state, final: bool = False) -> None:
        if record["step"] % self.every == 0 or (final and self.at_end):
            self.fn(record, state)


def evaluation(shards, tc: TrainConfig, dtype, pad_id: int, mesh) -> Hook:
    """A hook adding the exact held-out loss over the shards' validation split (``step.evaluate``: ``eval_loss``,
    ``bits_per_note``) to the record, every ``tc.eval_every`` steps and at the end."""
    eval_step = make_eval_step(dtype, pad_id)  # compiled once per run, reused by every evaluation

    def add(record: dict, state) -> None:
        record.update(evaluate(state.model, shards, batch_size=tc.micro_batch, seq_len=tc.seq_len, dtype=dtype,
                               pad_id=pad_id, mesh=mesh, eval_step=eval_step))

    return Hook(add, every=tc.eval_every, at_end=True)


@dataclasses.dataclass
class History:
    """The run's records: ``rows`` on every process, and ``path`` (JSON lines), which process 0 writes for everyone,
    as it writes the checkpoints."""

    path: Path
    rows: list[dict]

    def rewrite(self) -> None:
        """Replace the file with ``rows`` (a resumed run drops the records logged after its checkpoint; a new run
        starts empty), atomically, so a crash here loses nothing."""
        if jax.process_index() == 0:
            io.write_jsonl(self.path, self.rows)

    def append(self, record: dict, state=None) -> None:
        """Keep ``record`` and append it to the file (a ``Hook`` function)."""
        self.rows.append(record)
        if jax.process_index() == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


@dataclasses.dataclass
class Checkpoints:
    """Saves the train state under ``ckpt_dir`` with ``meta``, keeping the newest ``keep`` (``checkpoint.save``);
    ``last``: the latest checkpoint written (None on processes other than 0), or the one the run resumed from."""

    ckpt_dir: Path
    meta: dict
    keep: int
    last: Path | None = None

    def save(self, record: dict, state) -> None:
        """Save ``state`` (a ``Hook`` function; every process must call it)."""
        self.last = checkpoint.save(self.ckpt_dir, state, self.meta, keep=self.keep)
