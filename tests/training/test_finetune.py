"""What the later stages reuse: any loss (a pytree batch, frozen inputs), weights from another run (init_from),
frozen parts of the model, hooks. Real training of the tiny preset on real Bach shards, 8 simulated CPU devices."""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tchaikovsky.config import preset
from tchaikovsky.data.fim import Fill
from tchaikovsky.model import GPT, build
from tchaikovsky.training import checkpoint, loop, state as train_state, step as train_step
from tchaikovsky.training.losses import next_token_loss, token_losses


def arrays(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def same(a, b) -> bool:
    xs, ys = arrays(a), arrays(b)
    return len(xs) == len(ys) and all(np.array_equal(x, y) for x, y in zip(xs, ys))


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def numbers(rows) -> list[dict]:
    """History rows without the wall-clock speed: what an exact resume must reproduce."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


@pytest.fixture(scope="module")
def tiny(bach):
    return preset("tiny", vocab_size=len(bach.tok), max_steps=20, log_every=5, eval_every=10, checkpoint_every=10)


# ---------------------------------------------------------------------------------------------------- losses


def smoothed_loss(model, tokens, dtype, pad_id, eps=0.1):
    """Label-smoothed next-token loss (a second loss under the same contract), reporting the plain NLL too."""
    logits = jax.vmap(model)(tokens[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    targets = tokens[:, 1:]
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    per_token = (1 - eps) * nll - eps * logp.mean(axis=-1)
    mask = (targets != pad_id).astype(jnp.float32)
    mean = lambda x: (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)  # noqa: E731
    return mean(per_token), {"nll": mean(nll)}


def test_a_second_loss_trains_for_real_and_logs_its_metrics(bach, tiny, tmp_path):
    result = loop.train(tmp_path, tiny.model, tiny.train, bach.shards, loss_fn=smoothed_loss)
    rows = history(tmp_path)
    assert rows == result.history and [r["step"] for r in rows] == [5, 10, 15, 20]
    assert all("nll" in r and r["loss"] > r["nll"] for r in rows)  # smoothing adds to the plain NLL
    assert rows[-1]["nll"] < rows[0]["nll"] - 1.0 and rows[-1]["eval_loss"] < rows[1]["eval_loss"]
    plain = loop.train(tmp_path / "plain", tiny.model, tiny.train, bach.shards).history
    assert plain[-1]["loss"] != pytest.approx(rows[-1]["loss"], rel=1e-3)  # the loss really is another one


class WeightedAgainstReference(eqx.Module):
    """Per-sequence weighted next-token loss over a dict batch, with a frozen reference model (as DPO will have):
    reports how far the model's NLL has moved below the reference's."""

    reference: GPT

    def __call__(self, model, batch, dtype, pad_id):
        nll, targets = token_losses(model, batch["tokens"], dtype)
        ref_nll, _ = token_losses(self.reference, batch["tokens"], dtype)
        mask = (targets != pad_id) * batch["weight"][:, None]
        mean = lambda x: (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)  # noqa: E731
        return mean(nll), {"gain_over_reference": mean(jax.lax.stop_gradient(ref_nll) - nll)}


def test_a_loss_holding_a_frozen_model_and_a_pytree_batch(bach, small_config):
    mesh = train_state.make_mesh()
    tc = preset("tiny", vocab_size=len(bach.tok)).train
    model = build(small_config, jax.random.key(0))
    optim = train_state.make_optimizer(tc, model)
    state = train_state.TrainState.create(model, optim, 0)
    shardings = train_state.state_shardings(state, mesh, False)
    state = eqx.filter_shard(state, shardings)
    reference = eqx.filter_shard(build(small_config, jax.random.key(0)), NamedSharding(mesh, P()))
    loss = WeightedAgainstReference(reference)
    batch_sharding = NamedSharding(mesh, P(None, "data"))
    step = train_step.make_train_step(optim, jnp.float32, bach.shards.pad_id, shardings, batch_sharding, loss_fn=loss)

    def batch(i, garbage=False):
        tokens = bach.shards.batch(i, 16, tc.seq_len, seed=0).reshape(2, 8, tc.seq_len + 1)
        weight = np.tile(np.array([1.0] * 6 + [0.0] * 2, np.float32), (2, 1))  # the last 2 rows of each micro: 0
        if garbage:  # what zero-weight rows hold does not matter
            tokens[:, 6:] = np.random.default_rng(i).integers(0, len(bach.tok), tokens[:, 6:].shape)
        return jax.device_put({"tokens": tokens, "weight": weight}, batch_sharding)

    gains = []
    for i in range(8):
        twin, _ = step(jax.tree.map(jnp.copy, state), batch(i, garbage=True))
        state, metrics = step(state, batch(i))
        assert same(twin.model, state.model)
        gains.append(float(metrics["gain_over_reference"]))
    assert gains[0] == pytest.approx(0.0, abs=1e-6) and gains[-1] > 0.3
    assert all(a < b for a, b in zip(gains[1:], gains[2:]))  # each update (after the lr-0 first) gains more  # the model moves below the reference
    assert same(loss.reference, build(small_config, jax.random.key(0)))  # frozen, and not donated (still readable)


def test_grad_norm_is_the_norm_of_the_averaged_gradient(bach, small_config):
    mesh = train_state.make_mesh(jax.devices()[:1])
    tc = preset("tiny", vocab_size=len(bach.tok), batch_size=8, accum_steps=2).train
    model = build(small_config, jax.random.key(0))
    optim = train_state.make_optimizer(tc, model)
    state = train_state.TrainState.create(model, optim, 0)
    shardings = train_state.state_shardings(state, mesh, False)
    step = train_step.make_train_step(optim, jnp.float32, bach.shards.pad_id, shardings, NamedSharding(mesh, P()))
    tokens = bach.shards.batch(0, 8, tc.seq_len, seed=0).reshape(2, 4, tc.seq_len + 1)
    grad = eqx.filter_jit(eqx.filter_grad(lambda m, t: next_token_loss(m, t, jnp.float32, bach.shards.pad_id)[0]))
    grads = [grad(model, t) for t in jnp.asarray(tokens)]
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    want = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(mean)))
    _, metrics = step(state, jnp.asarray(tokens))
    assert float(metrics["grad_norm"]) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------------------------------- freezing


def test_frozen_weights_stay_bit_identical(bach, tiny, tmp_path):
    head_and_embed = train_state.only(lambda m: (m.head, m.embed))
    result = loop.train(tmp_path, tiny.model, tiny.train, bach.shards, trainable=head_and_embed)
    initial = build(tiny.model, jax.random.key(0))  # what setup() starts from with seed 0
    trained = result.state.model
    for part in ("pos", "blocks", "norm"):
        assert same(getattr(trained, part), getattr(initial, part)), part
    for part in ("head", "embed"):
        for x, y in zip(arrays(getattr(trained, part)), arrays(getattr(initial, part))):
            assert not np.array_equal(x, y), part
    rows = history(tmp_path)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5  # the head and embeddings alone still learn
    adam = result.state.opt_state[1][0]
    assert len(jax.tree.leaves(adam.mu)) == 3  # moments only for head.weight, head.bias, embed.weight
    meta = checkpoint.read_meta(result.checkpoint)
    assert ".blocks.qkv.weight" in meta["frozen"] and ".head.weight" not in meta["frozen"]

    with pytest.raises(ValueError, match="froze"):  # resuming must freeze the same arrays
        loop.train(tmp_path, tiny.model, tiny.train, bach.shards)
    with pytest.raises(ValueError, match="nothing would train"):
        loop.train(tmp_path / "none", tiny.model, tiny.train, bach.shards, trainable=False)


# ---------------------------------------------------------------------------------------------------- init_from


def test_init_from_accepts_a_run_its_checkpoints_a_step_or_weights(trained):
    ckpts = trained.run_dir / "checkpoints"
    for source in (trained.run_dir, ckpts, checkpoint.latest(ckpts), ckpts / "model.eqx"):
        model, meta = checkpoint.load_model(source)
        assert same(model, trained.model) and meta["step"] == 60, source


def test_init_from_takes_weights_and_starts_everything_else_fresh(bach, trained, tiny, tmp_path):
    run = tmp_path / "finetune"
    full = loop.train(run, tiny.model, tiny.train, bach.shards, seed=1, init_from=trained.run_dir)
    fresh = loop.train(tmp_path / "fresh", tiny.model, tiny.train, bach.shards, seed=1)
    rows, base = history(run), fresh.history
    assert rows[0]["loss"] < base[0]["loss"] - 1.0  # it starts where the other run ended
    assert rows[-1]["eval_loss"] < base[-1]["eval_loss"]
    assert [r["lr"] for r in rows] == [r["lr"] for r in base]  # a fresh schedule: warmup from step 0
    meta = checkpoint.read_meta(full.checkpoint)
    assert meta["init_from"] == {"path": str(trained.run_dir.resolve()), "step": 60} and meta["step"] == 20

    # interrupted and resumed, the fine-tune continues from its own checkpoint, not from init_from again: the
    # resume names another run as init_from, and the result is still the uninterrupted fine-tune, exactly
    split = tmp_path / "split"
    loop.train(split, tiny.model, tiny.train, bach.shards, seed=1, init_from=trained.run_dir, until_step=10)
    again = loop.train(split, tiny.model, tiny.train, bach.shards, seed=1, init_from=tmp_path / "fresh")
    assert numbers(history(split)) == numbers(rows)
    assert same(again.state.model, full.state.model)
    assert checkpoint.read_meta(again.checkpoint)["init_from"]["path"] == str(trained.run_dir.resolve())


def test_init_from_another_configuration_says_what_differs(bach, trained, tiny, tmp_path):
    other = type(tiny.model)(**{**tiny.model.to_dict(), "n_heads": 4})  # same shapes, another model
    with pytest.raises(ValueError, match="n_heads.*2, 4"):
        loop.train(tmp_path / "a", other, tiny.train, bach.shards, init_from=trained.run_dir)
    with pytest.raises(FileNotFoundError, match="no model weights"):
        loop.train(tmp_path / "b", tiny.model, tiny.train, bach.shards, init_from=tmp_path / "nothing.eqx")


# ---------------------------------------------------------------------------------------------------- hooks


def test_hooks_get_the_record_and_state_every_n_steps(bach, tiny, tmp_path):
    calls = []

    def hook(name, **kw):
        return loop.Hook(lambda r, s: calls.append((name, r["step"], int(s.step), r["loss"], "eval_loss" in r)), **kw)

    hooks = [hook("a", every=10), hook("b"), hook("c", every=15, at_end=True)]  # c: at 15, and at the last step
    result = loop.train(tmp_path, tiny.model, tiny.train, bach.shards, hooks=hooks)
    assert tiny.train.max_steps == 20 and tiny.train.log_every == 5
    losses = {r["step"]: r["loss"] for r in result.history}
    want = [("b", 5), ("a", 10), ("b", 10), ("b", 15), ("c", 15), ("a", 20), ("b", 20), ("c", 20)]
    assert calls == [(name, s, s, losses[s], s % 10 == 0) for name, s in want]  # evaluated every 10 and at the end

    calls.clear()  # a run cut short (until_step) ends with a record at its last step: at_end hooks run there too
    loop.train(tmp_path / "short", tiny.model, tiny.train, bach.shards, hooks=hooks, until_step=12)
    assert [(c[0], c[1], c[4]) for c in calls] == [("b", 5, False), ("a", 10, True), ("b", 10, True), ("b", 12, True),
                                                   ("c", 12, True)]


# ---------------------------------------------------------------------------------------------------- conditions


@pytest.fixture(scope="module")
def conditioned(bach, tmp_path_factory):
    """The fixture chorales under two composers, in shards that start every piece with its condition tokens."""
    from dataclasses import replace

    from tchaikovsky.data import shards as shards_lib
    from tchaikovsky.data.conditions import Conditions

    pieces = [replace(p, composer=["Johann Sebastian Bach", "Claudio Monteverdi"][i % 2], instrumentation="voices",
                      period=["Baroque", "Renaissance"][i % 2]) for i, p in enumerate(bach.pieces)]
    cond = Conditions.build(len(bach.tok), pieces)
    out = shards_lib.build_shards(bach.tok, pieces, tmp_path_factory.mktemp("conditioned") / "shards",
                                  conditions=cond)
    return shards_lib.Shards(out)


def test_a_conditioned_fine_tune_grows_the_vocabulary_and_resumes_exactly(bach, trained, conditioned, tmp_path):
    cond = conditioned.conditions
    p = preset("tiny", vocab_size=cond.vocab_size, max_steps=20, log_every=5, eval_every=10, checkpoint_every=10,
               condition_dropout=0.3, unconditional_rate=0.2)
    full = loop.train(tmp_path / "ft", p.model, p.train, conditioned, seed=2, init_from=trained.run_dir)
    fresh = loop.train(tmp_path / "fresh", p.model, p.train, conditioned, seed=2)
    rows = history(tmp_path / "ft")
    assert rows[0]["loss"] < fresh.history[0]["loss"] - 1.0  # the pretrained weights came along
    meta = checkpoint.read_meta(full.checkpoint)
    assert meta["init_from"]["grown_from_vocab"] == len(bach.tok)
    assert full.state.model.embed.weight.shape == (cond.vocab_size, p.model.d_model)
    # interrupted and resumed: the same losses (condition dropout included) and the same weights
    split = tmp_path / "split"
    loop.train(split, p.model, p.train, conditioned, seed=2, init_from=trained.run_dir, until_step=10)
    again = loop.train(split, p.model, p.train, conditioned, seed=2, init_from=trained.run_dir)
    assert numbers(history(split)) == numbers(rows)
    assert same(again.state.model, full.state.model)


def test_the_training_batch_carries_the_dropout_settings(conditioned):
    """``global_batch`` hands TrainConfig's condition settings to the shards: the rows trained on are the shards'
    rows for them (whole windows asked for nothing with ``unconditional_rate``)."""
    tc = preset("tiny", vocab_size=conditioned.vocab_size, batch_size=16, unconditional_rate=0.5,
                condition_dropout=0.1).train
    sharding = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)), P())
    got = np.asarray(loop.global_batch(conditioned, tc, 3, seed=4, sharding=sharding)).reshape(16, -1)
    want = conditioned.batch(3, 16, tc.seq_len, seed=4, unconditional_rate=0.5, condition_dropout=0.1)
    assert (got == want).all() and (got != conditioned.batch(3, 16, tc.seq_len, seed=4, condition_dropout=0.1)).any()
    # and the fill-in-the-middle settings: the share of windows reordered, and of those in SPM order
    fill = Fill(conditioned.vocab_size)
    tc = dataclasses.replace(tc, fim_rate=1.0, fim_spm=0.5)
    got = np.asarray(loop.global_batch(conditioned, tc, 3, seed=4, sharding=sharding, fill=fill)).reshape(16, -1)
    want = conditioned.batch(3, 16, tc.seq_len, seed=4, unconditional_rate=0.5, condition_dropout=0.1, fim_rate=1.0,
                             fim_spm=0.5, fill=fill)
    assert (got == want).all() and (got == fill.suffix).any() and (got == fill.prefix).any()


def test_condition_rows_learn_at_their_own_rate(conditioned, tmp_path):
    """``condition_lr`` scales the optimizer's step on the condition tokens' rows of the embedding and the output
    layer, and only there; 0 freezes them (weight decay included) through ``loop.train``."""
    cond = conditioned.conditions
    rows = slice(cond.base, cond.vocab_size)
    p = preset("tiny", vocab_size=cond.vocab_size, max_steps=6, log_every=3, eval_every=3, checkpoint_every=3)
    model = build(p.model, jax.random.key(1))
    params = eqx.filter(model, eqx.is_inexact_array)
    grads = jax.tree.map(lambda x: jnp.ones_like(x) * 1e-3, params)
    steps = {}
    for factor in (1.0, 3.0):
        optim = train_state.make_optimizer(dataclasses.replace(p.train, condition_lr=factor), model,
                                           condition_rows=(cond.base, cond.vocab_size),
                                           schedule=lambda _: 1e-2)
        steps[factor], _ = optim.update(grads, optim.init(params), params)
    for where in (lambda m: m.embed.weight, lambda m: m.head.weight, lambda m: m.head.bias):
        one, three = np.asarray(where(steps[1.0])), np.asarray(where(steps[3.0]))
        assert np.abs(one[rows]).min() > 0
        np.testing.assert_allclose(three[rows], 3 * one[rows], rtol=1e-6)
        assert np.array_equal(np.delete(three, np.r_[rows], axis=0), np.delete(one, np.r_[rows], axis=0))
    assert same(steps[1.0].blocks, steps[3.0].blocks)

    frozen = loop.train(tmp_path, p.model, dataclasses.replace(p.train, condition_lr=0.0), conditioned, seed=1)
    for where in (lambda m: m.embed.weight, lambda m: m.head.weight):
        after, before = np.asarray(where(frozen.state.model)), np.asarray(where(model))
        assert np.array_equal(after[rows], before[rows]) and not np.array_equal(after[: cond.base], before[: cond.base])
    assert checkpoint.read_meta(frozen.checkpoint)["train_config"]["condition_lr"] == 0.0
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ValueError, match="condition_lr"):
            dataclasses.replace(p.train, condition_lr=bad)


def test_resize_vocab_keeps_old_logits_and_copies_source_rows(trained):
    from tchaikovsky.model import resize_vocab

    model, V = trained.model, trained.model.config.vocab_size
    grown = resize_vocab(model, V + 3, [5, -1, 7])
    assert grown.config.vocab_size == V + 3 and grown.config.d_model == model.config.d_model
    tokens = jnp.arange(32) % V
    np.testing.assert_allclose(grown(tokens)[:, :V], model(tokens), rtol=1e-6, atol=1e-6)
    emb, head = np.asarray(grown.embed.weight), np.asarray(grown.head.weight)
    np.testing.assert_array_equal(emb[V], emb[5])
    np.testing.assert_array_equal(head[V + 2], head[7])
    np.testing.assert_allclose(emb[V + 1], np.asarray(model.embed.weight).mean(axis=0), atol=1e-7)
    with pytest.raises(ValueError, match="one source id"):
        resize_vocab(model, V + 2, [0])
    with pytest.raises(ValueError, match="one source id"):
        resize_vocab(model, V + 1, [V])
