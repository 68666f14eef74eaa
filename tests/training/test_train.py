"""Training: sharding-invariant steps, gradient accumulation, exact resume, guard rails, evaluation, history.

Everything runs for real on 8 simulated CPU devices (see conftest.py) with small models on real Bach shards.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tchaikovsky.training import checkpoint
from tchaikovsky.training import loop as train
from tchaikovsky.training import state as train_state, step as train_step
from tchaikovsky.training.schedule import lr_schedule
from tchaikovsky.config import TrainConfig, preset
from tchaikovsky.model import GPT
from tchaikovsky.data.shards import Shards

TC = TrainConfig(batch_size=8, seq_len=64, learning_rate=3e-3, warmup_steps=5, max_steps=20, eval_every=10,
                 log_every=5, checkpoint_every=10)
HISTORY_KEYS = ("step", "loss", "loss_avg", "grad_norm", "lr", "eval_loss", "bits_per_note")


def run_steps(mc, tc, shards, devices, n_steps=3, seed=0):
    """The jitted train step, driven by hand on a mesh over ``devices``: (final state, losses)."""
    mesh = train_state.make_mesh(devices)
    model = GPT(mc, key=jax.random.key(seed))
    optim = train_state.make_optimizer(tc, model)
    state = train_state.TrainState.create(model, optim, seed)
    shardings = train_state.state_shardings(state, mesh, tc.fsdp)
    state = eqx.filter_shard(state, shardings)
    batch_sharding = NamedSharding(mesh, P(None, "data"))
    step = train_step.make_train_step(optim, jnp.float32, shards.pad_id, shardings, batch_sharding)
    losses = []
    for i in range(n_steps):
        tokens = shards.batch(i, tc.batch_size, tc.seq_len, seed=seed).reshape(tc.accum_steps, -1, tc.seq_len + 1)
        state, metrics = step(state, jax.device_put(tokens, batch_sharding))
        losses.append(float(metrics["loss"]))
    return state, losses


def params_of(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(state.model, eqx.is_array))]


def read_history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines() if line.strip()]


def assert_params_close(a, b, atol):
    for x, y in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------- the step


def test_eight_devices_match_one_device(bach, small_config):
    assert len(jax.devices()) == 8
    one, loss_one = run_steps(small_config, TC, bach.shards, jax.devices()[:1])
    eight, loss_eight = run_steps(small_config, TC, bach.shards, jax.devices())
    assert eight.model.embed.weight.sharding.num_devices == 8
    np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-5)
    assert loss_one[-1] < loss_one[0]  # the steps really train
    assert_params_close(one, eight, atol=2e-5)


def test_gradient_accumulation_matches_one_big_batch(bach, small_config):
    tc1 = TrainConfig(**{**TC.to_dict(), "batch_size": 16, "accum_steps": 1})
    tc2 = TrainConfig(**{**TC.to_dict(), "batch_size": 16, "accum_steps": 2})
    s1, loss1 = run_steps(small_config, tc1, bach.shards, jax.devices())
    s2, loss2 = run_steps(small_config, tc2, bach.shards, jax.devices())
    np.testing.assert_allclose(loss2, loss1, rtol=1e-5)
    assert_params_close(s1, s2, atol=2e-5)
    # and a different global batch really does give a different step (the comparison has teeth)
    s3, loss3 = run_steps(small_config, TC, bach.shards, jax.devices())
    assert abs(loss3[-1] - loss1[-1]) > 1e-4


def test_fsdp_shards_parameters_and_matches_replicated(bach, small_config):
    tc = TrainConfig(**{**TC.to_dict(), "fsdp": True})
    rep, loss_rep = run_steps(small_config, TC, bach.shards, jax.devices())
    sharded, loss_fsdp = run_steps(small_config, tc, bach.shards, jax.devices())
    np.testing.assert_allclose(loss_fsdp, loss_rep, rtol=1e-5)
    assert_params_close(rep, sharded, atol=2e-5)

    V, d = small_config.vocab_size, small_config.d_model
    embed = sharded.model.embed.weight  # (V, d): the largest axis divisible by 8 is split
    assert V % 8 == 0 and not embed.sharding.is_fully_replicated
    assert {s.data.shape for s in embed.addressable_shards} == {(V // 8, d)}
    qkv = sharded.model.blocks.qkv.weight  # (layers, 3d, d)
    assert {s.data.shape for s in qkv.addressable_shards} == {(small_config.n_layers, 3 * d // 8, d)}
    mu = sharded.opt_state[1][0].mu.embed.weight  # Adam's first moment follows its parameter
    assert {s.data.shape for s in mu.addressable_shards} == {(V // 8, d)}
    assert rep.model.embed.weight.sharding.is_fully_replicated


def test_micro_batch_must_divide_over_devices(bach, small_config, tmp_path):
    tc = TrainConfig(**{**TC.to_dict(), "batch_size": 8, "accum_steps": 2})  # 4 rows per micro-batch, 8 devices
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        train.train(tmp_path, small_config, tc, bach.shards)


# ---------------------------------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def straight(bach, tmp_path_factory):
    """One uninterrupted 40-step run of the tiny preset."""
    p = preset("tiny", vocab_size=len(bach.tok), max_steps=40, log_every=5, checkpoint_every=10)
    run_dir = tmp_path_factory.mktemp("straight")
    result = train.train(run_dir, p.model, p.train, bach.shards, seed=3)
    return p, run_dir, result


def test_split_and_resumed_run_equals_straight_run(bach, straight, tmp_path):
    p, straight_dir, full = straight
    first = train.train(tmp_path, p.model, p.train, bach.shards, seed=3, until_step=20)
    assert first.stopped == "until_step" and int(first.state.step) == 20
    assert first.checkpoint == tmp_path / "checkpoints" / "step_00000020"
    second = train.train(tmp_path, p.model, p.train, bach.shards, seed=3, resume=True)
    assert second.stopped == "max_steps" and int(second.state.step) == 40

    want, got = read_history(straight_dir), read_history(tmp_path)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(5, 41, 5))
    for w, g in zip(want, got):
        assert {k: g.get(k) for k in HISTORY_KEYS} == {k: w.get(k) for k in HISTORY_KEYS}, w["step"]
    assert [r["step"] for r in second.history] == list(range(5, 41, 5))  # the resumed result has the whole story
    for x, y in zip(params_of(full.state), params_of(second.state), strict=True):
        np.testing.assert_array_equal(x, y)

    # resuming a finished run does nothing and points at its checkpoint
    again = train.train(tmp_path, p.model, p.train, bach.shards, seed=3, resume=True)
    assert again.checkpoint == tmp_path / "checkpoints" / "step_00000040"
    assert len(read_history(tmp_path)) == 8


def test_resume_from_a_checkpoint_written_before_named_subtrees(bach, straight, tmp_path):
    """A step directory holding the whole TrainState in state.eqx (and a meta.json without lr_plans or frozen), as
    the code before model.eqx/opt_state.eqx wrote it, resumes exactly."""
    p, straight_dir, full = straight
    train.train(tmp_path, p.model, p.train, bach.shards, seed=3, until_step=20)
    ckpts = tmp_path / "checkpoints"
    state = checkpoint.load(ckpts / "step_00000020", train_state.setup(p.model, p.train, seed=3).state)
    meta = {k: v for k, v in checkpoint.read_meta(ckpts / "step_00000020").items() if k not in ("lr_plans", "frozen")}
    shutil.rmtree(ckpts)
    (ckpts / "step_00000020").mkdir(parents=True)
    eqx.tree_serialise_leaves(ckpts / "step_00000020" / "state.eqx", state)
    (ckpts / "step_00000020" / "meta.json").write_text(json.dumps(meta))

    second = train.train(tmp_path, p.model, p.train, bach.shards, seed=3, resume=True)
    want, got = read_history(straight_dir), read_history(tmp_path)
    assert [{k: r.get(k) for k in HISTORY_KEYS} for r in got] == [{k: r.get(k) for k in HISTORY_KEYS} for r in want]
    for x, y in zip(params_of(full.state), params_of(second.state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_history_records(straight):
    p, run_dir, result = straight
    rows = read_history(run_dir)
    assert rows == result.history
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    for r in rows:
        for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (key, r)
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and 0 < r["lr"] <= p.train.learning_rate
        assert ("eval_loss" in r) == (r["step"] % p.train.eval_every == 0)
    schedule = lr_schedule(p.train)
    assert [r["lr"] for r in rows] == pytest.approx([float(schedule(r["step"] - 1)) for r in rows])
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0 and rows[-1]["eval_loss"] < rows[1]["eval_loss"]
    assert result.stopped == "max_steps"
    names = [c.name for c in checkpoint.list_checkpoints(run_dir / "checkpoints")]
    assert names == ["step_00000030", "step_00000040"]  # keep_checkpoints=2


def test_resume_refuses_mismatches(bach, straight, tmp_path):
    p, run_dir, _ = straight
    before = (run_dir / "history.jsonl").read_text()
    other = type(p.model)(**{**p.model.to_dict(), "n_heads": 4})  # same parameter shapes, different model
    with pytest.raises(ValueError, match="n_heads"):
        train.train(run_dir, other, p.train, bach.shards, seed=3)

    fake = tmp_path / "shards"  # the same tokens, claimed by another tokenizer
    shutil.copytree(bach.shards_dir, fake)
    index = json.loads((fake / "index.json").read_text())
    index["tokenizer_hash"] = "0123456789abcdef"
    (fake / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="tokenizer"):
        train.train(run_dir, p.model, p.train, Shards(fake), seed=3)

    with pytest.raises(ValueError, match="resume=True"):
        train.train(run_dir, p.model, p.train, bach.shards, seed=3, resume=False)
    assert (run_dir / "history.jsonl").read_text() == before  # refusing does not damage the run
    assert checkpoint.latest(run_dir / "checkpoints").name == "step_00000040"


def test_max_minutes_stops_cleanly_with_a_checkpoint(bach, small_config, tmp_path):
    tc = TrainConfig(**{**TC.to_dict(), "max_steps": 10_000})
    result = train.train(tmp_path, small_config, tc, bach.shards, max_minutes=1e-6)
    assert result.stopped == "max_minutes"
    step = int(result.state.step)
    assert 1 <= step < 10_000
    assert result.checkpoint == checkpoint.latest(tmp_path / "checkpoints")
    assert result.checkpoint.name == f"step_{step:08d}"
    last = read_history(tmp_path)[-1]
    assert last["step"] == step and math.isfinite(last["eval_loss"])
    model, meta = checkpoint.load_model(tmp_path / "checkpoints")
    assert meta["step"] == step
    for x, y in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)), params_of(result.state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(bach, small_config, tmp_path):
    tc = TrainConfig(**{**TC.to_dict(), "learning_rate": 1e6, "log_every": 1, "checkpoint_every": 1,
                        "eval_every": 1000, "keep_checkpoints": 100})
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.train(tmp_path, small_config, tc, bach.shards)
    ckpts = checkpoint.list_checkpoints(tmp_path / "checkpoints")
    assert ckpts, "the run diverged before its first checkpoint: the test lost its point"
    model = GPT(small_config, key=jax.random.key(0))
    like = train_state.TrainState.create(model, train_state.make_optimizer(tc, model), 0)
    for ckpt in ckpts:  # every checkpoint written is a good one: finite weights and optimizer state
        state = checkpoint.load(ckpt, like)
        leaves = jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
        assert all(np.isfinite(np.asarray(x)).all() for x in leaves), ckpt.name
    model, meta = checkpoint.load_model(tmp_path / "checkpoints")
    assert meta["step"] == int(ckpts[-1].name[5:])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    rows = read_history(tmp_path)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)


# ---------------------------------------------------------------------------------------------------- evaluation


def test_evaluate_is_exact_and_deterministic(bach, trained):
    model, T = trained.model, trained.preset.train.seq_len
    shards = bach.shards
    a = train_step.evaluate(model, shards, batch_size=8, seq_len=T)
    b = train_step.evaluate(model, shards, batch_size=8, seq_len=T)
    assert a == b
    assert math.isfinite(a["eval_loss"]) and 0 < a["eval_loss"] < math.log(model.config.vocab_size)
    assert math.isfinite(a["bits_per_note"]) and a["bits_per_note"] > 0
    # bits per note = total bits over the split / its notes (every target but the first token is scored once)
    n_targets = shards.n_tokens("val") - 1
    assert a["bits_per_note"] == pytest.approx(a["eval_loss"] * n_targets / math.log(2) / shards.n_notes("val"))
    # how the split is tiled into batches and devices does not change the result
    one = train_state.make_mesh(jax.devices()[:1])
    on_one = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(one, P())) if eqx.is_array(x) else x, model)
    c = train_step.evaluate(on_one, shards, batch_size=16, seq_len=T, mesh=one)
    assert c["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-6)
    # the training split is another number
    d = train_step.evaluate(model, shards, batch_size=8, seq_len=T, split="train")
    assert d["eval_loss"] != a["eval_loss"]


# ---------------------------------------------------------------------------------------------------- multi-host

WORKER = textwrap.dedent('''
    import json, os, sys
    import jax
    pid, port, run_dir, shards_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    # The processes meet on 127.0.0.1, for the coordinator and for the collectives alike. Gloo's TCP transport, left
    # to itself, binds to the address the machine's hostname resolves to, and where it resolves to none the CPU
    # backend fails ("Unable to initialize backend 'cpu'"). JAX has no setting for that address (nor does gloo read
    # one from the environment), so the CPU client is made here, before any backend starts, with gloo collectives
    # bound to 127.0.0.1.
    from jax._src import distributed, xla_bridge
    from jax._src.lib import _jax

    def cpu_client():
        gloo = _jax.make_gloo_tcp_collectives(distributed_client=distributed.global_state.client,
                                              hostname="127.0.0.1")
        return xla_bridge.make_cpu_client(collectives=gloo)

    xla_bridge.register_backend_factory("cpu", cpu_client, priority=0, fail_quietly=False)
    from tchaikovsky.training import loop as train
    from tchaikovsky.config import ModelConfig, TrainConfig
    from tchaikovsky.data.shards import Shards

    calls = []

    class Recording(Shards):
        def batch(self, step, batch_size, seq_len, **kw):
            rows = super().batch(step, batch_size, seq_len, **kw)
            calls.append({"step": step, "batch_size": batch_size, **kw, "rows": rows.tolist()})
            return rows

    mc = ModelConfig(**json.loads(sys.argv[6]))
    tc = TrainConfig(**json.loads(sys.argv[7]))
    result = train.train(run_dir, mc, tc, Recording(shards_dir), seed=5)
    info = {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count(),
            "history": result.history, "calls": calls, "stopped": result.stopped}
    with open(out, "w") as f:
        json.dump(info, f)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(bach, small_config, tmp_path):
    """Two CPU processes (2 devices each) joined by jax.distributed (gloo collectives) train as one 4-device job.
    They meet on 127.0.0.1, so the test runs on a machine whose hostname does not resolve."""
    tc = TrainConfig(**{**TC.to_dict(), "max_steps": 6, "log_every": 3, "eval_every": 3, "checkpoint_every": 3})
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_dir, port = tmp_path / "run", _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))  # the repository root
    procs = [
        subprocess.Popen([sys.executable, str(script), str(i), str(port), str(run_dir), str(bach.shards_dir),
                          str(tmp_path / f"out{i}.json"), json.dumps(small_config.to_dict()), json.dumps(tc.to_dict())],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    out = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]

    for i, o in enumerate(out):
        assert (o["process_index"], o["process_count"], o["local_devices"], o["devices"]) == (i, 2, 2, 4)
        assert o["stopped"] == "max_steps"
        # each process read only its own half of every global batch
        assert sorted(c["step"] for c in o["calls"]) == list(range(tc.max_steps))
        for c in o["calls"]:
            assert (c["process_index"], c["process_count"]) == (i, 2)
            full = bach.shards.batch(c["step"], tc.batch_size, tc.seq_len, seed=5)
            np.testing.assert_array_equal(np.asarray(c["rows"]), full[i * 4 : (i + 1) * 4])
    for a, b in zip(out[0]["history"], out[1]["history"], strict=True):  # both log the same numbers
        assert {k: a.get(k) for k in HISTORY_KEYS} == {k: b.get(k) for k in HISTORY_KEYS}
    assert [r["step"] for r in out[0]["history"]] == [3, 6]
    # one writer: the shared run directory holds one history and the checkpoints of process 0
    assert [r["step"] for r in read_history(run_dir)] == [3, 6]
    assert checkpoint.latest(run_dir / "checkpoints").name == "step_00000006"

    # and the same global batches on one process with 8 devices give the same losses
    ref = train.train(tmp_path / "ref", small_config, tc, bach.shards, seed=5)
    for a, b in zip(ref.history, out[0]["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5)
    model, _ = checkpoint.load_model(run_dir / "checkpoints")
    for x, y in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)), params_of(ref.state), strict=True):
        np.testing.assert_allclose(x, y, atol=2e-5, rtol=0)
