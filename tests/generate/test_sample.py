"""Sampling: the logit filters, seeds and batching, the KV-cached sliding window, and music from a trained model."""

import dataclasses
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from symusic import Score

from tchaikovsky.config import SampleConfig
from tchaikovsky.data import tokenizer
from tchaikovsky.generate.sampling import (
    NEG_INF, filter_logits, generate, kept_prompt, sample_token, sample_uniform,
)


def kept(logits, **kw) -> set[int]:
    out = np.asarray(filter_logits(jnp.asarray(logits, jnp.float32), kw.pop("temperature", 1.0), **kw))
    return {int(i) for i in np.flatnonzero(out > NEG_INF / 2)}


# probabilities 0.05, 0.5, 0.15, 0.3: sorted 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
PROBS = np.array([0.05, 0.5, 0.15, 0.3])
LOGITS = np.log(PROBS) + 1.7  # an offset changes nothing


# ---------------------------------------------------------------------------------------------------- filters


def test_top_k():
    assert kept(LOGITS, top_k=1) == {1}
    assert kept(LOGITS, top_k=2) == {1, 3}
    assert kept(LOGITS, top_k=3) == {1, 3, 2}
    assert kept(LOGITS, top_k=0) == kept(LOGITS, top_k=99) == {0, 1, 2, 3}
    assert kept([1.0, 3.0, 3.0, 0.0], top_k=1) == {1, 2}  # ties at the threshold are kept


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    assert kept(LOGITS, top_p=0.3) == {1}  # 0.5 already reaches 0.3
    assert kept(LOGITS, top_p=0.6) == {1, 3}  # 0.5 < 0.6 <= 0.8
    assert kept(LOGITS, top_p=0.79) == {1, 3}
    assert kept(LOGITS, top_p=0.81) == {1, 3, 2}  # 0.8 < 0.81 <= 0.95
    assert kept(LOGITS, top_p=0.96) == {0, 1, 2, 3}
    assert kept(LOGITS, top_p=0.0) == {1}  # never empty


def test_top_p_of_one_is_off_even_for_peaked_distributions():
    peaked = [20.0, 0.0, 0.0, -5.0, -20.0]  # the tail's mass is below float resolution next to the peak
    assert kept(peaked) == kept(peaked, top_p=1.0) == {0, 1, 2, 3, 4}


def test_min_p_is_relative_to_the_top_token():
    assert kept(LOGITS, min_p=0.5) == {1, 3}  # threshold 0.25
    assert kept(LOGITS, min_p=0.2) == {1, 3, 2}  # threshold 0.1
    assert kept(LOGITS, min_p=0.05) == {0, 1, 2, 3}
    assert kept(LOGITS, min_p=0.0) == {0, 1, 2, 3}


def test_min_p_of_one_keeps_the_top_tokens():
    assert kept([3.0, 1.0, 3.0, 0.5, 2.9], min_p=1.0) == {0, 2}
    rng = np.random.default_rng(0)
    for _ in range(20):  # the top token survives whatever order the softmax sums in
        logits = rng.normal(size=50).astype(np.float32) * 3
        assert kept(logits, min_p=1.0) == {int(np.argmax(logits))}


def test_filters_combine_as_an_intersection():
    assert kept(LOGITS, top_k=3, top_p=0.9, min_p=0.2) == {1, 3, 2}
    assert kept(LOGITS, top_k=3, top_p=0.6, min_p=0.2) == {1, 3}
    assert kept(LOGITS, top_k=1, top_p=0.96, min_p=0.05) == {1}
    assert kept(LOGITS, top_k=3, top_p=0.96, min_p=0.5) == {1, 3}


def test_temperature_scales_before_filtering():
    out = np.asarray(filter_logits(jnp.asarray(LOGITS, jnp.float32), 2.0))
    np.testing.assert_allclose(out, LOGITS / 2.0, rtol=1e-6)
    # at temperature 2 the distribution flattens: 0.5 alone no longer reaches 0.4 ...
    assert kept(LOGITS, top_p=0.4) == {1}
    assert kept(LOGITS, top_p=0.4, temperature=2.0) == {1, 3}
    # ... and at a low temperature the top token alone does
    assert kept(LOGITS, top_p=0.9, temperature=0.2) == {1}


