"""Fast sampling: prefill once, then decode token by token against a KV cache, all inside one compiled ``lax.scan``.

A batch of sequences (e.g. a grid of seeds x temperatures) decodes together from one prompt. Generation can run
for any length: when the window of ``context`` positions is full, the most recent ``keep`` tokens are re-prefilled
at positions ``0..keep-1`` (learned absolute positions stay in the range the model was trained on) and decoding
continues, so the cost of a slide is amortised over ``context - keep`` new tokens. Prompt lengths are padded to
power-of-two buckets so a new prompt length rarely triggers a recompilation.
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .model import GPT, cast

NEG_INF = -1e30


def filter_logits(logits: jax.Array, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """Temperature-scaled logits (V,) with the tokens outside top-k / top-p / min-p set to -inf.

    top_k=0, top_p=1 and min_p=0 switch each filter off. Ties at a threshold are kept. All controls may be traced
    values, so changing them never recompiles."""
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    V = logits.shape[-1]
    desc = jnp.sort(logits)[::-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
    keep = logits >= desc[k - 1]
    probs_desc = jax.nn.softmax(desc)
    # top-p: the smallest prefix of the sorted tokens whose mass reaches top_p
    before = jnp.cumsum(probs_desc) - probs_desc  # mass strictly before each sorted token
    n_p = jnp.maximum(jnp.sum(before < top_p), 1)
    # top_p >= 1 is off: the cumulative sum can reach 1.0 in float32 before the tail of a peaked distribution
    keep &= (top_p >= 1.0) | (logits >= desc[n_p - 1])
    # min-p, p_i >= min_p * p_max, compared in log space: both sides then share the same normalisation, so the top
    # token (and its ties) always survive, even at min_p = 1; min_p = 0 gives log 0 = -inf, which keeps everything
    keep &= logits >= desc[0] + jnp.log(min_p)
    return jnp.where(keep, logits, NEG_INF)


def sample_token(logits, key, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """One token id from logits (V,); temperature 0 is greedy."""
    filtered = filter_logits(logits, temperature, top_k, top_p, min_p)
    return jnp.where(temperature <= 0, jnp.argmax(logits), jax.random.categorical(key, filtered))


def _bucket(n: int, context: int) -> int:
    return min(context, max(16, 1 << (max(n, 1) - 1).bit_length()))


@partial(eqx.filter_jit, donate="none")
def _generate(model: GPT, window, prompt_len, keys, temps, top_k, top_p, min_p, eos_id, pad_id, ctrl=None, *,
              steps, keep, bucket):
    """window: (B, C) tokens with the prompt in [:prompt_len]; returns (B, steps) sampled tokens, and (B, steps)
    flags saying which were really emitted (False after EOS or past ``max_bars``).

    ``ctrl`` (optional arrays, see ``generate``): ``first``/``last``/``table`` for the grammar mask, ``penalty`` for
    the repetition penalty over the current window, ``bars``/``max_bars`` to stop after a number of bars."""
    C = model.config.context
    cache0 = model.init_cache(model.embed.weight.dtype)

    def prefill(tokens, length):
        logits, cache = model.decode(tokens, cache0, 0)
        return logits[length - 1], cache

    decode = jax.vmap(lambda t, c, p: model.decode(t[None], c, p), in_axes=(0, 0, None))
    logits, cache = jax.vmap(prefill, in_axes=(0, None))(window[:, :bucket], prompt_len)

    def slide(args):
        cache, window = args
        window = jnp.concatenate([window[:, C - keep:], jnp.full_like(window[:, : C - keep], pad_id)], axis=1)
        _, cache = jax.vmap(prefill, in_axes=(0, None))(window[:, :keep], keep)
        return cache, window

    V = logits.shape[-1]

    def constrain(logits, window, prev):
        """Grammar mask and repetition penalty on raw logits (B, V), before temperature and filters."""
        if "table" in ctrl:
            ok = ctrl["table"][ctrl["last"][prev]][:, ctrl["first"]]  # (B, V): may follow the previous token
            ok = ok | ~ok.any(axis=-1, keepdims=True)  # never mask everything
            logits = jnp.where(ok, logits, NEG_INF)
        if "penalty" in ctrl:  # CTRL-style: tokens already in the window are made less likely
            seen = jax.vmap(lambda w: jnp.zeros(V, bool).at[w].set(True))(window)
            p = ctrl["penalty"]
            logits = jnp.where(seen, jnp.where(logits > 0, logits / p, logits * p), logits)
        return logits

    def body(carry, _):
        cache, window, pos, logits, keys, done, prev, bars = carry
        keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
        if ctrl is not None:
            logits = constrain(logits, window, prev)
        tok = jax.vmap(sample_token, in_axes=(0, 0, 0, None, None, None))(logits, sub, temps, top_k, top_p, min_p)
        emitted = ~done
        if ctrl is not None and "bars" in ctrl:
            bars = bars + ctrl["bars"][tok]
            emitted &= bars <= ctrl["max_bars"]
        tok = jnp.where(emitted, tok, pad_id)
        done = ~emitted | (tok == eos_id)
        cache, window = jax.lax.cond(pos == C, slide, lambda a: a, (cache, window))
        pos = jnp.where(pos == C, keep, pos)
        window = window.at[:, pos].set(tok)
        logits, cache = decode(tok, cache, pos)
        return (cache, window, pos + 1, logits[:, 0], keys, done, tok, bars), (tok, emitted)

    B = window.shape[0]
    prev0 = window[jnp.arange(B), prompt_len - 1]
    carry = (cache, window, prompt_len, logits, keys, jnp.zeros(B, bool), prev0, jnp.zeros(B, jnp.int32))
    _, (toks, emitted) = jax.lax.scan(body, carry, None, length=steps)
    return toks.T, emitted.T  # (B, steps) each


def generate(
    model: GPT,
    prompt,
    num_tokens: int,
    *,
    seed: int | list[int] = 0,
    temperature: float | list[float] = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    keep: int | None = None,
    dtype=None,
    grammar=None,
    repetition_penalty: float = 1.0,
    max_bars: int | None = None,
) -> list[np.ndarray]:
    """Continue ``prompt`` (1-D token ids, at least one, e.g. ``[BOS]`` for unconditional) by ``num_tokens``.

    ``seed`` and ``temperature`` may be lists: the batch is their broadcast (one sequence per pair), decoded in one
    call. Returns one array per sequence: the prompt (its most recent ``context`` tokens if longer) followed by the
    new tokens, cut after EOS when ``eos_id`` is given. ``keep`` (default 3/4 of the context) is how many recent
    tokens survive a window slide. ``dtype`` defaults to the model's compute dtype (bf16 on accelerators).

    ``grammar`` (a ``grammar.Grammar``) forbids tokens REMI cannot follow; ``repetition_penalty`` > 1 makes tokens
    already in the window less likely (CTRL, Keskar et al. 2019); ``max_bars`` stops a sequence after that many
    new bars (needs ``grammar`` for the bar counts). None of these recompile when their values change."""
    from .train import compute_dtype

    C = model.config.context
    prompt = np.asarray(prompt, dtype=np.int32).reshape(-1)[-C:]
    if prompt.size == 0:
        raise ValueError("prompt must hold at least one token (use [BOS] for unconditional generation)")
    if num_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens} must be >= 1")
    keep = keep or max(1, (3 * C) // 4)
    if not 0 < keep < C:
        raise ValueError(f"keep={keep} must be in 1..{C - 1}")
    seeds, temps = np.broadcast_arrays(np.atleast_1d(seed), np.atleast_1d(np.asarray(temperature, np.float32)))
    B = seeds.size
    window = np.full((B, C), pad_id, np.int32)
    window[:, : prompt.size] = prompt
    keys = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(jnp.asarray(seeds.ravel(), jnp.uint32))
    keys = jax.vmap(jax.random.wrap_key_data)(keys)
    run_model = cast(model, dtype or compute_dtype("auto"))
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty={repetition_penalty} must be > 0 (1 = off)")
    ctrl = {}
    if grammar is not None:
        ctrl.update(first=grammar.first, last=grammar.last, table=grammar.table)
    if repetition_penalty != 1.0:
        ctrl["penalty"] = np.float32(repetition_penalty)
    if max_bars is not None:
        if grammar is None:
            raise ValueError("max_bars needs grammar= (it knows how many bars each token opens)")
        ctrl.update(bars=grammar.bars, max_bars=np.int32(max_bars))
    toks, emitted = _generate(
        run_model, jnp.asarray(window), jnp.int32(prompt.size), keys, jnp.asarray(temps.ravel()),
        jnp.int32(top_k), jnp.float32(top_p), jnp.float32(min_p),
        jnp.int32(-1 if eos_id is None else eos_id), jnp.int32(pad_id),
        {k: jnp.asarray(v) for k, v in ctrl.items()} or None,
        steps=int(num_tokens), keep=int(keep), bucket=_bucket(prompt.size, C),
    )
    return [np.concatenate([prompt, row[ok]]) for row, ok in zip(np.asarray(toks), np.asarray(emitted))]
