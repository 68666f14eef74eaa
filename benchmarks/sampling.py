"""``python -m benchmarks sampling``: the package's KV-cached ``generate`` against full recomputation.

Two recomputation baselines with the same model and dtype: ``recompute_generate`` samples as the original
TchAIkovsky did (a Python loop, one jitted forward of the whole window per token), ``recompute_scan_generate`` is the
same recomputation as one compiled ``lax.scan`` with ``generate``'s own sampler. ``cached_generate`` is the one
place the benchmarks call the package's ``generate``. ``guided_row`` times classifier-free guidance (a batch of
twice the rows) against unguided decoding of the same conditioned prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

from benchmarks.breakdown import breakdown as step_breakdown
from benchmarks.breakdown import flatness as measure_flatness
from benchmarks.breakdown import predicted_flatness
from benchmarks.common import default_vocab, device_info, hbm_bandwidth, interleaved, load_avg, median, rounded


def cached_generate(model, prompt, num_tokens: int, *, seed: int | list[int] = 0, temperature: float = 1.0,
                    dtype=None, guidance: float = 1.0, conditions=None):
    """``tchaikovsky.generate.sampling.generate`` of ``num_tokens`` new tokens after ``prompt``, plain sampling at
    ``temperature`` (no top-k/top-p), one sequence per seed; returns its list of int32 arrays (prompt + new).
    ``guidance`` != 1 needs ``conditions`` and a prompt that opens with condition tokens."""
    from tchaikovsky.config import SampleConfig
    from tchaikovsky.generate.sampling import generate

    config = SampleConfig(num_tokens=num_tokens, grammar=False, guidance=guidance)  # no tokenizer: no EOS, grammar
    return generate(model, prompt, config, seeds=seed, temperatures=temperature, dtype=dtype, conditions=conditions)


def guided_row(model, tokens: int, repeats: int, *, guidance: float = 2.0, prompt_len: int = 16, dtype=None,
               seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Batch-1 tokens/s of guided (``guidance``) against unguided decoding of one conditioned prompt (three
    condition tokens, then random music ids), timed side by side (interleaved, medians of ``repeats``), with a
    third side: unguided with two seeds, the same 2-row batch as the guided one. The model's last six ids play the
    condition vocabulary (the three unknowns and one value per kind): a random model, so the figures are about
    cost, not music. ``guided_ratio``: guided over unguided tokens/s (1/2 would be twice the cost per token);
    ``guided_vs_2rows``: the guided step's time over the 2-row unguided step's (about 1: guidance costs what the
    doubled batch costs on this device, nothing more)."""
    import numpy as np

    from tchaikovsky.data.conditions import Conditions

    vocab = model.config.vocab_size
    cond = Conditions.build(vocab - 6, [{"period": "p", "composer": "c", "instrumentation": "i"}])
    rng = np.random.default_rng(seed)
    prompt = np.concatenate([cond.prefix("p", "c", "i"), rng.integers(1, cond.base, size=prompt_len)]).astype(np.int32)
    log(f"  guided (guidance {guidance:g}) vs unguided, batch 1 x {tokens} tokens (and unguided with 2 rows), "
        f"{repeats} repeats ...")
    run = partial(cached_generate, model, prompt, tokens, conditions=cond, dtype=dtype)
    t = interleaved({"plain": lambda: run(), "guided": lambda: run(guidance=guidance),
                     "2rows": lambda: run(seed=[0, 1])}, repeats)
    plain, guided, rows2 = (median(t[k]) for k in ("plain", "guided", "2rows"))
    log(f"  guided {tokens / guided:,.1f} tokens/s vs unguided {tokens / plain:,.1f} tokens/s: ratio "
        f"{plain / guided:.2f} (guided / unguided); a 2-row unguided step takes {1e3 * rows2 / tokens:.3g} ms, "
        f"the guided one {1e3 * guided / tokens:.3g} ms ({guided / rows2:.2f}x)")
    return {"guidance": guidance, "guided_tokens_per_s": rounded(tokens / guided),
            "unguided_tokens_per_s": rounded(tokens / plain), "guided_ratio": rounded(plain / guided, 3),
            "unguided_2rows_ms_per_step": rounded(1e3 * rows2 / tokens), "guided_vs_2rows": rounded(guided / rows2, 3)}


