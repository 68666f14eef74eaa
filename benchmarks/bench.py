"""Benchmarks: ``python -m benchmarks {training,sampling,data} [--preset P] [options]``.

Each subcommand prints human-readable progress lines and, as its LAST line on stdout, exactly one JSON object
(``main`` also returns it as a dict). Rules every measurement here follows:

* only compiled work is timed: every jitted function runs once first (compilation, warm-up), then each timed call
  ends in ``jax.block_until_ready`` (or returns host numpy, which waits too), and the median of the repeats is kept;
* performance claims are ratios measured side by side in one run, the two sides interleaved repeat by repeat so a
  busy machine slows both alike; absolute rates depend on the machine and its load (``load_avg`` is reported).

``training``  the real jitted train step of ``train.py`` (AdamW, clipping, accumulation scan, shardings) on the mesh
              of all devices, random token batches: tokens/s, step time, achieved TFLOP/s and MFU against a table of
              peak dense bf16 FLOP/s per device (null where unknown, e.g. CPU; there a measured f32 matmul roofline is
              reported instead).
``sampling``  ``sample.generate`` (KV cache, one compiled loop, sliding window) vs full recomputation with the same
              model, as the original sampled (``recompute_generate``) and as one compiled scan; flatness of the
              per-token cost, batched throughput, and a per-component breakdown (decode step, sampler, window slide)
              that explains the numbers.
``data``      ``shards.build_shards`` (default and explicit worker pool) vs a plain single-process miditok loop on
              real embedded-corpus chorales and on GiantMIDI-sized pieces made by concatenating them, and the cost
              of ``Shards.batch`` relative to a compiled train step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

# JAX, equinox and miditok are imported inside the functions: ``build_shards`` starts spawn workers, which re-import
# this module as ``__mp_main__`` under ``python -m``; keeping the top level light keeps their start-up honest.

# Peak dense bf16 FLOP/s per JAX device, by case-insensitive substring of ``device_kind`` (first match wins, so the
# more specific names come first). TPU v2/v3 expose 2 devices (cores) per chip: per-chip peak / 2.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),  # SXM
    ("gh200", 989e12),
    ("h200", 989e12),
    ("a100", 312e12),
    ("l40s", 362e12),
    ("l40", 181e12),
    ("l4", 121e12),
    ("t4", 65e12),  # fp16 tensor cores (no bf16 on Turing)
    ("p100", 18.7e12),  # fp16
    ("v100", 125e12),  # fp16 tensor cores
    ("tpu v2", 22.5e12),  # 45e12 per chip, 2 cores
    ("tpu v3", 61.5e12),  # 123e12 per chip, 2 cores
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),  # v5p reports "TPU v5"
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
    ("tpu v6", 918e12),
)

# Memory (HBM) bandwidth in bytes/s per JAX device, same matching rules.
HBM_BYTES_PER_S: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 2.0e12),
    ("h100 nvl", 3.9e12),
    ("h100", 3.35e12),  # SXM
    ("gh200", 4.0e12),
    ("h200", 4.8e12),
    ("a100-sxm4-80gb", 2.039e12),
    ("a100 80gb", 1.935e12),  # PCIe 80GB
    ("a100", 1.555e12),  # 40GB (SXM4 and PCIe)
    ("l40s", 0.864e12),
    ("l40", 0.864e12),
    ("l4", 0.3e12),
    ("t4", 0.32e12),
    ("p100", 0.732e12),
    ("v100", 0.9e12),
    ("tpu v2", 0.35e12),  # 0.7e12 per chip, 2 cores each with its own HBM
    ("tpu v3", 0.45e12),  # 0.9e12 per chip, 2 cores each with its own HBM
    ("tpu v4", 1.2e12),
    ("tpu v5 lite", 0.819e12),
    ("tpu v5e", 0.819e12),
    ("tpu v5p", 2.765e12),
    ("tpu v5", 2.765e12),
    ("tpu v6 lite", 1.64e12),
    ("tpu v6e", 1.64e12),
    ("tpu v6", 1.64e12),
)

CPU_VOCAB = 2048  # default vocabulary for the CPU-sized presets (a BPE tokenizer trained on the embedded corpus)
PRESET_VOCAB = {"base-100m": 10_000}  # the full-size model's default vocabulary


# ---------------------------------------------------------------------------------------------------- helpers


def lookup(table: tuple[tuple[str, float], ...], device_kind: str) -> float | None:
    """The value of the first table entry whose key is a substring of ``device_kind`` (case-insensitive)."""
    kind = device_kind.lower()
    return next((v for k, v in table if k in kind), None)


def peak_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind; None if unknown (CPU, unlisted accelerators)."""
    return lookup(PEAK_BF16_FLOPS, device_kind)


def hbm_bandwidth(device_kind: str) -> float | None:
    """Memory bandwidth (bytes/s) of one device of this kind; None if unknown (CPU, unlisted accelerators)."""
    return lookup(HBM_BYTES_PER_S, device_kind)


