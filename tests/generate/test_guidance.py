"""Classifier-free guidance over conditions: one batch of twice the rows, the logits of each sequence with and
without its conditions mixed, and the one token sampled written to both halves."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tchaikovsky.config import ModelConfig, SampleConfig
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.tokenizer import special_ids
from tchaikovsky.generate.sampling import generate, unconditioned
from tchaikovsky.model import build
from tchaikovsky.training.checkpoint import load_run_model


@pytest.fixture(scope="module")
def run(conditioned_run):
    """The conditioned tiny run: model, tokenizer, conditions and a Bach prompt (conditions, BOS, a few tokens of a
    held-out chorale's opening)."""
    model, tok, _ = load_run_model(conditioned_run)
    cond = load_conditions(conditioned_run, tok)
    bos = special_ids(tok)["bos"]
    prompt = np.asarray(cond.prefix("Baroque", "bach", "voices") + [bos], np.int32)
    return model, tok, cond, prompt


def test_unconditioned_swaps_only_the_leading_conditions_for_unknown(run):
    _, _, cond, prompt = run
    got = unconditioned(prompt, cond, 3)
    assert list(got[:3]) == cond.prefix() and list(got[3:]) == list(prompt[3:])
    assert list(prompt[:3]) != cond.prefix()  # the argument is left alone


def test_guidance_one_is_plain_conditioned_sampling_and_so_is_the_guided_path_at_one(run):
    model, tok, cond, prompt = run
    config = SampleConfig(num_tokens=40, top_p=0.9)  # grammar on
    kw = dict(seeds=[0, 1, 2], temperatures=1.0, tok=tok, conditions=cond)
    plain = generate(model, prompt, config, **kw)
    for seq, want in zip(generate(model, prompt, SampleConfig(num_tokens=40, top_p=0.9, guidance=1.0), **kw), plain):
        np.testing.assert_array_equal(seq, want)
    # the doubled batch at g = 1: the unconditioned half's logits weigh exactly 0
    for seq, want in zip(generate(model, prompt, config, _guided=True, **kw), plain):
        np.testing.assert_array_equal(seq, want)
    assert len({tuple(s) for s in plain}) == 3  # the check compares sampled pieces, not one greedy line


def reference_guided_greedy(model, cond_prompt, uncond_prompt, num_tokens, g, keep, pinned=3) -> np.ndarray:
    """No cache, no batch: the full forward over the conditioned and the unconditioned window for every token, the
    logits mixed ``g * cond + (1 - g) * uncond``, the top token appended to both; a full window keeps its ``pinned``
    conditions and its latest ``keep - pinned`` tokens (the sampler's slide rule)."""
    C = model.config.context
    forward = eqx.filter_jit(lambda m, w: m(w))
    windows, new = [list(cond_prompt), list(uncond_prompt)], []
    for _ in range(num_tokens):
        logits = []
        for w in windows:
            padded = np.zeros(C, np.int32)
            padded[: len(w)] = w  # causal: what follows the window cannot change its last logits
            logits.append(np.asarray(forward(model, jnp.asarray(padded)))[len(w) - 1])
        tok = int(np.argmax(g * logits[0] + (1 - g) * logits[1]))
        for i, w in enumerate(windows):
            windows[i] = (w[:pinned] + w[len(w) - (keep - pinned):] if len(w) == C else w) + [tok]
        new.append(tok)
    return np.asarray(new)


@pytest.fixture(scope="module")
def fresh(run):
    """A freshly initialised tiny model with the run's vocabulary: its conditions change every logit (ten training
    steps hardly separate the conditioned run's paths), so a guided greedy line differs from the plain one."""
    _, _, cond, prompt = run
    return build(ModelConfig(vocab_size=cond.vocab_size, context=64, d_model=64, n_layers=2, n_heads=2),
                 jax.random.key(0))


@pytest.mark.parametrize("n", [40, 2 * 64 + 7])  # within the context of 64; then past it, with slides
def test_cached_guided_greedy_equals_full_recompute(run, fresh, n):
    _, _, cond, prompt = run
    keep = 40
    guided = SampleConfig(num_tokens=n, grammar=False, guidance=2.0, keep=keep)
    got = generate(fresh, prompt, guided, temperatures=0.0, conditions=cond)[0]
    want = reference_guided_greedy(fresh, prompt, unconditioned(prompt, cond, 3), n, 2.0, keep)
    np.testing.assert_array_equal(got[len(prompt):], want)
    plain = generate(fresh, prompt, SampleConfig(num_tokens=n, grammar=False, keep=keep), temperatures=0.0,
                     conditions=cond)[0]
    assert (got != plain).mean() > 0.5, "guidance 2 changes most greedy tokens of this model"


def test_guided_decoding_past_the_context_keeps_the_conditions_in_front(run):
    model, tok, cond, prompt = run
    C = model.config.context
    config = SampleConfig(num_tokens=2 * C + 10, min_tokens=2 * C + 10, guidance=2.0)  # several slides
    kw = dict(seeds=[3, 4], temperatures=1.0, tok=tok, conditions=cond)
    out = generate(model, prompt, config, **kw)
    plain = generate(model, prompt, dataclasses.replace(config, guidance=1.0), **kw)
    for seq, again, unguided in zip(out, generate(model, prompt, config, **kw), plain):
        assert len(seq) == len(prompt) + 2 * C + 10
        assert list(seq[:4]) == list(prompt) and not cond.is_condition(seq[4:]).any()
        np.testing.assert_array_equal(seq, again)
        assert not np.array_equal(seq, unguided)
    # "any" of everything: both halves are the same sequence, so every guidance gives the plain tokens
    anything = np.asarray(cond.prefix() + [prompt[-1]], np.int32)
    plain = generate(model, anything, SampleConfig(num_tokens=2 * C), **kw)
    for seq, want in zip(generate(model, anything, SampleConfig(num_tokens=2 * C, guidance=3.0), **kw), plain):
        np.testing.assert_array_equal(seq, want)


def test_guidance_needs_a_conditioned_prompt(run):
    model, tok, cond, prompt = run
    config = SampleConfig(num_tokens=4, guidance=2.0)
    with pytest.raises(ValueError, match="conditions="):
        generate(model, prompt, config, tok=tok)
    with pytest.raises(ValueError, match="opens with no condition tokens"):
        generate(model, prompt[3:], config, tok=tok, conditions=cond)
    for bad in (-0.5, "2", float("nan"), True):
        with pytest.raises(ValueError, match="guidance"):
            SampleConfig(guidance=bad)


def test_changing_the_guidance_never_recompiles(run, caplog):
    model, tok, cond, prompt = run
    kw = dict(seeds=[0, 1], tok=tok, conditions=cond)
    generate(model, prompt, SampleConfig(num_tokens=9, guidance=2.0), **kw)  # compiled here (or earlier)
    with jax.log_compiles(), caplog.at_level("DEBUG"):
        caplog.clear()
        for g in (0.0, 1.5, 4.0):
            generate(model, prompt, SampleConfig(num_tokens=9, guidance=g), **kw)
        assert not [r for r in caplog.records if "_generate" in r.getMessage()]
        generate(model, prompt, SampleConfig(num_tokens=9), **kw)  # unguided: half the rows, its own program
        assert any("_generate" in r.getMessage() for r in caplog.records)