def test_temperature_zero_is_greedy():
    logits = jnp.asarray([0.1, 2.0, 1.99, -3.0])
    keys = jax.random.split(jax.random.key(0), 64)
    draw = jax.jit(jax.vmap(sample_token, in_axes=(None, 0, None, None, None, None)))
    assert set(np.asarray(draw(logits, keys, 0.0, 0, 1.0, 0.0)).tolist()) == {1}
    assert set(np.asarray(draw(logits, keys, 0.0, 3, 0.5, 0.5)).tolist()) == {1}  # filters cannot change it
    assert len(set(np.asarray(draw(logits, keys, 1.0, 0, 1.0, 0.0)).tolist())) > 1  # while sampling does vary


def test_sampling_follows_the_filtered_distribution():
    keys = jax.random.split(jax.random.key(1), 20_000)
    draw = jax.jit(jax.vmap(lambda k, top_k: sample_token(jnp.asarray(LOGITS), k, 1.0, top_k, 1.0, 0.0),
                            in_axes=(0, None)))
    counts = np.bincount(np.asarray(draw(keys, 0)), minlength=4) / len(keys)
    np.testing.assert_allclose(counts, PROBS, atol=0.015)
    counts = np.bincount(np.asarray(draw(keys, 2)), minlength=4) / len(keys)
    np.testing.assert_allclose(counts, [0, 0.5 / 0.8, 0, 0.3 / 0.8], atol=0.015)


def test_inverse_cdf_draws_only_kept_tokens_even_at_the_ends_of_the_unit_interval():
    logits = jnp.asarray([0.3, -1.0, 2.0, 2.0, -4.0, 0.1, 1.5, -0.2])
    draw = jax.jit(jax.vmap(sample_uniform, in_axes=(None, 0, None, None, None, None)))
    us = jnp.concatenate([jnp.asarray([0.0, 1e-9, 0.5, 1 - 1e-7, np.nextafter(np.float32(1), np.float32(0))]),
                          jnp.linspace(0, 1, 4001, endpoint=False)])
    for top_k, top_p, min_p in [(3, 1.0, 0.0), (0, 0.5, 0.0), (0, 1.0, 0.4), (2, 0.9, 0.1), (0, 1.0, 0.0)]:
        allowed = kept(np.asarray(logits), top_k=top_k, top_p=top_p, min_p=min_p)
        got = set(np.asarray(draw(logits, us, 1.0, top_k, top_p, min_p)).tolist())
        assert got == allowed, (top_k, top_p, min_p)  # every kept token is reachable, nothing else
    # u near 1 reaches down to the first kept token, u = 0 the last: the ends of the cumulative sum
    assert int(sample_uniform(logits, 1 - 1e-7, 1.0, 3)) == 2 and int(sample_uniform(logits, 0.0, 1.0, 3)) == 6


# ---------------------------------------------------------------------------------------------------- generate


def cfg(num_tokens: int, **kw) -> SampleConfig:
    """A config without the tokenizer's grammar (these tests pass no tokenizer unless they say so)."""
    return SampleConfig(num_tokens=num_tokens, grammar=kw.pop("grammar", False), **kw)


@pytest.fixture(scope="module")
def model(trained):
    return trained.model


@pytest.fixture(scope="module")
def prompt(bach) -> np.ndarray:
    return bach.shards.piece_ids("val", 0)[:10]


def test_same_seed_same_sequence_different_seeds_differ(model, prompt):
    a = generate(model, prompt, cfg(40), seeds=1, temperatures=1.0)[0]
    b = generate(model, prompt, cfg(40), seeds=1, temperatures=1.0)[0]
    c = generate(model, prompt, cfg(40), seeds=2, temperatures=1.0)[0]
    assert len(a) == len(prompt) + 40
    np.testing.assert_array_equal(a[: len(prompt)], prompt)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_longer_run_extends_a_shorter_one(model, prompt):
    short = generate(model, prompt, cfg(20), seeds=5)[0]
    long = generate(model, prompt, cfg(300), seeds=5)[0]  # past the sampler's first block of 256 uniforms, and slides
    np.testing.assert_array_equal(long[: len(short)], short)


