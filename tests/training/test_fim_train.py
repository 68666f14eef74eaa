"""Training with fill-in-the-middle windows: the model's vocabulary (``restore.model_vocab``), its growth by name on
``init_from`` (``restore.grow_vocab``), loading either layout, and left-to-right sampling of a FIM-capable model.
Real training of the tiny preset on the real Bach shards, a few steps."""

from dataclasses import replace
from types import SimpleNamespace

import equinox as eqx
import numpy as np
import pytest

from tchaikovsky.config import SampleConfig, preset
from tchaikovsky.data import fim
from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.generate.grammar import Grammar
from tchaikovsky.generate.sampling import generate
from tchaikovsky.training import checkpoint, loop
from tchaikovsky.training.restore import grow_vocab, model_vocab

FAST = dict(log_every=3, eval_every=100, checkpoint_every=100)  # one evaluation, at the end


@pytest.fixture(scope="module")
def conditioned(bach, tmp_path_factory):
    """The fixture chorales under two composers, in conditioned shards (their tokenizer is the fixture's)."""
    pieces = [replace(p, composer=["Johann Sebastian Bach", "Claudio Monteverdi"][i % 2], period="Baroque",
                      instrumentation="voices") for i, p in enumerate(bach.pieces)]
    cond = Conditions.build(len(bach.tok), pieces)
    return shards_lib.Shards(shards_lib.build_shards(bach.tok, pieces, tmp_path_factory.mktemp("fimc") / "shards",
                                                     conditions=cond))


@pytest.fixture(scope="module")
def fim_run(bach, tmp_path_factory):
    """The tiny preset trained 12 steps with fim_rate 0.5, in a run directory with its tokenizer: a FIM-capable
    unconditioned model, vocabulary [tokenizer][4 sentinels]."""
    run = tmp_path_factory.mktemp("fimrun") / "run"
    tok_lib.save_tokenizer(bach.tok, run / "tokenizer.json")
    assert model_vocab(bach.shards, 0.0, run) == len(bach.tok)
    vocab = model_vocab(bach.shards, 0.5, run)
    p = preset("tiny", vocab_size=vocab, fim_rate=0.5, max_steps=12, **FAST)
    result = loop.train(run, p.model, p.train, bach.shards, seed=0)
    return SimpleNamespace(run=run, model=result.state.model, result=result, preset=p)


def rows(model) -> list[np.ndarray]:
    return [np.asarray(a) for a in (model.embed.weight, model.head.weight, model.head.bias)]


def test_a_fim_trained_model_samples_left_to_right_without_sentinels(bach, fim_run):
    T, fill = len(bach.tok), fim.Fill(len(bach.tok))
    assert fim_run.model.config.vocab_size == T + 4
    used = [bach.shards.batch(s, 8, 64, fim_rate=0.5, fill=fill) for s in range(12)]
    assert any(fill.is_sentinel(b).any() for b in used)  # the run did train on reordered windows
    meta = checkpoint.read_meta(fim_run.result.checkpoint)
    assert meta["train_config"]["fim_rate"] == 0.5 and np.isfinite(fim_run.result.history[-1]["loss"])
    model, tok, _ = checkpoint.load_run_model(fim_run.run)  # the layout [tokenizer][sentinels] loads
    bos = tok_lib.special_ids(tok)["bos"]
    out = generate(model, [bos], SampleConfig(num_tokens=60), seeds=[0, 1], tok=tok)
    rules = Grammar(tok, fill=fill)
    assert all(not fill.is_sentinel(seq).any() and rules.invalid_share(seq) == 0.0 for seq in out)
    # a model that would rather write sentinels than anything else still never does, left to right (with the same
    # shapes and controls, these calls reuse one compiled program)
    keen = eqx.tree_at(lambda m: m.head.bias, model, model.head.bias.at[T:].add(100.0))
    for cfg in (SampleConfig(num_tokens=60), SampleConfig(num_tokens=60, grammar=False)):
        assert not any(fill.is_sentinel(seq).any() for seq in generate(keen, [bos], cfg, seeds=[0, 1], tok=tok))
    free = generate(keen, [bos], SampleConfig(num_tokens=60, grammar=False), seeds=[0, 1])  # no tokenizer: no ban
    assert all(fill.is_sentinel(seq[1:]).all() for seq in free)


