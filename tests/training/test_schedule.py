"""Learning-rate schedules, and training longer: a resumed run with a larger max_steps keeps a continuous learning
rate and keeps learning; a WSD run extended before its decay is the run planned that long from the start."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from tchaikovsky.config import TrainConfig, preset
from tchaikovsky.training import checkpoint, loop
from tchaikovsky.training.schedule import lr_schedule, next_plans, plan, planned_schedule


def lrs(schedule, steps) -> list[float]:
    return [float(schedule(s)) for s in steps]


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def numbers(rows) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def test_wsd_warms_up_holds_then_decays_over_the_last_fraction():
    tc = TrainConfig(schedule="wsd", learning_rate=1e-3, warmup_steps=10, max_steps=100, min_lr_ratio=0.1,
                     decay_fraction=0.2)
    got = lrs(lr_schedule(tc), [0, 5, 10, 50, 80, 90, 100, 150])
    assert got == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 1e-3, 5.5e-4, 1e-4, 1e-4])
    with pytest.raises(ValueError, match="schedule="):
        lr_schedule(TrainConfig(schedule="linear"))
    with pytest.raises(ValueError, match="decay_fraction"):
        lr_schedule(TrainConfig(schedule="wsd", decay_fraction=0.0))


def test_a_new_plan_bridges_linearly_from_the_old_value():
    old = TrainConfig(learning_rate=1e-3, warmup_steps=10, max_steps=100)  # cosine, finished at step 100
    new = TrainConfig(learning_rate=1e-3, warmup_steps=10, max_steps=200)
    plans = next_plans([plan(old)], new, 100)
    assert [p["start"] for p in plans] == [0, 100] and next_plans(plans, new, 150) == plans  # same settings: same
    s = planned_schedule(plans)
    straight_old, straight_new = lr_schedule(old), lr_schedule(new)
    assert lrs(s, range(100)) == lrs(straight_old, range(100))  # the past is unchanged
    bridge = lrs(s, range(100, 111))
    assert bridge[0] == pytest.approx(float(straight_old(100)))  # continuous: the old plan's value at 100
    assert bridge[-1] == pytest.approx(float(straight_new(110)))  # then the new plan
    assert np.allclose(np.diff(bridge), np.diff(bridge)[0])  # a straight line, no faster than the first warmup
    assert np.diff(bridge)[0] <= 1e-3 / 10
    assert lrs(s, range(110, 200)) == pytest.approx(lrs(straight_new, range(110, 200)))


@pytest.fixture(scope="module")
def base(bach):
    return preset("tiny", vocab_size=len(bach.tok), max_steps=20, log_every=1, eval_every=10, checkpoint_every=10)


def test_training_longer_keeps_the_learning_rate_continuous_and_keeps_learning(bach, base, tmp_path):
    p, N = base, base.train.max_steps
    loop.train(tmp_path, p.model, p.train, bach.shards)
    longer = TrainConfig(**{**p.train.to_dict(), "max_steps": 2 * N})
    result = loop.train(tmp_path, p.model, longer, bach.shards)
    rows = {r["step"]: r for r in history(tmp_path)}
    assert sorted(rows) == list(range(1, 2 * N + 1))
    lr = [rows[s]["lr"] for s in range(1, 2 * N + 1)]  # lr[i] drove the update to step i + 1
    assert lr[N] <= lr[N - 1] + 1e-12  # no jump when the longer plan takes over
    assert max(np.diff(lr)) <= p.train.learning_rate / p.train.warmup_steps * (1 + 1e-6)  # re-warmup is bounded
    assert rows[2 * N]["eval_loss"] < rows[N]["eval_loss"]
    assert np.mean([rows[s]["loss"] for s in range(N + 1, 2 * N + 1)]) < np.mean([rows[s]["loss"] for s in
                                                                                   range(1, N + 1)])
    meta = checkpoint.read_meta(result.checkpoint)
    assert [q["start"] for q in meta["lr_plans"]] == [0, N] and meta["lr_plans"][1]["max_steps"] == 2 * N
    schedule = planned_schedule(meta["lr_plans"])
    assert lr == pytest.approx(lrs(schedule, range(2 * N)))
    assert float(schedule(2 * N)) == pytest.approx(p.train.learning_rate * p.train.min_lr_ratio)  # the floor at 2N


def test_wsd_extended_before_its_decay_equals_the_longer_plan(bach, base, tmp_path):
    wsd = TrainConfig(**{**base.train.to_dict(), "schedule": "wsd", "max_steps": 40, "log_every": 5})
    longer = TrainConfig(**{**wsd.to_dict(), "max_steps": 60})
    loop.train(tmp_path / "ext", base.model, wsd, bach.shards, until_step=20)  # decay starts at 32
    ext = loop.train(tmp_path / "ext", base.model, longer, bach.shards)
    straight = loop.train(tmp_path / "straight", base.model, longer, bach.shards)
    assert numbers(history(tmp_path / "ext")) == numbers(history(tmp_path / "straight"))
    for x, y in zip(jax.tree.leaves(eqx.filter(ext.state.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(straight.state.model, eqx.is_array)), strict=True):
        np.testing.assert_array_equal(x, y)