def _baseline_inputs(model, prompt, pad_id: int, dtype):
    """The model in the compute dtype, the (context,) window holding the prompt's last <= context tokens
    right-padded with ``pad_id``, and the prompt's length there."""
    import numpy as np

    from tchaikovsky.config import compute_dtype
    from tchaikovsky.model import cast

    C = model.config.context
    prompt = np.asarray(prompt, np.int32).reshape(-1)[-C:]
    if prompt.size == 0:
        raise ValueError("prompt must hold at least one token")
    window = np.full(C, pad_id, np.int32)
    window[: prompt.size] = prompt
    return cast(model, dtype or compute_dtype("auto")), window, int(prompt.size)


@lru_cache(maxsize=1)
def _original_step():
    """The original's jitted per-token step (built on first use, so importing this module does not import JAX)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    @eqx.filter_jit
    def step(model, window, length, key, temperature):
        logits = jnp.take(model(window), length - 1, axis=0)  # the logits of every position, then the last real one
        sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature > 0, sampled, jnp.argmax(logits))

    return step


def recompute_generate(model, prompt, num_tokens: int, *, seed: int = 0, temperature: float = 1.0, pad_id: int = 0,
                       dtype=None):
    """The no-cache baseline as the original sampled: for every new token, one jitted full forward of the whole
    window (the last <= context tokens, right-padded to the context), the logits at the last real position sampled
    with ``jax.random.categorical`` (argmax at temperature 0), the token fetched to the host and written into the
    window, which drops its oldest token once full (slides by one).

    Returns the ``num_tokens`` new token ids (int32 numpy). Greedy, it reproduces ``generate`` token for token until
    ``generate`` first slides its window."""
    import jax
    import numpy as np

    C = model.config.context
    run_model, window, n = _baseline_inputs(model, prompt, pad_id, dtype)
    step = _original_step()
    key = jax.random.key(seed)
    temperature = np.float32(temperature)
    out = np.empty(int(num_tokens), np.int32)
    for i in range(int(num_tokens)):
        key, sub = jax.random.split(key)
        tok = step(run_model, window, np.int32(n), sub, temperature).item()
        out[i] = tok
        if n < C:
            window[n] = tok
            n += 1
        else:
            window = np.concatenate([window[1:], np.array([tok], np.int32)])
    return out


@lru_cache(maxsize=1)
def _recompute_scan_fn():
    """The jitted recompute-baseline scan (built on first use, so importing this module does not import JAX)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from tchaikovsky.generate.sampling import sample_token

    @partial(eqx.filter_jit, donate="none")
    def run(model, window, n, key, temperature, top_k, top_p, min_p, *, steps):
        C = model.config.context

        def body(carry, _):
            window, n, key = carry
            key, sub = jax.random.split(key)
            logits = model(window)[n - 1]  # full causal forward over the whole (padded) window, every token
            tok = sample_token(logits, sub, temperature, top_k, top_p, min_p)
            full = n == C
            window = jnp.where(full, jnp.roll(window, -1), window)  # full: drop the oldest token
            window = window.at[jnp.minimum(n, C - 1)].set(tok)
            return (window, jnp.minimum(n + 1, C), key), tok

        _, toks = jax.lax.scan(body, (window, n, key), None, length=steps)
        return toks

    return run


