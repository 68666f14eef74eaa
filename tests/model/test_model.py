"""The decoder: the KV-cached path computes what the full forward computes, sizes, weight-decay mask, bf16 cast."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tchaikovsky.config import PRESETS, ModelConfig, TrainConfig
from tchaikovsky.model import GPT, cast, count_params, decay_mask
from tchaikovsky.training.state import make_optimizer

LINEAR_NAMES = {"qkv", "attn_out", "mlp_in", "mlp_out", "head"}


@pytest.fixture(scope="module")
def model(small_config) -> GPT:
    return GPT(small_config, key=jax.random.key(1))


@pytest.fixture(scope="module")
def piece_tokens(bach, small_config) -> np.ndarray:
    """A real token sequence: the start of a validation chorale, longer than the context."""
    ids = bach.shards.piece_ids("val", 0)
    assert len(ids) > 2 * small_config.context
    return ids


@eqx.filter_jit
def forward(model, tokens):
    return model(tokens)


@eqx.filter_jit
def decode(model, tokens, cache, start):
    return model.decode(tokens, cache, start)


def test_cached_decoding_matches_full_forward_at_every_position(model, piece_tokens):
    C = model.config.context
    tokens = jnp.asarray(piece_tokens[:C])
    full = np.asarray(forward(model, tokens))
    for prefix in (1, 5, C // 2):
        logits, cache = decode(model, tokens[:prefix], model.init_cache(), 0)
        np.testing.assert_allclose(logits, full[:prefix], atol=2e-5, rtol=1e-5)
        for i in range(prefix, C):
            step_logits, cache = decode(model, tokens[i : i + 1], cache, jnp.int32(i))
            np.testing.assert_allclose(step_logits[0], full[i], atol=2e-5, rtol=1e-5, err_msg=f"position {i}")
    assert np.abs(full[1:] - full[:-1]).max() > 1e-3  # positions really differ: the comparison has teeth


def test_window_slide_reprefill_matches_full_forward_on_the_window(model, piece_tokens):
    """After the window is full, the last ``keep`` tokens are re-prefilled at positions 0..keep-1, into a cache that
    still holds the old window's keys and values beyond ``keep``: they must be invisible."""
    C, keep = model.config.context, 3 * model.config.context // 4
    seq = jnp.asarray(piece_tokens[: C + (C - keep)])
    _, full_cache = decode(model, seq[:C], model.init_cache(), 0)

    window = seq[C - keep : C]
    logits, cache = decode(model, window, full_cache, 0)  # stale entries at keep..C-1
    np.testing.assert_allclose(logits, forward(model, window), atol=2e-5, rtol=1e-5)
    # decoding on after the slide: the next C - keep tokens at positions keep..C-1
    reference = np.asarray(forward(model, seq[C - keep :]))
    for i in range(keep, C):
        step_logits, cache = decode(model, seq[C - keep + i : C - keep + i + 1], cache, jnp.int32(i))
        np.testing.assert_allclose(step_logits[0], reference[i], atol=2e-5, rtol=1e-5, err_msg=f"position {i}")
    # the slid window is not what the unslid positions computed (positions restart at 0)
    unslid = np.asarray(forward(model, seq[:C]))
    assert np.abs(unslid[C - keep :] - reference[:keep]).max() > 1e-3


def test_batched_decoding_matches_one_sequence_at_a_time(model, piece_tokens):
    """``decode`` takes leading batch axes (``init_cache(batch=...)``; it vmaps the one-sequence step): each row
    computes what it computes alone, through the prefill and the per-token steps of one hoisted ``decoder()``."""
    C = model.config.context
    rows = np.stack([piece_tokens[:C], piece_tokens[C : 2 * C]])  # two different sequences
    prefix = 7

    @eqx.filter_jit
    def run(model, tokens, cache):  # prefill, then token by token as generate() does
        logits, cache = model.prefill(tokens[..., :prefix], cache)
        dec = model.decoder()
        steps = []
        for i in range(prefix, prefix + 5):
            step, cache = dec.decode(tokens[..., i : i + 1], cache, jnp.int32(i))
            steps.append(step)
        return jnp.concatenate([logits, *steps], axis=-2)

    batched = np.asarray(run(model, jnp.asarray(rows), model.init_cache(batch=2)))
    for row, got in zip(rows, batched):
        alone = run(model, jnp.asarray(row), model.init_cache())
        np.testing.assert_allclose(got, alone, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(got, forward(model, jnp.asarray(row))[: prefix + 5], atol=2e-5, rtol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(vocab_size=600, context=32, d_model=32, n_layers=2, n_heads=2),
        ModelConfig(vocab_size=97, context=48, d_model=24, n_layers=3, n_heads=3, mlp_ratio=2),
        *[p.model for p in PRESETS.values()],
    ],
    ids=lambda c: f"V{c.vocab_size}-C{c.context}-d{c.d_model}-L{c.n_layers}-m{c.mlp_ratio}",
)
def test_param_count_matches_config(cfg):
    shapes = eqx.filter_eval_shape(GPT, cfg, key=jax.random.key(0))  # no arrays materialised
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == cfg.n_params


