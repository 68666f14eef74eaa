"""Checkpoints: atomic saves that survive interruption, retention, weight export, clear errors."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tchaikovsky.training import checkpoint
from tchaikovsky.config import TrainConfig
from tchaikovsky.model import GPT
from tchaikovsky.training.state import TrainState, make_optimizer


def make_state(config, seed=0, step=0) -> TrainState:
    model = GPT(config, key=jax.random.key(seed))
    state = TrainState.create(model, make_optimizer(TrainConfig(), model), seed)
    return eqx.tree_at(lambda s: s.step, state, jnp.asarray(step, jnp.int32))


def arrays(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def same(a, b) -> bool:
    xs, ys = arrays(a), arrays(b)
    return len(xs) == len(ys) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(xs, ys))


@pytest.fixture(scope="module")
def states(small_config):
    """Two distinguishable states of the same configuration (different weights) at steps 10 and 20."""
    return make_state(small_config, seed=0, step=10), make_state(small_config, seed=1, step=20)


def meta_for(config) -> dict:
    return {"model_config": config.to_dict(), "tokenizer_hash": "abc", "seed": 0}


def test_save_and_load_round_trip(states, small_config, tmp_path):
    a, _ = states
    path = checkpoint.save(tmp_path, a, meta_for(small_config))
    assert path == tmp_path / "step_00000010" and checkpoint.latest(tmp_path) == path
    assert checkpoint.read_meta(path)["step"] == 10
    back = checkpoint.load(path, make_state(small_config, seed=7))
    assert int(back.step) == 10 and same(back, a)
    assert not same(back, make_state(small_config, seed=7))


def test_interrupted_save_leaves_previous_checkpoint(states, small_config, tmp_path, monkeypatch):
    a, b = states
    good = checkpoint.save(tmp_path, a, meta_for(small_config))

    def disk_full(path_or_file, tree, *args, **kwargs):  # writes part of the file, then fails like a full disk
        if hasattr(path_or_file, "write"):
            path_or_file.write(b"\x93NUMPY partial")
        else:
            with open(path_or_file, "wb") as f:
                f.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(eqx, "tree_serialise_leaves", disk_full)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(tmp_path, b, meta_for(small_config))
    monkeypatch.undo()

    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers and all(not p.name.startswith("step_") for p in leftovers)
    assert checkpoint.list_checkpoints(tmp_path) == [good]
    assert checkpoint.latest(tmp_path) == good
    assert same(checkpoint.load(good, make_state(small_config, seed=7)), a)
    model, meta = checkpoint.load_model(tmp_path)  # the exported weights are still the previous ones too
    assert meta["step"] == 10 and same(model, a.model)

    # a later save goes through and becomes the latest
    again = checkpoint.save(tmp_path, b, meta_for(small_config))
    assert checkpoint.latest(tmp_path) == again == tmp_path / "step_00000020"
    assert same(checkpoint.load(again, make_state(small_config, seed=7)), b)


def test_leftovers_of_a_killed_save_are_ignored(states, small_config, tmp_path):
    a, _ = states
    good = checkpoint.save(tmp_path, a, meta_for(small_config))
    # what a process killed mid-save leaves: a temp dir (newer step) with a truncated state and no meta,
    killed = tmp_path / ".tmp-step_00000030-99999"
    killed.mkdir()
    (killed / "opt_state.eqx").write_bytes((good / "opt_state.eqx").read_bytes()[:100])
    # a half-copied step directory without meta.json, and a stray temp file of the model export
    (tmp_path / "step_00000040").mkdir()
    (tmp_path / "step_00000040" / "state.eqx").write_bytes(b"")
    (tmp_path / ".tmp-model.eqx-99999").write_bytes(b"{")
    assert checkpoint.list_checkpoints(tmp_path) == [good]
    assert checkpoint.latest(tmp_path) == good
    assert same(checkpoint.load(checkpoint.latest(tmp_path), make_state(small_config, seed=7)), a)
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        checkpoint.read_meta(tmp_path / "step_00000040")


def test_keep_retains_only_the_newest(small_config, tmp_path):
    base = make_state(small_config)
    for step in (5, 10, 15, 20, 100):
        checkpoint.save(tmp_path, eqx.tree_at(lambda s: s.step, base, jnp.asarray(step, jnp.int32)),
                        meta_for(small_config), keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000015", "step_00000020",
                                                                      "step_00000100"]  # numeric order
    checkpoint.save(tmp_path, eqx.tree_at(lambda s: s.step, base, jnp.asarray(101, jnp.int32)),
                    meta_for(small_config), keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000101"]
    # re-saving the same step replaces it in place
    checkpoint.save(tmp_path, eqx.tree_at(lambda s: s.step, base, jnp.asarray(101, jnp.int32)),
                    meta_for(small_config), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000101"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_export_and_load_model_give_identical_logits(states, small_config, tmp_path, bach):
    _, b = states
    meta = {**meta_for(small_config), "note": "exported"}
    path = checkpoint.export_model(tmp_path / "model.eqx", b.model, meta)
    model, back_meta = checkpoint.load_model(path)
    assert back_meta == meta and model.config == small_config
    tokens = jnp.asarray(bach.shards.piece_ids("val", 0)[: small_config.context])
    forward = eqx.filter_jit(lambda m, t: m(t))
    np.testing.assert_array_equal(forward(model, tokens), forward(b.model, tokens))
    # the same weights come back from a checkpoint directory, a step directory and the export
    ckpts = tmp_path / "checkpoints"
    step_dir = checkpoint.save(ckpts, b, meta_for(small_config))
    assert same(checkpoint.load_model(ckpts)[0], b.model)
    assert same(checkpoint.load_model(step_dir)[0], b.model)


def test_load_model_of_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model weights"):
        checkpoint.load_model(tmp_path / "nothing" / "model.eqx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        checkpoint.load_model(tmp_path / "empty")


def test_loading_into_another_configuration_is_a_value_error(states, small_config, tmp_path):
    a, _ = states
    path = checkpoint.save(tmp_path, a, meta_for(small_config))
    for change in ({"d_model": 32}, {"vocab_size": small_config.vocab_size + 8}, {"n_layers": 3}):
        other = dataclasses.replace(small_config, **change)
        like = eqx.filter_eval_shape(make_state, other)  # the structure alone: no weights materialised
        with pytest.raises(ValueError, match="does not match this model configuration"):
            checkpoint.load(path, like)


def test_meta_records_what_rebuilds_the_model(states, small_config, tmp_path):
    a, _ = states
    path = checkpoint.save(tmp_path, a, {**meta_for(small_config), "preset": "test"})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["model_config"] == small_config.to_dict() and meta["preset"] == "test" and meta["step"] == 10
    assert type(small_config)(**meta["model_config"]) == small_config


@pytest.fixture
def no_optimizer(monkeypatch):
    """Building an optimizer fails: loading weights must not need one."""
    from tchaikovsky.training import state as train_state

    def fail(*args, **kwargs):
        raise AssertionError("loading weights built an optimizer")

    monkeypatch.setattr(train_state, "make_optimizer", fail)


def test_step_directory_holds_named_subtrees_and_the_weights_load_alone(states, small_config, tmp_path,
                                                                        no_optimizer):
    _, b = states
    path = checkpoint.save(tmp_path, b, meta_for(small_config))
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.eqx", "opt_state.eqx", "rest.eqx"]
    # the step's weights are a model.eqx of their own, byte-identical to the run's latest export
    assert (path / "model.eqx").read_bytes() == (tmp_path / "model.eqx").read_bytes()
    for source in (path, path / "model.eqx", tmp_path):  # a step directory, its weights, checkpoints/
        model, meta = checkpoint.load_model(source)
        assert same(model, b.model) and meta["step"] == 20


def test_checkpoint_module_imports_nothing_from_the_training_layer():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(checkpoint))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("tchaikovsky.training")], imported


def write_old_layout(ckpt_dir, state, meta):
    """A checkpoint as the code before named subtrees wrote it: the whole TrainState in step_*/state.eqx."""
    step = int(state.step)
    path = ckpt_dir / f"step_{step:08d}"
    path.mkdir(parents=True)
    eqx.tree_serialise_leaves(path / "state.eqx", state)
    (path / "meta.json").write_text(json.dumps({**meta, "step": step}))
    return path


def test_old_layout_checkpoint_still_loads(states, small_config, tmp_path, request):
    a, _ = states
    path = write_old_layout(tmp_path, a, meta_for(small_config))
    assert checkpoint.latest(tmp_path) == path
    back = checkpoint.load(path, make_state(small_config, seed=7))  # for resume (the loop's test resumes one)
    assert int(back.step) == 10 and same(back, a)
    request.getfixturevalue("no_optimizer")
    model, meta = checkpoint.load_model(path)  # weights alone, without building an optimizer
    assert same(model, a.model) and meta["step"] == 10


def test_frozen_arrays_change_the_state_structure_and_mismatches_are_value_errors(small_config, tmp_path):
    from tchaikovsky.training.state import only

    model = GPT(small_config, key=jax.random.key(0))
    head_only = only(lambda m: m.head)
    frozen = TrainState.create(model, make_optimizer(TrainConfig(), model, trainable=head_only), 0, head_only)
    assert frozen.frozen() and ".head.weight" not in frozen.frozen() and ".embed.weight" in frozen.frozen()
    path = checkpoint.save(tmp_path, frozen, meta_for(small_config))
    like = TrainState.create(model, make_optimizer(TrainConfig(), model, trainable=head_only), 1, head_only)
    assert same(checkpoint.load(path, like), frozen)
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.load(path, make_state(small_config))


def test_cpu_fast_paths_is_not_saved_and_old_configs_load_with_it_on(states, small_config, tmp_path):
    """``ModelConfig.cpu_fast_paths`` says how to compute on CPU, not what: it is left out of the saved config, so
    checkpoints written before the field existed and after look alike, a saved config rebuilds the model with the
    default (on), and a checkpoint restores into a model built with the field off."""
    a, _ = states
    off = dataclasses.replace(small_config, cpu_fast_paths=False)
    assert small_config.cpu_fast_paths and "cpu_fast_paths" not in small_config.to_dict()
    assert off.to_dict() == small_config.to_dict() and off != small_config  # another compiled program, same weights
    path = checkpoint.export_model(tmp_path / "model.eqx", a.model, meta_for(off))
    model, meta = checkpoint.load_model(path)
    assert "cpu_fast_paths" not in meta["model_config"] and model.config == small_config and same(model, a.model)
    step_dir = checkpoint.save(tmp_path / "checkpoints", a, meta_for(small_config))
    back = checkpoint.load(step_dir, make_state(off, seed=7))
    assert back.model.config == off and same(back, a)


def test_a_run_resumes_with_cpu_fast_paths_switched(bach, tmp_path):
    """A run whose checkpoint was written with the fast paths on resumes with them off (and the resume compares
    the saved configuration with the new one without refusing)."""
    from tchaikovsky.config import preset
    from tchaikovsky.training.loop import train

    p = preset("tiny", vocab_size=len(bach.tok), max_steps=4, eval_every=4, log_every=2, checkpoint_every=2)
    first = train(tmp_path, p.model, p.train, bach.shards, seed=1, until_step=2)
    assert int(first.state.step) == 2
    off = dataclasses.replace(p.model, cpu_fast_paths=False)
    second = train(tmp_path, off, p.train, bach.shards, seed=1, resume=True)
    assert int(second.state.step) == 4 and second.state.model.config == off
    assert [r["step"] for r in second.history] == [2, 4]
