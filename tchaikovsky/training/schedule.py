"""Learning-rate schedules, and how a run that changes its plan (e.g. trains longer) continues smoothly.

Two shapes (``TrainConfig.schedule``), both a linear warmup from 0 to ``learning_rate`` over ``warmup_steps``:

- ``"cosine"``: cosine decay to ``learning_rate * min_lr_ratio`` at ``max_steps``;
- ``"wsd"`` (warmup-stable-decay): constant ``learning_rate``, then a linear decay to the same floor over the last
  ``decay_fraction`` of ``max_steps``. A run stopped before its decay began continues under a longer plan exactly as
  if it had been planned that long from the start.

A *plan* is the schedule settings of a TrainConfig plus the step it starts at (a JSON-able dict, saved in every
checkpoint's ``meta.json`` as ``lr_plans``). When a run resumes at step ``N`` with other settings (a larger
``max_steps``, another ``learning_rate``), a new plan starts at ``N``: the learning rate moves linearly from the old
plan's value at ``N`` to the new plan's value at ``N + warmup_steps`` (a bounded re-warmup: never faster than the
first warmup), then follows the new plan, which is the schedule a run planned with the new settings from step 0
would have. The learning rate is therefore continuous at ``N``, and a later resume rebuilds the same schedule.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import optax

from tchaikovsky.config import TrainConfig

FIELDS = ("schedule", "learning_rate", "warmup_steps", "max_steps", "min_lr_ratio", "decay_fraction")


def plan(tc: TrainConfig | dict, start: int = 0) -> dict:
    """The schedule settings of ``tc`` (a TrainConfig, or its ``to_dict()``; missing fields take the TrainConfig
    defaults, so configs saved before a field existed still read) starting at optimizer step ``start``."""
    d = tc.to_dict() if isinstance(tc, TrainConfig) else tc
    defaults = TrainConfig()
    return {"start": int(start), **{k: d.get(k, getattr(defaults, k)) for k in FIELDS}}


def lr_schedule(tc: TrainConfig | dict) -> optax.Schedule:
    """The straight schedule of ``tc`` (one plan from step 0): learning rate as a function of the optimizer's count
    of updates so far. Raises ValueError for an unknown ``schedule`` or a ``decay_fraction`` outside (0, 1]."""
    p = plan(tc)
    peak, steps = p["learning_rate"], p["max_steps"]
    floor = peak * p["min_lr_ratio"]
    warmup = max(1, min(p["warmup_steps"], steps - 1))
    if p["schedule"] == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(steps, warmup + 1), floor)
    if p["schedule"] != "wsd":
        raise ValueError(f"schedule={p['schedule']!r} is not 'cosine' or 'wsd'")
    if not 0 < p["decay_fraction"] <= 1:
        raise ValueError(f"decay_fraction={p['decay_fraction']} must be in (0, 1]")
    decay_start = max(warmup, steps - max(1, round(p["decay_fraction"] * steps)))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak),
         optax.linear_schedule(peak, floor, max(1, steps - decay_start))],
        [warmup, decay_start],
    )


def next_plans(plans: Sequence[dict], tc: TrainConfig, step: int) -> list[dict]:
    """The plans of a run resumed at ``step`` under ``tc``: unchanged when ``tc`` has the last plan's settings,
    else with a new plan starting at ``step``."""
    plans = list(plans)
    new = plan(tc, step)
    if plans and {k: plans[-1][k] for k in FIELDS} == {k: new[k] for k in FIELDS}:
        return plans
    return plans + [new]


def planned_schedule(plans: Sequence[dict]) -> optax.Schedule:
    """The schedule of a run whose settings changed at each plan's ``start`` (see the module docstring)."""
    if not plans or plans[0]["start"] != 0:
        raise ValueError(f"the first plan must start at step 0: {list(plans)[:1]}")
    schedule = lr_schedule(plans[0])
    for p in plans[1:]:
        schedule = _bridge(schedule, lr_schedule(p), p["start"], max(1, p["warmup_steps"]))
    return schedule


def _bridge(before: optax.Schedule, after: optax.Schedule, start: int, ramp: int) -> optax.Schedule:
    """``before`` until ``start``, a straight line to ``after(start + ramp)`` over ``ramp`` steps, then ``after``."""
    a, b = float(before(start)), float(after(start + ramp))

    def schedule(count):
        line = a + (b - a) * jnp.clip((count - start) / ramp, 0.0, 1.0)
        return jnp.where(count < start, before(count), jnp.where(count < start + ramp, line, after(count)))

    return schedule