def test_count_params_of_a_real_model(model, small_config):
    assert count_params(model) == small_config.n_params


def _named_leaves(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def test_decay_mask_is_true_exactly_for_linear_weights(model):
    mask = _named_leaves(decay_mask(model))
    arrays = _named_leaves(eqx.filter(model, eqx.is_array))
    assert mask.keys() == arrays.keys()
    expected_true = {f".blocks.{n}.weight" for n in LINEAR_NAMES - {"head"}} | {".head.weight"}
    assert {k for k, v in mask.items() if v is True} == expected_true
    falses = {k for k, v in mask.items() if v is False}
    assert falses == set(mask) - expected_true
    for must_be_false in (".embed.weight", ".pos.weight", ".norm.weight", ".norm.bias", ".blocks.norm.weight",
                          ".blocks.norm.bias", ".head.bias", ".blocks.qkv.bias", ".blocks.mlp_out.bias"):
        assert mask[must_be_false] is False, must_be_false


def test_weight_decay_moves_only_linear_weights(model):
    """Behaviour of the mask inside the optimizer: with zero gradients, AdamW changes only the decayed leaves."""
    tc = TrainConfig(learning_rate=1e-2, weight_decay=0.5, warmup_steps=1, max_steps=10)
    optim = make_optimizer(tc, model)
    params = eqx.filter(model, eqx.is_inexact_array)
    opt_state = optim.init(params)

    @eqx.filter_jit
    def two_updates(params, opt_state):
        new, zeros = params, jax.tree.map(jnp.zeros_like, params)
        for _ in range(2):  # the schedule starts at lr 0: the first update is a no-op
            updates, opt_state = optim.update(zeros, opt_state, new)
            new = optax.apply_updates(new, updates)
        return new

    new = two_updates(params, opt_state)
    changed = {k for (k, a), b in zip(_named_leaves(params).items(), _named_leaves(new).values())
               if not np.array_equal(a, b)}
    expected = {f".blocks.{n}.weight" for n in LINEAR_NAMES - {"head"}} | {".head.weight"}
    assert changed == expected
    np.testing.assert_allclose(new.head.weight, params.head.weight * (1 - 1e-2 * 0.5), rtol=1e-5)


def test_bf16_cast_stays_close_to_fp32(trained, bach):
    model = trained.model  # trained weights: logits with real spread, not the near-uniform ones of an init
    tokens = jnp.asarray(bach.shards.piece_ids("val", 0)[-model.config.context :])
    half = cast(model, jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(eqx.filter(half, eqx.is_inexact_array))} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))} == {jnp.dtype(jnp.float32)}

    ref, low = forward(model, tokens), forward(half, tokens)
    assert ref.dtype == jnp.float32 and low.dtype == jnp.float32
    p_ref, p_low = jax.nn.softmax(ref), jax.nn.softmax(low)
    # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.004); a few roundings through 2 layers stay within 2%
    assert float(jnp.abs(p_ref - p_low).max()) < 0.02
    assert float(jnp.abs(ref - low).max()) < 0.02 * float(jnp.abs(ref).max())
    assert float(jnp.mean(jnp.argmax(ref, -1) == jnp.argmax(low, -1))) >= 0.9

    # the cached path in bf16 (bf16 cache) agrees with the bf16 full forward
    logits, _ = decode(half, tokens, half.init_cache(jnp.bfloat16), 0)
    assert logits.dtype == jnp.float32
    assert float(jnp.abs(jax.nn.softmax(logits) - p_low).max()) < 0.02