def test_batched_generation_is_one_sequence_per_seed_temperature_pair(model, prompt):
    seeds, temps = [0, 0, 1, 1], [0.5, 1.2, 0.5, 1.2]
    batch = generate(model, prompt, cfg(40), seeds=seeds, temperatures=temps)
    assert len(batch) == 4
    for s, t, seq in zip(seeds, temps, batch):
        np.testing.assert_array_equal(seq, generate(model, prompt, cfg(40), seeds=s, temperatures=t)[0])
    assert len({tuple(seq) for seq in batch}) == 4
    # numpy broadcasting makes a grid: 2 seeds (column) x 2 temperatures (row)
    grid = generate(model, prompt, cfg(40), seeds=np.array([[0], [1]]), temperatures=[0.5, 1.2])
    for seq, want in zip(grid, batch):
        np.testing.assert_array_equal(seq, want)


def reference_greedy(model, prompt, num_tokens, keep) -> np.ndarray:
    """No cache: the full causal forward over the current window for every token, with the sampler's slide rule
    (logits from the current window; if it is full keep its last ``keep`` tokens; append the new token)."""
    C = model.config.context
    forward = eqx.filter_jit(lambda m, w: m(w))
    window, new = list(prompt[-C:]), []
    for _ in range(num_tokens):
        padded = np.zeros(C, np.int32)
        padded[: len(window)] = window  # causal: what follows the window cannot change its last logits
        tok = int(np.argmax(np.asarray(forward(model, jnp.asarray(padded)))[len(window) - 1]))
        if len(window) == C:
            window = window[-keep:]
        window.append(tok)
        new.append(tok)
    return np.asarray(new)


def test_cached_greedy_equals_full_recompute_across_slides(model, prompt):
    C, keep = model.config.context, 40
    n = 2 * C + 7  # fills the window, then slides every C - keep tokens: 5 slides
    got = generate(model, prompt, cfg(n, keep=keep), temperatures=0.0)[0]
    want = reference_greedy(model, prompt, n, keep)
    np.testing.assert_array_equal(got[len(prompt):], want)


def test_long_generation_from_a_trained_model_is_music(model, bach):
    C = model.config.context
    bos = tokenizer.special_ids(bach.tok)["bos"]
    seqs = generate(model, [bos], cfg(3 * C, top_p=0.9), seeds=[0, 1, 2, 3], temperatures=1.0)
    for seq in seqs:
        assert len(seq) == 1 + 3 * C
        longest_run = max(len(list(g)) for _, g in itertools.groupby(seq.tolist()))
        assert longest_run <= 32
        score = tokenizer.decode_ids(bach.tok, seq)
        assert isinstance(score, Score)
        onsets = np.array([n.time for t in score.tracks for n in t.notes])
        assert len(onsets) >= 20
        end = score.end()
        thirds = np.histogram(onsets, bins=3, range=(0, end))[0]
        assert (thirds > 0).all(), f"notes only in parts of the piece: {thirds}"
        with_pitch = {n.pitch for t in score.tracks for n in t.notes}
        assert len(with_pitch) >= 4  # not one repeated note


def test_prompt_longer_than_context_keeps_its_most_recent_part(model, bach):
    C = model.config.context
    long_prompt = bach.shards.piece_ids("val", 0)[: C + 25]
    np.testing.assert_array_equal(kept_prompt(long_prompt, C), long_prompt[-C:])
    out = generate(model, long_prompt, cfg(12), temperatures=0.0)[0]
    assert len(out) == C + 12
    np.testing.assert_array_equal(out[:C], long_prompt[-C:])
    np.testing.assert_array_equal(out, generate(model, long_prompt[-C:], cfg(12), temperatures=0.0)[0])


@pytest.fixture(scope="module")
def eager_to_end(model, bach):
    """The trained model with +6 on its EOS logit: it ends pieces early."""
    eos = tokenizer.special_ids(bach.tok)["eos"]
    return eqx.tree_at(lambda m: m.head.bias, model, model.head.bias.at[eos].add(6.0))