def recompute_scan_generate(model, prompt, num_tokens: int, *, seed: int = 0, temperature: float = 1.0,
                            top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, pad_id: int = 0, dtype=None):
    """The recomputation of ``recompute_generate`` as one jitted ``lax.scan`` (no per-token host round trip),
    sampling with ``generate``'s sampler (``sample_token``).

    Returns the ``num_tokens`` new token ids (int32 numpy). Greedy, it reproduces ``generate`` token for token until
    ``generate`` first slides its window."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    run_model, window, n = _baseline_inputs(model, prompt, pad_id, dtype)
    toks = _recompute_scan_fn()(run_model, jnp.asarray(window), jnp.int32(n), jax.random.key(seed),
                                jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p), jnp.float32(min_p),
                                steps=int(num_tokens))
    return np.asarray(toks)


def bench_sampling(preset_name: str = "demo", *, tokens: int = 1024, batch: int = 64, batch_tokens: int | None = None,
                   prompt_len: int = 16, recompute_tokens: int | None = None, repeats: int = 3,
                   vocab_size: int | None = None, dtype: str = "auto", seed: int = 0, breakdown: bool = True,
                   guidance: float = 2.0, log: Callable[[str], None] = print) -> dict:
    """Cached decoding vs full recomputation for a randomly initialised model of a preset; returns the result dict.

    ``cached_tokens_per_s``: batch-1 ``cached_generate`` of ``tokens`` new tokens after a ``prompt_len`` prompt (the
    window slides past the context). ``recompute_tokens_per_s`` / ``recompute_scan_tokens_per_s``: the baselines on
    ``recompute_tokens`` tokens (default 128 on CPU, else ``tokens``) after a full-context prompt; their per-token
    cost does not depend on the position. ``speedup`` / ``speedup_vs_scan``: cached over each (interleaved, medians
    of ``repeats``). ``flatness`` (needs ``tokens`` >= 101): see ``breakdown.flatness``. ``batch_tokens_per_s``:
    ``batch`` sequences x ``batch_tokens`` (default ``tokens``, at most 256 on CPU), also as
    ``batch64_tokens_per_s`` when ``batch`` is 64. ``bandwidth_fraction``: cached tokens/s over HBM bandwidth /
    parameter bytes (null where the bandwidth is unknown). ``guided_tokens_per_s``, ``unguided_tokens_per_s``,
    ``guided_ratio``, ``unguided_2rows_ms_per_step``, ``guided_vs_2rows``: ``guided_row`` of ``tokens`` tokens at
    ``guidance`` (1: skipped, null). ``breakdown``:
    ``breakdown.breakdown`` plus its ``predicted_flatness``."""
    import jax
    import numpy as np

    from tchaikovsky.config import compute_dtype, preset
    from tchaikovsky.generate.sampling import default_keep
    from tchaikovsky.model import build, cast, count_params

    vocab = vocab_size or default_vocab(preset_name)
    mc = preset(preset_name, vocab_size=vocab).model
    C = mc.context
    if not 1 <= prompt_len <= C:
        raise ValueError(f"prompt_len={prompt_len} must be in 1..{C}")
    info = device_info()
    cdtype = compute_dtype(dtype)
    on_cpu = info["platform"] == "cpu"
    recompute_tokens = recompute_tokens or (min(tokens, 128) if on_cpu else tokens)
    batch_tokens = batch_tokens or (min(tokens, 256) if on_cpu else tokens)
    batch_repeats = max(1, repeats // 2)
    keep = default_keep(C)
    model = build(mc, jax.random.key(seed))
    n_params = count_params(model)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, vocab, size=prompt_len, dtype=np.int32)
    full_prompt = rng.integers(1, vocab, size=C, dtype=np.int32)
    dname = np.dtype(cdtype).name
    log(f"sampling: preset={preset_name} context={C} vocab={vocab} params={n_params:,} dtype={dname} "
        f"on {info['device_kind']}; prompt {prompt_len} tokens, keep {keep} on a slide")

    def cached(n: int, b: int = 1):
        seeds = 0 if b == 1 else list(range(b))
        return lambda: cached_generate(model, prompt, n, seed=seeds, temperature=1.0, dtype=cdtype)

    log(f"  cached {tokens} tokens vs recompute {recompute_tokens} tokens (full window; per-token loop and one "
        f"compiled scan), {repeats} repeats ...")
    t = interleaved({
        "cached": cached(tokens),
        "recompute": lambda: recompute_generate(model, full_prompt, recompute_tokens, dtype=cdtype),
        "scan": lambda: recompute_scan_generate(model, full_prompt, recompute_tokens, dtype=cdtype),
    }, repeats)
    cached_tps = tokens / median(t["cached"])
    recompute_tps = recompute_tokens / median(t["recompute"])
    scan_tps = recompute_tokens / median(t["scan"])
    log(f"  cached {cached_tps:,.1f} tokens/s, recompute {recompute_tps:,.1f} tokens/s (as one scan: "
        f"{scan_tps:,.1f}): speedup {cached_tps / recompute_tps:.1f}x ({cached_tps / scan_tps:.1f}x vs the scan)")

    flat = dict.fromkeys(("flatness", "first100_ms_per_token", "last100_ms_per_token", "slides_in_first100",
                          "slides_in_last100"))
    if tokens >= 101:
        log("  flatness: timing generate(1), generate(101), generate(tokens-100), generate(tokens) ...")
        flat = measure_flatness(cached, tokens, repeats, prompt_len, C, keep)
        log(f"  first 100 tokens {flat['first100_ms_per_token']} ms/token ({flat['slides_in_first100']} slides), "
            f"last 100 {flat['last100_ms_per_token']} ms/token ({flat['slides_in_last100']} slides): "
            f"flatness {flat['flatness']}")

    log(f"  batch {batch} x {batch_tokens} tokens ...")
    batch_tps = batch * batch_tokens / median(interleaved({"b": cached(batch_tokens, batch)}, batch_repeats)["b"])
    log(f"  batch {batch}: {batch_tps:,.0f} tokens/s")
    guided = dict.fromkeys(("guided_tokens_per_s", "unguided_tokens_per_s", "guided_ratio",
                            "unguided_2rows_ms_per_step", "guided_vs_2rows"))
    if guidance != 1:
        guided = guided_row(model, tokens, repeats, guidance=guidance, prompt_len=prompt_len, dtype=cdtype,
                            seed=seed, log=log)

    param_bytes = n_params * np.dtype(cdtype).itemsize
    bw = hbm_bandwidth(info["device_kind"])
    bound = None if bw is None else bw / param_bytes
    result = {
        "bench": "sampling", "preset": preset_name, "context": C, "prompt_len": prompt_len, "tokens": tokens,
        "keep": keep, "n_params": n_params, "vocab_size": vocab, **info, "dtype": dname,
        "cached_tokens_per_s": rounded(cached_tps),
        "recompute_tokens_per_s": rounded(recompute_tps),
        "recompute_tokens_timed": recompute_tokens,
        "speedup": rounded(cached_tps / recompute_tps),
        "recompute_method": "the original's: Python loop, one jitted full forward per token, .item(), categorical",
        "recompute_scan_tokens_per_s": rounded(scan_tps),
        "speedup_vs_scan": rounded(cached_tps / scan_tps),
        **flat,
        "flatness_method": "differences of whole generate calls on one trajectory, min over repeats: "
                           "[T(tokens)-T(tokens-100)] / [T(101)-T(1)]",
        "batch": batch, "batch_tokens": batch_tokens, "batch_repeats": batch_repeats,
        "batch_tokens_per_s": rounded(batch_tps),
        "batch64_tokens_per_s": rounded(batch_tps) if batch == 64 else None,
        "guidance": guidance, **guided,
        "param_bytes": param_bytes,
        "hbm_bytes_per_s": bw,
        "bandwidth_bound_tokens_per_s": rounded(bound),
        "bandwidth_fraction": None if bound is None else rounded(cached_tps / bound, 3),
        "breakdown": None,
        "load_avg": load_avg(),
    }
    if breakdown:
        log("  breakdown: decode step, sampler, window slide, full forward, each as its own compiled scan ...")
        b = result["breakdown"] = step_breakdown(cast(model, cdtype), keep, repeats)
        if flat["flatness"] is not None:
            implied = predicted_flatness(b, flat["slides_in_first100"], flat["slides_in_last100"])
            b["predicted_flatness"] = rounded(implied, 3)
        log(f"  per token: decode {b['decode_step_ms']} ms + sample {b['sample_ms']} ms (categorical alone "
            f"{b['categorical_only_ms']}) + slide {b['slide_ms']} ms / {b['slide_every']} = "
            f"{b['predicted_ms_per_token']} ms predicted vs {1e3 / cached_tps:.4g} measured; "
            f"full forward {b['full_forward_ms']} ms"
            + ("" if "predicted_flatness" not in b else f"; flatness implied by these: {b['predicted_flatness']}"))
    return result