def loss_and_grads_with_and_without_cpu_fast_paths(model: GPT, tokens) -> dict:
    """{fast: (loss, grads)} of ``tokens`` for the model's weights built with ``cpu_fast_paths`` on and off (the
    field is static: the weights are the same arrays, only the traced computation differs)."""
    import dataclasses

    from tchaikovsky.model import skeleton
    from tchaikovsky.training.losses import next_token_loss

    f = eqx.filter_jit(eqx.filter_value_and_grad(lambda m, t: next_token_loss(m, t, jnp.float32, 0)[0]))
    out = {}
    for fast in (False, True):
        like = skeleton(dataclasses.replace(model.config, cpu_fast_paths=fast))
        out[fast] = f(jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(model)), tokens)
    return out


def test_cpu_fast_paths_compute_the_reference_loss_and_gradients(model, piece_tokens):
    """The CPU fast paths (einsum attention, unrolled layer scan) change speed, not math: the loss and gradients of
    a batch match those traced with ``jax.nn.dot_product_attention`` and a rolled scan to float rounding."""
    assert model.config.cpu_fast_paths  # the default
    C = model.config.context
    tokens = jnp.asarray(np.stack([piece_tokens[: C + 1], piece_tokens[C : 2 * C + 1]]).astype(np.int32))
    out = loss_and_grads_with_and_without_cpu_fast_paths(model, tokens)
    (l0, g0), (l1, g1) = out[False], out[True]
    assert abs(float(l1) - float(l0)) <= 1e-5 * abs(float(l0))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))) + 1e-8)


def test_cpu_fast_paths_choose_the_traced_computation(monkeypatch):
    """The config field picks what is traced on the CPU backend: blocked einsum attention and a layer scan unrolled
    when on; ``jax.nn.dot_product_attention`` under a rolled scan when off (the comparisons here compare two
    programs, not one twice)."""
    import dataclasses

    calls = []
    reference = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **k: calls.append(1) or reference(*a, **k))
    cfg = ModelConfig(vocab_size=16, context=8, d_model=8, n_layers=3, n_heads=2)
    for fast in (False, True):
        calls.clear()
        model = GPT(dataclasses.replace(cfg, cpu_fast_paths=fast), key=jax.random.key(0))
        jaxpr = jax.make_jaxpr(lambda m, t: m(t))(model, jnp.zeros(8, jnp.int32))
        [scan] = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
        assert scan.params["unroll"] == (cfg.n_layers if fast else 1)
        assert len(calls) == (0 if fast else 1)  # traced once, in the scan's body


@pytest.mark.parametrize("T", [256, 320])  # the demo preset's context; one that ends in a partial block
def test_cpu_fast_paths_match_the_reference_over_several_query_blocks(small_config, bach, T):
    """The same check beyond one block of queries: at 256 and 320 positions the blocked attention runs 2 and 3
    blocks (the last one partial at 320), each scoring only the keys up to its own end."""
    import dataclasses
    import inspect

    from tchaikovsky.model.layers import blocked_causal_attention

    block = inspect.signature(blocked_causal_attention).parameters["block"].default
    assert T >= 2 * block  # several blocks, not one: the masked blocks above the diagonal are really skipped
    model = GPT(dataclasses.replace(small_config, context=320), key=jax.random.key(2))
    tokens = jnp.asarray(bach.shards.batch(0, 2, T, seed=3))  # real windows of T + 1 training tokens
    assert tokens.shape == (2, T + 1) and int((tokens != bach.shards.pad_id).sum()) > T  # not mostly padding
    out = loss_and_grads_with_and_without_cpu_fast_paths(model, tokens)
    (l0, g0), (l1, g1) = out[False], out[True]
    assert abs(float(l1) - float(l0)) <= 1e-5 * abs(float(l0))
    leaves0, leaves1 = jax.tree.leaves(g0), jax.tree.leaves(g1)
    assert len(leaves0) == len(leaves1)
    for a, b in zip(leaves1, leaves0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))) + 1e-8)
    # the late positions, whose queries sit in the last block, get the gradient the reference gives them
    late = np.asarray(g0.pos.weight[T - 8 : T])
    assert np.abs(late).max() > 0
    np.testing.assert_allclose(g1.pos.weight[T - 8 : T], late, rtol=1e-4, atol=1e-4 * np.abs(late).max())