def test_vocab_sources_map_every_id_by_name():
    old = Conditions.build(10, [{"composer": "a"}])  # tokens: 3 unknown, Composer_a
    new = old.extended([{"composer": "b", "period": "p"}])  # + Period_p, Composer_b
    f_old, f_new = fim.Fill(old.vocab_size), fim.Fill(new.vocab_size)
    unknown = {k: old.unknown_id(k) for k in ("period", "composer")}
    grown = [*range(10), 10, 11, 12, 13, unknown["period"], unknown["composer"]]
    assert fim.vocab_sources(10, new, f_new, old, f_old).tolist() == grown + [14, 15, 16, 17]  # the sentinels move
    assert fim.vocab_sources(10, new, f_new, old, None).tolist() == grown + [-1] * 4  # new sentinels: mean rows
    assert fim.vocab_sources(10, new, f_new, None, fim.Fill(10)).tolist() == [*range(10)] + [-1] * 6 + [10, 11, 12, 13]
    assert fim.vocab_sources(10, None, fim.Fill(10), None, None).tolist() == [*range(10), -1, -1, -1, -1]
    with pytest.raises(ValueError, match="never loses them"):
        fim.vocab_sources(10, new, None, old, f_old)
    with pytest.raises(ValueError, match="has condition tokens, these shards have none"):
        fim.vocab_sources(10, None, None, old, None)


def test_growth_keeps_old_rows_where_names_match(bach, trained, fim_run, conditioned):
    T, cond = len(bach.tok), conditioned.conditions
    C = len(cond.tokens)
    # (a) a model trained without FIM, fine-tuned with it: 4 rows more, every old row where it was
    cfg = replace(trained.preset.model, vocab_size=T + 4)
    meta = checkpoint.read_meta(trained.result.checkpoint)
    grown, src, note = grow_vocab(trained.model, meta, cfg, bach.shards, trained.run_dir)
    assert note == {"grown_from_vocab": T} and src["model_config"]["vocab_size"] == T + 4
    for new, old in zip(rows(grown), rows(trained.model)):
        np.testing.assert_array_equal(new[:T], old)
        np.testing.assert_allclose(new[T:], np.broadcast_to(old.mean(axis=0), new[T:].shape), atol=1e-6)
    # (b) a FIM-capable unconditioned model, fine-tuned with conditions: the sentinel rows move after them
    cfg = replace(fim_run.preset.model, vocab_size=cond.vocab_size + 4)
    grown, _, note = grow_vocab(fim_run.model, {}, cfg, conditioned, fim_run.run)
    assert note == {"grown_from_vocab": T + 4} and grown.config.vocab_size == T + C + 4
    for new, old in zip(rows(grown), rows(fim_run.model)):
        np.testing.assert_array_equal(new[:T], old[:T])
        np.testing.assert_array_equal(new[T + C:], old[T:])
        np.testing.assert_allclose(new[T:T + C], np.broadcast_to(old.mean(axis=0), new[T:T + C].shape), atol=1e-6)
    with pytest.raises(ValueError, match="never loses them"):  # dropping the sentinels is refused
        grow_vocab(fim_run.model, {}, replace(cfg, vocab_size=cond.vocab_size), conditioned, fim_run.run)
    same, _, note = grow_vocab(fim_run.model, {}, fim_run.preset.model, bach.shards, fim_run.run)
    assert note == {} and same is fim_run.model  # the layouts agree: nothing to do


def test_a_fim_capable_model_keeps_its_sentinels_in_a_conditioned_fine_tune(bach, fim_run, conditioned, tmp_path):
    cond = conditioned.conditions
    run = tmp_path / "ft"
    tok_lib.save_tokenizer(bach.tok, run / "tokenizer.json")
    cond.save(run)
    vocab = model_vocab(conditioned, 0.0, run, fim_run.run)
    assert vocab == cond.vocab_size + 4  # fim_rate 0, and still the sentinels: the model it starts from has them
    p = preset("tiny", vocab_size=vocab, max_steps=3, **FAST)
    with pytest.raises(ValueError, match=rf"has {cond.vocab_size} ids; this run needs {vocab}.*sentinels"):
        loop.train(run, replace(p.model, vocab_size=cond.vocab_size), p.train, conditioned, init_from=fim_run.run)
    result = loop.train(run, p.model, p.train, conditioned, init_from=fim_run.run)
    assert checkpoint.read_meta(result.checkpoint)["init_from"]["grown_from_vocab"] == len(bach.tok) + 4
    assert model_vocab(conditioned, 0.0, run) == vocab  # resuming keeps them too
    model, tok, _ = checkpoint.load_run_model(run)  # the layout [tokenizer][conditions][sentinels] loads
    prompt = np.asarray(cond.prefix(composer="bach") + [tok["BOS_None"]], np.int32)
    out = generate(model, prompt, SampleConfig(num_tokens=40), seeds=[0, 1], tok=tok, conditions=cond)
    assert not any(fim.Fill(cond.vocab_size).is_sentinel(seq).any() for seq in out)
    with pytest.raises(ValueError, match="comes from another run"):  # [tokenizer][sentinels] is not this run's
        checkpoint.load_run_model(run, fim_run.run / "checkpoints" / "model.eqx")
