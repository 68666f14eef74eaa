"""Per-token cost of KV-cached decoding: along the sequence (``flatness``) and by component (``breakdown``)."""

from __future__ import annotations

from benchmarks.common import block, interleaved, median, rounded, timed


def breakdown(model, keep: int, repeats: int) -> dict:
    """Per-token cost (ms) of the pieces of a batch-1 cached decoding step, each timed as its own compiled
    ``lax.scan`` of up to 64 steps (so no dispatch overhead), plus one window slide and one full forward.

    ``model`` is already in the compute dtype; ``keep`` is how many tokens a slide re-prefills. Keys:
    ``decode_step_ms`` (the decoder's step), ``sample_ms`` (``generate``'s sampler: inverse CDF from pre-drawn
    uniforms), ``categorical_only_ms`` (``jax.random.categorical`` alone, for reference), ``slide_ms`` (one slide),
    ``slide_every`` (tokens between slides: context - keep), ``slide_amortised_ms``, ``full_forward_ms`` (the whole
    context) and ``predicted_ms_per_token`` = decode + sample + amortised slide."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from tchaikovsky.generate.sampling import _first_max, _uniforms, sample_uniform

    C, V = model.config.context, model.config.vocab_size
    K = max(1, min(64, C - 1))

    @eqx.filter_jit
    def decode_steps(m, tok):
        # as generate() decodes a batch of one: per-layer weights once, outside the token loop; a (1, ...) cache
        dec = m.decoder()
        cache = dec.init_cache(m.embed.weight.dtype, batch=1)

        def body(c, i):
            cache, tok = c
            logits, cache = dec.decode(tok[:, None], cache, i)
            return (cache, jax.vmap(_first_max)(logits[:, 0])), None

        return jax.lax.scan(body, (cache, tok), jnp.arange(K))[0][1]

    @jax.jit
    def sample_steps(logits, key, temperature, top_k, top_p, min_p):
        uniforms = _uniforms(key, K)  # drawn up front, as generate() does

        def body(logits, u):
            tok = sample_uniform(logits, u, temperature, top_k, top_p, min_p)
            return logits.at[tok].add(-1e-3), tok  # the next step's logits depend on this one

        return jax.lax.scan(body, logits, uniforms)[1]

    @jax.jit
    def categorical_steps(logits, key):
        def body(c, _):
            logits, key = c
            key, sub = jax.random.split(key)
            tok = jax.random.categorical(sub, logits)
            return (logits.at[tok].add(-1e-3), key), tok

        return jax.lax.scan(body, (logits, key), None, length=K)[1]

    # a slide as generate() does it: re-prefill ``keep`` tokens into the existing cache, logits unused
    slide = eqx.filter_jit(lambda m, w, cache: m.prefill(w, cache)[1])
    cache = model.init_cache(model.embed.weight.dtype, batch=1)
    forward = eqx.filter_jit(lambda m, w: m(w))
    logits = jax.random.normal(jax.random.key(1), (V,), jnp.float32)
    key = jax.random.key(0)
    ctrl = (jnp.float32(1.0), jnp.int32(0), jnp.float32(1.0), jnp.float32(0.0))
    window = jnp.ones((C,), jnp.int32)
    t = interleaved({
        "decode": lambda: decode_steps(model, jnp.ones((1,), jnp.int32)),
        "sample": lambda: sample_steps(logits, key, *ctrl),
        "categorical": lambda: categorical_steps(logits, key),
        "slide": lambda: slide(model, window[None, :keep], cache),
        "forward": lambda: forward(model, window),
    }, repeats)
    out = {
        "decode_step_ms": median(t["decode"]) / K * 1e3,
        "sample_ms": median(t["sample"]) / K * 1e3,
        "categorical_only_ms": median(t["categorical"]) / K * 1e3,
        "slide_ms": median(t["slide"]) * 1e3,
        "slide_every": C - keep,
        "full_forward_ms": median(t["forward"]) * 1e3,
    }
    out["slide_amortised_ms"] = out["slide_ms"] / out["slide_every"]
    out["predicted_ms_per_token"] = out["decode_step_ms"] + out["sample_ms"] + out["slide_amortised_ms"]
    return {k: (v if k == "slide_every" else rounded(v)) for k, v in out.items()}


def predicted_flatness(b: dict, slides_first: int, slides_last: int, n: int = 100) -> float:
    """The flatness a breakdown ``b`` implies: n decode + sample steps plus the last range's slides, over the same
    with the first range's slides."""
    step = n * (b["decode_step_ms"] + b["sample_ms"])
    return (step + slides_last * b["slide_ms"]) / (step + slides_first * b["slide_ms"])


def slides_between(prompt_len: int, context: int, keep: int, start: int, stop: int) -> int:
    """How many window slides ``generate`` performs while producing new tokens ``start .. stop-1`` (0-based): it
    slides before the step whose write position would be ``context``, then continues at ``keep``."""
    pos, n = prompt_len, 0
    for i in range(stop):
        if pos == context:
            n += i >= start
            pos = keep
        pos += 1
    return n


def flatness(cached, tokens: int, repeats: int, prompt_len: int, C: int, keep: int) -> dict:
    """``flatness``: mean time per token of the last 100 of ``tokens`` new tokens over that of the first 100.

    ``cached(n)`` returns a callable that generates ``n`` tokens, always on the same trajectory (same seed). Each
    range's time is a difference of whole calls, ``T(tokens) - T(tokens-100)`` and ``T(101) - T(1)``, so prefill,
    dispatch and host work cancel; each T is the minimum over ``max(5, repeats)`` rounds (load only adds time).
    Also returns both ranges' ``*_ms_per_token`` and the window slides each holds (``slides_in_*``)."""
    fns = {"t1": cached(1), "t101": cached(101), "tlo": cached(tokens - 100), "thi": cached(tokens)}
    for fn in fns.values():
        block(fn())
    t = {k: [] for k in fns}
    for _ in range(max(5, repeats)):
        for k, fn in fns.items():
            t[k].append(timed(fn))
    first = min(t["t101"]) - min(t["t1"])
    last = min(t["thi"]) - min(t["tlo"])
    return {
        "flatness": rounded(last / first, 3) if first > 0 else None,
        "first100_ms_per_token": rounded(first / 100 * 1e3),
        "last100_ms_per_token": rounded(last / 100 * 1e3),
        "slides_in_first100": slides_between(prompt_len, C, keep, 0, 100),
        "slides_in_last100": slides_between(prompt_len, C, keep, tokens - 100, tokens),
    }
