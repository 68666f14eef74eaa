"""Fast sampling: prefill once, then decode token by token against a KV cache, all inside one compiled loop.

A batch of sequences (e.g. a grid of seeds x temperatures) decodes together from one prompt, natively batched: one
(batch, heads, context, head_dim) cache buffer per layer, updated in place, and every matmul over the whole batch.
Generation can run for any length: when the window of ``context`` positions is full, the most recent ``keep`` tokens
(default half the context) are re-prefilled at positions ``0..keep-1`` (learned absolute positions stay in the range
the model was trained on) and decoding continues, so the cost of a slide is amortised over ``context - keep`` new
tokens. Prompt lengths are padded to power-of-two buckets so a new prompt length rarely triggers a recompilation.
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tchaikovsky.model import GPT, cast

NEG_INF = -1e30


def filter_logits(logits: jax.Array, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """Temperature-scaled logits (V,) with the tokens outside top-k / top-p / min-p set to -inf.

    top_k=0, top_p=1 and min_p=0 switch each filter off. Ties at a threshold are kept. All controls may be traced
    values, so changing them never recompiles."""
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    V = logits.shape[-1]

    def min_p_filter(logits):
        # min-p, p_i >= min_p * p_max, compared in log space: both sides then share the same normalisation, so the
        # top token (and its ties) always survive, even at min_p = 1; min_p = 0 gives log 0 = -inf: keeps everything
        return logits >= jnp.max(logits) + jnp.log(min_p)

    def sorted_filters(logits):
        desc = jnp.sort(logits)[::-1]
        k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
        keep = logits >= desc[k - 1]
        probs_desc = jax.nn.softmax(desc)
        # top-p: the smallest prefix of the sorted tokens whose mass reaches top_p
        before = jnp.cumsum(probs_desc) - probs_desc  # mass strictly before each sorted token
        n_p = jnp.maximum(jnp.sum(before < top_p), 1)
        # top_p >= 1 is off: the cumulative sum can reach 1.0 in float32 before the tail of a peaked distribution
        keep &= (top_p >= 1.0) | (logits >= desc[n_p - 1])
        return keep & min_p_filter(logits)

    # Sorting the vocabulary costs several times the rest of a CPU sampling step: only top-k and top-p need it
    # (a traced predicate, so switching the filters on or off never recompiles; the same mask either way).
    keep = jax.lax.cond((top_k > 0) | (top_p < 1.0), sorted_filters, min_p_filter, logits)
    return jnp.where(keep, logits, NEG_INF)


def _first_max(x: jax.Array) -> jax.Array:
    """``jnp.argmax`` of a NaN-free (V,) array (the first index of the maximum) from two plain reductions, which
    XLA:CPU vectorises; its (value, index) pair reduction is not, and costs several times as much."""
    return jnp.min(jnp.where(x == jnp.max(x), jnp.arange(x.shape[-1]), x.shape[-1]))


def sample_uniform(logits, u, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """One token id from logits (V,) and a uniform ``u`` in [0, 1); temperature 0 is greedy (the first top logit).

    Inverse-CDF sampling of the filtered softmax: the first token whose cumulative (unnormalised) probability reaches
    ``(1 - u) * total``. One random number per token instead of the V that Gumbel-max (``jax.random.categorical``)
    needs; on CPU generating those cost more than the rest of the sampler. Filtered tokens have probability exactly
    0 and so are never drawn (should rounding in the cumulative sum land on one, the top token is taken)."""
    filtered = filter_logits(logits, temperature, top_k, top_p, min_p)
    p = jnp.exp(filtered - jnp.max(filtered))  # the top token has 1, filtered ones exactly 0
    cdf = jnp.cumsum(p)
    tok = jnp.minimum(jnp.sum(cdf < (1.0 - u) * cdf[-1]), logits.shape[-1] - 1)
    top = _first_max(logits)
    return jnp.where((temperature <= 0) | (p[tok] <= 0), top, tok)


def sample_token(logits, key, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """One token id from logits (V,) with a PRNG key (``sample_uniform`` of ``jax.random.uniform(key)``); temperature
    0 is greedy."""
    return sample_uniform(logits, jax.random.uniform(key), temperature, top_k, top_p, min_p)


def _uniforms(key, n: int, block: int = 256) -> jax.Array:
    """(n,) uniforms in [0, 1) for the n sampling steps of one sequence, drawn at once (per-step draws on CPU cost a
    small PRNG loop each). Block b comes from ``fold_in(key, b)``, so a longer run extends a shorter one's draws."""
    blocks = jnp.arange(-(-n // block))
    u = jax.vmap(lambda b: jax.random.uniform(jax.random.fold_in(key, b), (block,)))(blocks)
    return u.reshape(-1)[:n]


def default_keep(context: int) -> int:
    """Tokens kept on a window slide unless ``generate`` is told otherwise: half the context. A slide re-prefills them
    (about ``keep / context`` of a full forward) once every ``context - keep`` tokens: keeping half rather than 3/4
    slides half as often, each slide 2/3 the cost, a third of the amortised cost; every new token still sees at least
    ``keep`` tokens before it."""
    return max(1, context // 2)


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
    B = window.shape[0]
    dec = model.decoder()  # per-layer weights, sliced once here rather than in every step of the loop below
    cache = model.init_cache(model.embed.weight.dtype, batch=B)
    logits, cache = model.prefill(window[:, :bucket], cache)  # the whole batch at once: (B, bucket, V)
    logits = jax.lax.dynamic_index_in_dim(logits, prompt_len - 1, axis=1, keepdims=False)  # (B, V)

    def slide(args):
        cache, window = args
        window = jnp.concatenate([window[:, C - keep:], jnp.full_like(window[:, : C - keep], pad_id)], axis=1)
        _, cache = model.prefill(window[:, :keep], cache)  # the stale entries after keep are never read
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

    # the uniforms that drive the sampler, one per sequence and step (+1: the rotated loop samples once more)
    uniforms = jax.vmap(partial(_uniforms, n=steps + 1))(keys)  # (B, steps + 1)

    def sample(logits, window, j, done, prev, bars):
        """Token j of every sequence from its logits and current window (before any slide)."""
        if ctrl is not None:
            logits = constrain(logits, window, prev)
        u = jax.lax.dynamic_index_in_dim(uniforms, j, axis=1, keepdims=False)
        tok = jax.vmap(sample_uniform, in_axes=(0, 0, 0, None, None, None))(logits, u, temps, top_k, top_p, min_p)
        emitted = ~done
        if ctrl is not None and "bars" in ctrl:
            bars = bars + ctrl["bars"][tok]
            emitted &= bars <= ctrl["max_bars"]
        tok = jnp.where(emitted, tok, pad_id)
        done = ~emitted | (tok == eos_id)
        return tok, emitted, done, bars

    # The loop is rotated so that a window slide never sits inside the per-token step: ``tok`` is sampled at the end
    # of the previous step (from the window as it was then, as without rotation), and step j writes and decodes it,
    # then samples the next. Steps run in segments that end when the window is full; the slide opens the next
    # segment. (A ``lax.cond`` holding the cache in every step makes XLA copy the whole cache around it each token.)
    def step(j, state):
        cache, window, pos, tok, emitted, done, bars, out_tok, out_emitted = state
        out_tok = out_tok.at[j].set(tok)
        out_emitted = out_emitted.at[j].set(emitted)
        window = window.at[:, pos].set(tok)
        logits, cache = dec.decode(tok[:, None], cache, pos)
        nxt, emitted, done, bars = sample(logits[:, 0], window, j + 1, done, tok, bars)
        return cache, window, pos + 1, nxt, emitted, done, bars, out_tok, out_emitted

    def segment(carry):
        j, state = carry
        cache, window, pos, *rest = state
        cache, window = jax.lax.cond(pos == C, slide, lambda a: a, (cache, window))
        pos = jnp.where(pos == C, keep, pos)
        n = jnp.minimum(steps - j, C - pos)  # steps until the window is full again (or the end)
        state = jax.lax.fori_loop(j, j + n, step, (cache, window, pos, *rest))
        return j + n, state

    prev0 = window[jnp.arange(B), prompt_len - 1]
    done0, bars0 = jnp.zeros(B, bool), jnp.zeros(B, jnp.int32)
    tok0, emitted0, done0, bars0 = sample(logits, window, 0, done0, prev0, bars0)
    out = (jnp.zeros((steps, B), jnp.int32), jnp.zeros((steps, B), bool))
    state = (cache, window, prompt_len, tok0, emitted0, done0, bars0, *out)
    _, state = jax.lax.while_loop(lambda c: c[0] < steps, segment, (jnp.int32(0), state))
    toks, emitted = state[-2:]
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
    new tokens, cut after EOS when ``eos_id`` is given. ``keep`` (default ``default_keep``: half the context) is how
    many recent tokens survive a window slide. ``dtype`` defaults to the model's compute dtype (bf16 on accelerators).

    ``grammar`` (a ``grammar.Grammar``) forbids tokens REMI cannot follow; ``repetition_penalty`` > 1 makes tokens
    already in the window less likely (CTRL, Keskar et al. 2019); ``max_bars`` stops a sequence after that many
    new bars (needs ``grammar`` for the bar counts). None of these recompile when their values change."""
    from tchaikovsky.config import compute_dtype

    C = model.config.context
    prompt = np.asarray(prompt, dtype=np.int32).reshape(-1)[-C:]
    if prompt.size == 0:
        raise ValueError("prompt must hold at least one token (use [BOS] for unconditional generation)")
    if num_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens} must be >= 1")
    keep = keep or default_keep(C)
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