def default_vocab(preset_name: str) -> int:
    return PRESET_VOCAB.get(preset_name, CPU_VOCAB)


def _device_info() -> dict:
    import jax

    dev = jax.devices()[0]
    return {"device_kind": dev.device_kind, "platform": dev.platform, "devices": jax.device_count()}


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _block(x):
    import jax

    return jax.block_until_ready(x)


def timed(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn``, waiting for its result (``block_until_ready``)."""
    t0 = time.perf_counter()
    _block(fn())
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time several callables side by side: warm each up (compile), then run them in turn ``repeats`` times.

    Interleaving keeps the comparison fair on a shared machine: a burst of load slows every side of one round."""
    for fn in fns.values():
        for _ in range(warmup):
            _block(fn())
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for k, fn in fns.items():
            out[k].append(timed(fn))
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def _r(x: float | None, digits: int = 4) -> float | None:
    """Round to ``digits`` significant digits (None stays None)."""
    if x is None:
        return None
    return float(f"{x:.{digits}g}")


def _quiet_jax_warnings() -> None:
    # CPU cannot donate buffers; the train step donates its state. Harmless, and not what the user asked about.
    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    warnings.filterwarnings("ignore", message=".*[Dd]onation is not implemented.*")


def matmul_roofline(dtype=None, n: int = 1024, repeats: int = 5) -> float:
    """Measured FLOP/s of one jitted n x n @ n x n matmul on the default device (the practical roofline)."""
    import jax
    import jax.numpy as jnp

    dtype = dtype or jnp.float32
    a = jnp.ones((n, n), dtype)
    b = jnp.full((n, n), 0.5, dtype)
    f = jax.jit(lambda a, b: a @ b)
    t = median(interleaved({"mm": lambda: f(a, b)}, repeats)["mm"])
    return 2.0 * n**3 / t


# ---------------------------------------------------------------------------------------------------- training


def bench_training(
    preset_name: str = "demo",
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    steps: int = 5,
    dtype: str = "auto",
    fsdp: bool = False,
    vocab_size: int | None = None,
    accum_steps: int | None = None,
    seed: int = 0,
    roofline: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Throughput of the real train step (``train.make_train_step``) of a preset on the mesh of all devices.

    Random token batches (never PAD, so every target counts); the step is compiled and run once before ``steps``
    timed steps, each waited for; ``step_ms`` is their median. ``flops_per_token`` follows ``ModelConfig``'s PaLM
    convention with the attention term taken at the timed ``seq_len``. ``mfu`` is achieved FLOP/s over the bf16
    peak of all devices (null when the device is not in ``PEAK_BF16_FLOPS``, e.g. CPU); on CPU ``roofline`` gives
    the achieved rate against a measured f32 matmul instead."""
    import equinox as eqx
    import jax
    import numpy as np

    from tchaikovsky.config import preset
    from tchaikovsky.model import count_params
    from tchaikovsky.training.state import setup
    from tchaikovsky.config import compute_dtype
    from tchaikovsky.training.step import make_train_step

    _quiet_jax_warnings()
    vocab = vocab_size or default_vocab(preset_name)
    p = preset(preset_name, vocab_size=vocab, batch_size=batch_size, seq_len=seq_len, compute_dtype=dtype,
               fsdp=fsdp, accum_steps=accum_steps)
    mc, tc = p.model, p.train
    info = _device_info()
    cdtype = compute_dtype(tc.compute_dtype)
    n_dev = jax.device_count()
    log(f"training: preset={preset_name} d_model={mc.d_model} layers={mc.n_layers} vocab={vocab} "
        f"batch={tc.batch_size}x{tc.seq_len} accum={tc.accum_steps} dtype={np.dtype(cdtype).name} fsdp={tc.fsdp} "
        f"on {n_dev} x {info['device_kind']}")

    mesh, optim, state, shardings, batch_sharding = setup(mc, tc, seed=seed)  # exactly as train() starts
    n_params = count_params(state.model)
    state = eqx.filter_shard(state, shardings)
    step_fn = make_train_step(optim, cdtype, 0, shardings, batch_sharding)

    rng = np.random.default_rng(seed)
    shape = (tc.accum_steps, tc.micro_batch, tc.seq_len + 1)
    # one batch per call: the step donates its arguments, so a batch is never reused
    batches = [jax.device_put(rng.integers(1, vocab, size=shape, dtype=np.int32), batch_sharding)
               for _ in range(steps + 1)]

    t0 = time.perf_counter()
    state, metrics = _block(step_fn(state, batches[0]))
    compile_s = time.perf_counter() - t0
    log(f"  compiled + first step in {compile_s:.1f} s (loss {float(metrics['loss']):.3f})")
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, metrics = _block(step_fn(state, batches[i + 1]))
        times.append(time.perf_counter() - t0)
        log(f"  step {i + 1}/{steps}: {times[-1] * 1e3:.1f} ms")
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss} in the benchmark's train step")

    step_s = median(times)
    tokens = tc.batch_size * tc.seq_len
    tokens_per_s = tokens / step_s
    fpt = dataclasses.replace(mc, context=tc.seq_len).flops_per_token
    achieved = fpt * tokens_per_s
    per_dev = peak_flops(info["device_kind"])
    peak = None if per_dev is None else per_dev * n_dev
    result = {
        "bench": "training",
        "preset": preset_name,
        "tokens_per_s": _r(tokens_per_s),
        "step_ms": _r(step_s * 1e3),
        "step_ms_all": [_r(t * 1e3) for t in times],
        "compile_s": _r(compile_s, 3),
        **info,
        "dtype": np.dtype(cdtype).name,
        "fsdp": tc.fsdp,
        "batch_size": tc.batch_size,
        "accum_steps": tc.accum_steps,
        "seq_len": tc.seq_len,
        "vocab_size": vocab,
        "n_params": n_params,
        "flops_per_token": fpt,
        "achieved_tflops": _r(achieved / 1e12),
        "peak_tflops": None if peak is None else _r(peak / 1e12),
        "mfu": None if peak is None else _r(achieved / peak),
        "loss": _r(loss),
        "roofline": None,
        "load_avg": _load_avg(),
    }
    log(f"  {tokens_per_s:,.0f} tokens/s, {step_s * 1e3:.1f} ms/step, {achieved / 1e12:.4f} TFLOP/s achieved"
        + ("" if peak is None else f" of {peak / 1e12:.0f} peak: MFU {achieved / peak:.1%}"))
    if roofline if roofline is not None else info["platform"] == "cpu":
        mm = matmul_roofline(cdtype)
        result["roofline"] = {"achieved_gflops": _r(achieved / 1e9), "matmul_gflops": _r(mm / 1e9),
                              "fraction": _r(achieved / mm, 3)}
        log(f"  roofline: achieved {achieved / 1e9:.1f} GFLOP/s vs {mm / 1e9:.1f} GFLOP/s for a 1024^3 "
            f"{np.dtype(cdtype).name} matmul on this {info['platform']} ({achieved / mm:.0%})")
    return result


# ---------------------------------------------------------------------------------------------------- sampling


def _baseline_inputs(model, prompt, pad_id: int, dtype):
    """For the recompute baselines: the model in the compute dtype, the (context,) window holding the prompt's last
    <= context tokens right-padded with ``pad_id``, and the prompt's length there."""
    import numpy as np

    from tchaikovsky.model import cast
    from tchaikovsky.config import compute_dtype

    C = model.config.context
    prompt = np.asarray(prompt, np.int32).reshape(-1)[-C:]
    if prompt.size == 0:
        raise ValueError("prompt must hold at least one token")
    window = np.full(C, pad_id, np.int32)
    window[: prompt.size] = prompt
    return cast(model, dtype or compute_dtype("auto")), window, int(prompt.size)


@lru_cache(maxsize=1)
def _original_step():
    """The original's jitted per-token step (built lazily so importing this module does not import JAX)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    @eqx.filter_jit
    def step(model, window, length, key, temperature):
        logits = jnp.take(model(window), length - 1, axis=0)  # the logits of every position, then the last real one
        sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature > 0, sampled, jnp.argmax(logits))  # the original had no greedy mode

    return step


def recompute_generate(model, prompt, num_tokens: int, *, seed: int = 0, temperature: float = 1.0, pad_id: int = 0,
                       dtype=None):
    """The no-cache baseline, as the original TchAIkovsky sampled (its ``generate.py``): a Python loop that, for
    every new token, calls one jitted step on the whole window (the last <= context tokens, right-padded with PAD
    to the context so it compiles once), which runs the full causal forward, takes the logits at the last real
    position and samples with ``jax.random.categorical`` at the temperature; the token comes back to the host
    (``.item()``) to be written into the window, and once the window is full it drops its oldest token (slides by
    ONE). Same model and dtype as ``sample.generate``; temperature 0 takes the argmax.

    Returns the ``num_tokens`` new token ids (int32 numpy). Greedy it reproduces ``generate`` exactly until
    ``generate`` first slides its window. ``recompute_scan_generate`` is the same recomputation as one compiled
    ``lax.scan``, a stricter baseline the benchmark reports next to this one."""
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
    """The jitted recompute-baseline scan (built lazily so importing this module does not import JAX)."""
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
    """The same full recomputation as ``recompute_generate`` (whole padded window per token, slide by one), but
    stricter than the original: the whole loop is one jitted ``lax.scan`` (no per-token host round trip) and it
    samples with ``generate``'s own sampler (``sample.sample_token``), so XLA may also compute the head for the one
    position it needs. A comparison with ``generate`` is then compiled compute against compiled compute.

    Returns the ``num_tokens`` new token ids (int32 numpy). Greedy it reproduces ``generate`` exactly until
    ``generate`` first slides its window."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    run_model, window, n = _baseline_inputs(model, prompt, pad_id, dtype)
    toks = _recompute_scan_fn()(run_model, jnp.asarray(window), jnp.int32(n), jax.random.key(seed),
                                jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p), jnp.float32(min_p),
                                steps=int(num_tokens))
    return np.asarray(toks)


def slides_between(prompt_len: int, context: int, keep: int, start: int, stop: int) -> int:
    """How many window slides ``sample.generate`` performs while producing new tokens ``start .. stop-1``
    (0-based): it slides before the step whose write position would be ``context``, then continues at ``keep``."""
    pos, n = prompt_len, 0
    for i in range(stop):
        if pos == context:
            n += i >= start
            pos = keep
        pos += 1
    return n


def _breakdown(model, keep: int, repeats: int) -> dict:
    """Per-token cost of the pieces of one cached decoding step, each timed as its own compiled ``lax.scan`` (so no
    dispatch overhead), plus the window slide and one full forward; all in ms. ``sample_ms`` is ``generate``'s
    sampler (inverse CDF from pre-drawn uniforms); ``categorical_only_ms`` is ``jax.random.categorical`` alone, for
    reference (what Gumbel-max sampling, which draws V random numbers per token, would cost instead)."""
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
    return {k: (v if k == "slide_every" else _r(v)) for k, v in out.items()}


def predicted_flatness(b: dict, slides_first: int, slides_last: int, n: int = 100) -> float:
    """Flatness implied by a breakdown: n steps of decode + sample, plus each range's slides."""
    step = n * (b["decode_step_ms"] + b["sample_ms"])
    return (step + slides_last * b["slide_ms"]) / (step + slides_first * b["slide_ms"])


def bench_sampling(
    preset_name: str = "demo",
    *,
    tokens: int = 1024,
    batch: int = 64,
    batch_tokens: int | None = None,
    prompt_len: int = 16,
    recompute_tokens: int | None = None,
    repeats: int = 3,
    vocab_size: int | None = None,
    dtype: str = "auto",
    seed: int = 0,
    breakdown: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """KV-cached ``sample.generate`` vs full recomputation, for a randomly initialised model of a preset.

    * ``cached_tokens_per_s``: batch-1 ``generate`` of ``tokens`` new tokens after a ``prompt_len``-token prompt
      (the window slides past the context as in real use), wall time of the whole call, median of ``repeats``.
    * ``recompute_tokens_per_s``: the original's way (``recompute_generate``: a Python loop of one jitted full
      forward per token, host round trip, ``jax.random.categorical``) timed on ``recompute_tokens_timed`` tokens
      generated with the window already FULL (a prompt of ``context`` tokens). Its cost per token is the same for
      every token, before the window fills too (the window is always padded to the context), so on CPU a shorter
      run (default 128 tokens) measures the same per-token rate as 1024 would; on accelerators it runs ``tokens``.
    * ``speedup`` = cached / recompute tokens per second (same model and dtype; runs interleaved).
    * ``recompute_scan_tokens_per_s`` and ``speedup_vs_scan``: the same against ``recompute_scan_generate``, the
      recomputation as one compiled scan with ``generate``'s sampler: what caching alone buys, with the per-token
      host round trip and the full-width head taken out of the baseline.
    * ``flatness`` = mean time per token of the last 100 of ``tokens`` new tokens over that of the first 100. Each
      is the difference of two whole ``generate`` calls that follow the identical trajectory (same seed):
      ``T(tokens) - T(tokens-100)`` and ``T(101) - T(1)``, so the prompt prefill, dispatch and host work cancel and
      what remains is exactly the compiled decoding work (window slides included) of those 100 steps. The four
      calls are timed in turn, ``max(5, repeats)`` times, and each T is the MINIMUM over the repeats (a shared
      machine's load only adds time, and a difference of medians amplifies it); ``slides_in_first100`` and
      ``slides_in_last100`` say how many window slides fall into each range.
    * ``batch64_tokens_per_s``: ``generate`` of ``batch`` sequences (seeds 0..batch-1) x ``batch_tokens`` tokens
      (default ``tokens``; 256 on CPU, where a batch of 64 decodes slowly), timed ``max(1, repeats // 2)`` times
      after a warm-up run; null unless ``batch == 64`` (``batch_tokens_per_s`` always holds the rate).
    * ``bandwidth_bound_tokens_per_s``: batch-1 decoding cannot beat memory bandwidth / parameter bytes (every
      weight is read once per token); null where the bandwidth is unknown (CPU).
    * ``breakdown``: the per-token cost of the pieces of a cached step, each as its own compiled scan (see
      ``_breakdown``), to explain where the cached time goes; its ``predicted_flatness`` (100 decode + sample steps
      plus each range's slides) is a low-noise cross-check of the measured ``flatness`` on a busy machine.
    """
    import jax
    import numpy as np

    from tchaikovsky.config import preset
    from tchaikovsky.model import build, count_params
    from tchaikovsky.generate.sampling import default_keep, generate
    from tchaikovsky.config import compute_dtype

    vocab = vocab_size or default_vocab(preset_name)
    mc = preset(preset_name, vocab_size=vocab).model
    C = mc.context
    if not 1 <= prompt_len <= C:
        raise ValueError(f"prompt_len={prompt_len} must be in 1..{C}")
    info = _device_info()
    cdtype = compute_dtype(dtype)
    recompute_tokens = recompute_tokens or (min(tokens, 128) if info["platform"] == "cpu" else tokens)
    batch_tokens = batch_tokens or (min(tokens, 256) if info["platform"] == "cpu" else tokens)
    batch_repeats = max(1, repeats // 2)
    keep = default_keep(C)  # generate's default
    model = build(mc, jax.random.key(seed))  # one compiled call, as train() builds it
    n_params = count_params(model)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, vocab, size=prompt_len, dtype=np.int32)
    full_prompt = rng.integers(1, vocab, size=C, dtype=np.int32)
    dname = np.dtype(cdtype).name
    log(f"sampling: preset={preset_name} context={C} vocab={vocab} params={n_params:,} dtype={dname} "
        f"on {info['device_kind']}; prompt {prompt_len} tokens, keep {keep} on a slide")

    def cached(n: int, b: int = 1):
        seeds = 0 if b == 1 else list(range(b))
        return lambda: generate(model, prompt, n, seed=seeds, temperature=1.0, dtype=cdtype)

    recompute = lambda: recompute_generate(model, full_prompt, recompute_tokens, seed=0, dtype=cdtype)  # noqa: E731
    scan = lambda: recompute_scan_generate(model, full_prompt, recompute_tokens, seed=0, dtype=cdtype)  # noqa: E731

    log(f"  cached {tokens} tokens vs recompute {recompute_tokens} tokens (full window; the original's per-token "
        f"loop, and as one compiled scan), {repeats} repeats ...")
    t = interleaved({"cached": cached(tokens), "recompute": recompute, "scan": scan}, repeats)
    cached_tps = tokens / median(t["cached"])
    recompute_tps = recompute_tokens / median(t["recompute"])
    scan_tps = recompute_tokens / median(t["scan"])
    log(f"  cached {cached_tps:,.1f} tokens/s, recompute {recompute_tps:,.1f} tokens/s (as one scan: "
        f"{scan_tps:,.1f}): speedup {cached_tps / recompute_tps:.1f}x ({cached_tps / scan_tps:.1f}x vs the scan)")

    flat = {"flatness": None, "first100_ms_per_token": None, "last100_ms_per_token": None,
            "slides_in_first100": None, "slides_in_last100": None}
    if tokens >= 101:
        log("  flatness: timing generate(1), generate(101), generate(tokens-100), generate(tokens) ...")
        fns = {"t1": cached(1), "t101": cached(101), "tlo": cached(tokens - 100), "thi": cached(tokens)}
        for fn in fns.values():
            _block(fn())
        t = {k: [] for k in fns}
        for _ in range(max(5, repeats)):
            for k in ("t1", "t101", "tlo", "thi"):  # each pair back to back
                t[k].append(timed(fns[k]))
        # the minimum over repeats: load on a shared machine only ever adds time, and a difference of two noisy
        # medians is far noisier than the difference of two noise floors
        first = min(t["t101"]) - min(t["t1"])
        last = min(t["thi"]) - min(t["tlo"])
        flat = {
            "flatness": _r(last / first, 3) if first > 0 else None,
            "first100_ms_per_token": _r(first / 100 * 1e3),
            "last100_ms_per_token": _r(last / 100 * 1e3),
            "slides_in_first100": slides_between(prompt_len, C, keep, 0, 100),
            "slides_in_last100": slides_between(prompt_len, C, keep, tokens - 100, tokens),
        }
        log(f"  first 100 tokens {flat['first100_ms_per_token']} ms/token ({flat['slides_in_first100']} slides), "
            f"last 100 {flat['last100_ms_per_token']} ms/token ({flat['slides_in_last100']} slides): "
            f"flatness {flat['flatness']}")

    log(f"  batch {batch} x {batch_tokens} tokens ...")
    tb = interleaved({"batch": cached(batch_tokens, batch)}, batch_repeats)
    batch_tps = batch * batch_tokens / median(tb["batch"])
    log(f"  batch {batch}: {batch_tps:,.0f} tokens/s")

    param_bytes = n_params * np.dtype(cdtype).itemsize
    bw = hbm_bandwidth(info["device_kind"])
    bound = None if bw is None else bw / param_bytes
    result = {
        "bench": "sampling",
        "preset": preset_name,
        "context": C,
        "prompt_len": prompt_len,
        "tokens": tokens,
        "keep": keep,
        "n_params": n_params,
        "vocab_size": vocab,
        **info,
        "dtype": dname,
        "cached_tokens_per_s": _r(cached_tps),
        "recompute_tokens_per_s": _r(recompute_tps),
        "recompute_tokens_timed": recompute_tokens,
        "speedup": _r(cached_tps / recompute_tps),
        "recompute_method": "the original's: Python loop, one jitted full forward per token, .item(), categorical",
        "recompute_scan_tokens_per_s": _r(scan_tps),
        "speedup_vs_scan": _r(cached_tps / scan_tps),
        **flat,
        "flatness_method": "differences of whole generate calls on one trajectory, min over repeats: "
                           "[T(tokens)-T(tokens-100)] / [T(101)-T(1)]",
        "batch": batch,
        "batch_tokens": batch_tokens,
        "batch_repeats": batch_repeats,
        "batch_tokens_per_s": _r(batch_tps),
        "batch64_tokens_per_s": _r(batch_tps) if batch == 64 else None,
        "param_bytes": param_bytes,
        "hbm_bytes_per_s": bw,
        "bandwidth_bound_tokens_per_s": _r(bound),
        "bandwidth_fraction": None if bound is None else _r(cached_tps / bound, 3),
        "breakdown": None,
        "load_avg": _load_avg(),
    }
    if breakdown:
        log("  breakdown: decode step, sampler, window slide, full forward, each as its own compiled scan ...")
        b = result["breakdown"] = _breakdown(_cast(model, cdtype), keep, repeats)
        if flat["flatness"] is not None:
            implied = predicted_flatness(b, flat["slides_in_first100"], flat["slides_in_last100"])
            b["predicted_flatness"] = _r(implied, 3)
        log(f"  per token: decode {b['decode_step_ms']} ms + sample {b['sample_ms']} ms (categorical alone "
            f"{b['categorical_only_ms']}) + slide {b['slide_ms']} ms / {b['slide_every']} = "
            f"{b['predicted_ms_per_token']} ms predicted vs {1e3 / cached_tps:.4g} measured; "
            f"full forward {b['full_forward_ms']} ms"
            + ("" if "predicted_flatness" not in b else f"; flatness implied by these: {b['predicted_flatness']}"))
    return result


def _cast(model, dtype):
    from tchaikovsky.model import cast

    return cast(model, dtype)


# ---------------------------------------------------------------------------------------------------- data


def concat_scores(paths, out: Path) -> dict:
    """Write the pieces at ``paths`` one after another into one MIDI file (tracks merged by program, tempos and
    time signatures kept); return its note count and duration. Emulates a long (GiantMIDI-sized) piece."""
    from symusic import Score

    scores = [Score(str(p)) for p in paths]
    tpq = scores[0].ticks_per_quarter
    merged = Score(tpq)
    tracks = {}  # (program, is_drum, name) -> the merged track
    offset = 0
    for s in scores:
        if s.ticks_per_quarter != tpq:
            s = s.resample(tpq)
        s = s.shift_time(offset)
        for t in s.tracks:
            key = (t.program, t.is_drum, t.name)
            if key not in tracks:
                empty = t.copy()
                empty.notes.clear()
                merged.tracks.append(empty)
                tracks[key] = merged.tracks[-1]
            tracks[key].notes.extend(t.notes)
        merged.tempos.extend(s.tempos)
        merged.time_signatures.extend(s.time_signatures)
        offset = s.end()
    merged.dump_midi(str(out))
    back = Score(str(out))
    return {"notes": back.note_num(), "seconds": float(back.to("second").end())}


def _files_rate(pieces, tok, workers_list, repeats: int, log, label: str) -> dict:
    """build_shards (fresh directory each run) for each workers setting vs a plain miditok loop, interleaved."""
    from tchaikovsky.data.shards import _auto_workers, build_shards

    paths = [p.path for p in pieces]
    n = len(pieces)
    size = sum(os.path.getsize(p) for p in paths)
    tmp = Path(tempfile.mkdtemp(prefix="tchaikovsky-bench-shards-"))
    runs = [0]

    def baseline():
        for p in paths:
            tok.encode(Path(p))

    def shards(workers):
        def run():
            runs[0] += 1
            return build_shards(tok, pieces, tmp / f"run{runs[0]}", workers=workers, progress=False)
        return run

    tok.encode(Path(paths[0]))  # warm the tokenizer's lazy state
    fns = {"baseline": baseline, **{f"workers={w}": shards(w) for w in workers_list}}
    t = interleaved(fns, repeats, warmup=0)
    shutil.rmtree(tmp, ignore_errors=True)
    default_workers = _auto_workers([("", str(p)) for p in paths])
    base = n / median(t["baseline"])
    out = {"n_files": n, "mb": _r(size / 1e6, 3), "baseline_files_per_s": _r(base),
           "default_workers": default_workers}
    for w in workers_list:
        rate = n / median(t[f"workers={w}"])
        name = "default" if w is None else "pool"
        out[f"{name}_files_per_s"] = _r(rate)
        out[f"{name}_speedup"] = _r(rate / base, 3)
        if w is not None:
            out["pool_workers"] = w
    log(f"  {label}: {n} files, {size / 1e6:.2f} MB: plain miditok loop {base:.1f} files/s; build_shards default "
        f"({default_workers} worker{'s' if default_workers > 1 else ''}) {out['default_files_per_s']} files/s "
        f"({out['default_speedup']}x)"
        + (f"; explicit {out['pool_workers']}-worker pool {out['pool_files_per_s']} files/s ({out['pool_speedup']}x)"
           if "pool_workers" in out else ""))
    return out


def bench_data(
    files: int = 60,
    *,
    workers: int = 2,
    concat: int = 11,
    long_files: int | None = None,
    preset_name: str = "demo",
    vocab_size: int | None = None,
    cache_dir: str | None = None,
    repeats: int = 3,
    batch_repeats: int = 50,
    train_steps: int = 3,
    log: Callable[[str], None] = print,
) -> dict:
    """Tokenization throughput of ``shards.build_shards`` vs a plain single-process miditok loop, and the cost of
    ``Shards.batch`` relative to a compiled train step.

    Pieces: ``files`` real Bach chorales exported from the embedded music21 corpus (``load_corpus("")``), ~290 notes
    and ~35 s each. Those are much smaller than the piano pieces one trains on (GiantMIDI-Piano: ~3,200 notes and
    ~7 min on average), and with small files the per-file and per-worker start-up costs dominate, so the benchmark
    also builds ``long_files`` GiantMIDI-sized pieces, each the concatenation of ``concat`` consecutive chorales
    (default 11: ~3,200 notes, ~6 min), and reports both sets (``chorales``, ``long``). ``long_files`` defaults to
    twice ``files``: a real corpus has thousands of pieces, so the workers' one-off start-up should weigh no more
    than the benchmark's time budget forces it to. Each variant runs ``repeats`` times, interleaved; medians.

    For each set: ``baseline_files_per_s`` (``tok.encode(path)`` per file, one process), ``default_files_per_s``
    (``build_shards(workers=None)``: a pool of all cores only if the files total >= 2 MB, else in-process;
    ``default_workers`` says which), ``pool_files_per_s`` (explicit ``workers``-process spawn pool), each into a
    fresh directory (no cache), and their speedups over the baseline. The top-level ``files_per_s``,
    ``baseline_files_per_s`` and ``speedup`` are the default ``build_shards`` on the long set (the chorales when
    ``concat <= 1``). ``build_shards`` also writes the per-piece cache, the split arrays and the index, so it does
    strictly more than the baseline.

    ``batch_ms``: median ``Shards.batch`` for the preset's batch_size x seq_len (memory-mapped shards of the long
    set); ``train_step_ms``: that preset's compiled train step here (``bench_training``); ``batch_fraction`` =
    batch_ms / train_step_ms (the share a synchronous loader would add to a step).
    """
    import numpy as np

    from tchaikovsky.config import preset
    from tchaikovsky.data.corpus import Piece, load_corpus
    from tchaikovsky.data.shards import Shards, build_shards
    from tchaikovsky.data.tokenizer import train_tokenizer

    warnings.filterwarnings("ignore", message=".*BPE ran out of merges.*")
    vocab = vocab_size or default_vocab(preset_name)
    t0 = time.perf_counter()
    corpus = load_corpus("", max_files=files, cache_dir=cache_dir, progress=False)
    pieces = corpus.pieces
    log(f"data: {len(pieces)} embedded chorales ready in {time.perf_counter() - t0:.1f} s (root {corpus.root})")
    t0 = time.perf_counter()
    tok = train_tokenizer([p.path for p in pieces], vocab, progress=False)
    log(f"  BPE tokenizer: {len(tok)} ids, trained in {time.perf_counter() - t0:.1f} s")
    notes = [_note_count(p.path) for p in pieces]

    workers_list = [None, workers]
    result: dict = {"bench": "data", "preset": preset_name, "tokenizer_vocab": len(tok), "cpu_count": os.cpu_count(),
                    "repeats": repeats}
    chorales = _files_rate(pieces, tok, workers_list, repeats, log, "chorales")
    chorales["notes_per_file"] = _r(float(np.mean(notes)))
    result["chorales"] = chorales

    tmp = Path(tempfile.mkdtemp(prefix="tchaikovsky-bench-long-"))
    try:
        main_pieces = pieces
        if concat > 1:
            n_long = long_files or 2 * len(pieces)
            t0 = time.perf_counter()
            long_pieces, stats = [], []
            for i in range(n_long):
                srcs = [pieces[(i + j) % len(pieces)].path for j in range(concat)]
                rel = f"long_{i:03d}.mid"
                stats.append(concat_scores(srcs, tmp / rel))
                long_pieces.append(Piece(path=tmp / rel, rel_path=rel, composer="Johann Sebastian Bach"))
            log(f"  long pieces: {n_long} files of {concat} chorales each, "
                f"{np.mean([s['notes'] for s in stats]):.0f} notes and "
                f"{np.mean([s['seconds'] for s in stats]) / 60:.1f} min on average "
                f"(written in {time.perf_counter() - t0:.1f} s)")
            long = _files_rate(long_pieces, tok, workers_list, repeats, log, "long")
            long.update(concat=concat, notes_per_file=_r(float(np.mean([s["notes"] for s in stats]))),
                        minutes_per_file=_r(float(np.mean([s["seconds"] for s in stats])) / 60, 3))
            result["long"] = long
            main_pieces, main = long_pieces, long
        else:
            result["long"] = None
            main = chorales
        result.update(files_per_s=main["default_files_per_s"], baseline_files_per_s=main["baseline_files_per_s"],
                      speedup=main["default_speedup"], default_workers=main["default_workers"],
                      pool_files_per_s=main["pool_files_per_s"], pool_speedup=main["pool_speedup"],
                      pool_workers=workers, measured_on="long" if concat > 1 else "chorales")

        tc = preset(preset_name, vocab_size=vocab).train
        out = build_shards(tok, main_pieces, tmp / "shards", progress=False)
        shards = Shards(out)
        shards.batch(0, tc.batch_size, tc.seq_len)
        times = [timed(lambda s=s: shards.batch(s, tc.batch_size, tc.seq_len)) for s in range(1, batch_repeats + 1)]
        batch_ms = median(times) * 1e3
        log(f"  Shards.batch({tc.batch_size} x {tc.seq_len}) over {shards.n_tokens():,} tokens: {batch_ms:.3f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    log(f"  train step of the {preset_name} preset for comparison ...")
    tr = bench_training(preset_name, steps=train_steps, vocab_size=vocab, roofline=False, log=lambda s: None)
    result.update(batch_ms=_r(batch_ms), batch_size=tc.batch_size, seq_len=tc.seq_len, train_step_ms=tr["step_ms"],
                  batch_fraction=_r(batch_ms / tr["step_ms"], 3), device_kind=tr["device_kind"],
                  load_avg=_load_avg())
    log(f"  batch {batch_ms:.3f} ms vs train step {tr['step_ms']} ms: {result['batch_fraction']:.3g} of a step")
    return result


def _note_count(path) -> int:
    from symusic import Score

    return Score(str(path)).note_num()


# ---------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("training", help="tokens/s, step time and MFU of the real train step")
    t.add_argument("--preset", default="demo")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seq-len", type=int)
    t.add_argument("--accum-steps", type=int)
    t.add_argument("--steps", type=int, default=5, help="timed steps after the compile step (median reported)")
    t.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    t.add_argument("--fsdp", action="store_true")
    t.add_argument("--vocab-size", type=int, help="default: 2048, or 10000 for base-100m")
    t.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sampling", help="KV-cached generate vs full recomputation, flatness, batched throughput")
    s.add_argument("--preset", default="demo")
    s.add_argument("--tokens", type=int, default=1024)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--batch-tokens", type=int,
                   help="tokens per sequence of the batched run (default: --tokens; at most 256 on CPU)")
    s.add_argument("--prompt-len", type=int, default=16)
    s.add_argument("--recompute-tokens", type=int,
                   help="tokens timed for the recompute baseline (default: 128 on CPU, --tokens elsewhere)")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    s.add_argument("--vocab-size", type=int)
    s.add_argument("--no-breakdown", action="store_true")
    s.add_argument("--seed", type=int, default=0)

    d = sub.add_parser("data", help="build_shards vs a plain miditok loop; Shards.batch vs a train step")
    d.add_argument("--files", type=int, default=60)
    d.add_argument("--workers", type=int, default=2, help="the explicit pool's size")
    d.add_argument("--concat", type=int, default=11,
                   help="chorales per long (GiantMIDI-sized) piece; <= 1 skips the long set")
    d.add_argument("--long-files", type=int, help="number of long pieces (default 2 x --files)")
    d.add_argument("--preset", default="demo", help="for batch_size x seq_len and the train step")
    d.add_argument("--vocab-size", type=int)
    d.add_argument("--cache-dir", help="embedded-corpus cache (default: tchaikovsky.data.embedded.default_cache_dir())")
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--train-steps", type=int, default=3)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    log = partial(print, flush=True)
    if args.command == "training":
        result = bench_training(args.preset, batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps,
                                dtype=args.dtype, fsdp=args.fsdp, vocab_size=args.vocab_size,
                                accum_steps=args.accum_steps, seed=args.seed, log=log)
    elif args.command == "sampling":
        result = bench_sampling(args.preset, tokens=args.tokens, batch=args.batch, batch_tokens=args.batch_tokens,
                                prompt_len=args.prompt_len, recompute_tokens=args.recompute_tokens,
                                repeats=args.repeats, vocab_size=args.vocab_size, dtype=args.dtype, seed=args.seed,
                                breakdown=not args.no_breakdown, log=log)
    else:
        result = bench_data(args.files, workers=args.workers, concat=args.concat, long_files=args.long_files,
                            preset_name=args.preset, vocab_size=args.vocab_size, cache_dir=args.cache_dir,
                            repeats=args.repeats, train_steps=args.train_steps, log=log)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