def test_eos_stops_a_sequence(eager_to_end, bach, prompt):
    eos = tokenizer.special_ids(bach.tok)["eos"]
    seeds = [3, 4, 5, 6]
    free = generate(eager_to_end, prompt, cfg(60), seeds=seeds)  # without the tokenizer nothing stops a sequence
    stopped = generate(eager_to_end, prompt, cfg(60), seeds=seeds, tok=bach.tok)
    cut = 0
    for f, s in zip(free, stopped):  # every row is cut right after its own first EOS, unchanged before it
        new = f[len(prompt):]
        hits = np.flatnonzero(new == eos)
        np.testing.assert_array_equal(s, f[: len(prompt) + (hits[0] + 1 if hits.size else len(new))])
        cut += hits.size > 0
    assert cut >= 3, "the biased model should end most pieces within 60 tokens"


def test_min_tokens_holds_eos_back(eager_to_end, bach, prompt):
    eos = tokenizer.special_ids(bach.tok)["eos"]
    seeds, n, m = [0, 1, 2, 3], 120, 50
    for grammar in (False, True):
        short = generate(eager_to_end, prompt, cfg(n, grammar=grammar), seeds=seeds, tok=bach.tok)
        held = generate(eager_to_end, prompt, cfg(n, grammar=grammar, min_tokens=m), seeds=seeds, tok=bach.tok)
        assert all(len(s) - len(prompt) < m for s in short), [len(s) for s in short]
        for s in held:
            new = s[len(prompt):]
            assert len(new) > m and eos not in new[:m]
            assert new[-1] == eos  # the model still ends the piece, once it may
    with pytest.raises(ValueError, match="min_tokens"):
        SampleConfig(num_tokens=10, min_tokens=11)


def test_bad_arguments(model, bach):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [], cfg(5))
    with pytest.raises(ValueError, match="keep"):
        generate(model, [1], cfg(5, keep=model.config.context))
    with pytest.raises(ValueError, match="tok="):
        generate(model, [1], SampleConfig(num_tokens=5))  # the grammar (on by default) needs the tokenizer
    with pytest.raises(ValueError, match="tok="):
        generate(model, [1], cfg(5, max_bars=2))
    for bad, match in [(dict(num_tokens=0), "num_tokens"), (dict(top_p=0.0), "top_p"), (dict(top_k=-1), "top_k"),
                       (dict(min_p=1.5), "min_p"), (dict(repetition_penalty=0.0), "repetition_penalty"),
                       (dict(max_bars=0), "max_bars"), (dict(max_seconds=-1), "max_seconds"),
                       (dict(grammar="yes"), "grammar"), (dict(num_tokens=2.5), "num_tokens")]:
        with pytest.raises(ValueError, match=match):
            SampleConfig(**bad)


def test_changing_config_values_never_recompiles(model, bach, prompt, caplog):
    """Only num_tokens, keep and switching the repetition penalty or the grammar arrays on or off compile anew."""
    base = SampleConfig(num_tokens=24, max_bars=3)
    generate(model, prompt, base, tok=bach.tok)  # compiled here (or earlier)
    variants = [dict(top_k=5), dict(top_p=0.5), dict(min_p=0.2), dict(min_tokens=10), dict(max_bars=None),
                dict(grammar=False), dict(max_bars=7, top_k=2, top_p=0.9, min_p=0.1, min_tokens=24, max_seconds=3.0)]
    with jax.log_compiles(), caplog.at_level("DEBUG"):
        caplog.clear()
        for change in variants:
            generate(model, prompt, dataclasses.replace(base, **change), seeds=7, temperatures=0.7, tok=bach.tok)
        compiled = [r.getMessage() for r in caplog.records if "_generate" in r.getMessage()]
        assert compiled == []
        generate(model, prompt, dataclasses.replace(base, num_tokens=25), tok=bach.tok)  # a new loop length
        assert any("_generate" in r.getMessage() for r in caplog.records)  # the check does see compilations
