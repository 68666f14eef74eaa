"""``python -m benchmarks training``: throughput and model-FLOPs utilisation of the package's real train step.

The run starts exactly as training does (``tchaikovsky.training.state.setup``: mesh of all devices, model,
optimizer, state, shardings) and times the step of ``tchaikovsky.training.step.make_train_step`` (AdamW, clipping,
accumulation scan) on random token batches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from benchmarks.common import (block, default_vocab, device_info, load_avg, median, peak_flops, quiet_jax_warnings,
                               rounded)


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
    compare_old: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Throughput of the real train step of a preset on the mesh of all devices; returns the result dict.

    Random token batches (never PAD, so every target counts); the step is compiled and run once before ``steps``
    timed steps, each waited for; ``step_ms`` is their median and ``tokens_per_s`` = batch x seq_len / step time.
    ``flops_per_token`` is ``ModelConfig.flops_per_token`` with the attention term at the timed ``seq_len``;
    ``mfu`` = achieved FLOP/s over the bf16 peak of all devices (``PEAK_BF16_FLOPS``; null when the device is not
    listed, e.g. CPU). ``roofline`` (default: on CPU only) adds the achieved rate against a measured 1024^3 matmul
    of the compute dtype, timed once in every round of steps. ``compare_old`` (default: on CPU only) also builds the
    step as it was traced before the CPU fast paths (the model built with ``ModelConfig.cpu_fast_paths=False``:
    ``dot_product_attention``, a rolled layer scan) from the same initial state, and times both interleaved step by
    step (a busy machine slows both alike): ``old`` holds its figures, ``speedup`` the ratio of median step times,
    ``first_loss_rel_diff`` how far apart the two steps' first losses (same weights, same batch) are. Raises
    ``FloatingPointError`` on a non-finite loss."""
    import equinox as eqx
    import jax
    import numpy as np

    from tchaikovsky.config import compute_dtype, preset
    from tchaikovsky.model import count_params
    from tchaikovsky.training.state import setup
    from tchaikovsky.training.step import make_train_step

    quiet_jax_warnings()
    vocab = vocab_size or default_vocab(preset_name)
    p = preset(preset_name, vocab_size=vocab, batch_size=batch_size, seq_len=seq_len, compute_dtype=dtype,
               fsdp=fsdp, accum_steps=accum_steps)
    mc, tc = p.model, p.train
    info = device_info()
    cdtype = compute_dtype(tc.compute_dtype)
    n_dev = jax.device_count()
    log(f"training: preset={preset_name} d_model={mc.d_model} layers={mc.n_layers} vocab={vocab} "
        f"batch={tc.batch_size}x{tc.seq_len} accum={tc.accum_steps} dtype={np.dtype(cdtype).name} fsdp={tc.fsdp} "
        f"on {n_dev} x {info['device_kind']}")

    compare_old = info["platform"] == "cpu" if compare_old is None else compare_old
    mesh, optim, state, shardings, batch_sharding = setup(mc, tc, seed=seed)  # exactly as train() starts
    n_params = count_params(state.model)
    state = eqx.filter_shard(state, shardings)
    step_fn = make_train_step(optim, cdtype, 0, shardings, batch_sharding)
    sides = {"new": [step_fn, state]}
    if compare_old:  # the same initial weights again (the step donates them), in a model traced the old way
        old = setup(dataclasses.replace(mc, cpu_fast_paths=False), tc, seed=seed)  # its own (static) model config
        old_step = make_train_step(old.optim, cdtype, 0, old.shardings, old.batch_sharding)
        sides["old"] = [old_step, eqx.filter_shard(old.state, old.shardings)]

    rng = np.random.default_rng(seed)
    shape = (tc.accum_steps, tc.micro_batch, tc.seq_len + 1)
    # one batch per call: the step donates its arguments, so a batch is never reused
    host = [rng.integers(1, vocab, size=shape, dtype=np.int32) for _ in range(steps + 1)]
    batches = {k: [jax.device_put(b, batch_sharding) for b in host] for k in sides}

    compile_s, first_loss, times = {}, {}, {k: [] for k in sides}
    for k, side in sides.items():
        t0 = time.perf_counter()
        side[1], metrics = block(side[0](side[1], batches[k][0]))
        compile_s[k] = time.perf_counter() - t0
        first_loss[k] = float(metrics["loss"])
    log(f"  compiled + first step in {compile_s['new']:.1f} s (loss {first_loss['new']:.3f})"
        + (f"; old step {compile_s['old']:.1f} s (loss {first_loss['old']:.3f})" if compare_old else ""))
    # the roofline matmul is timed in the same rounds as the steps, so load on a shared machine moves both alike
    import jax.numpy as jnp

    n_mm = 1024
    mm_a, mm_b = jnp.ones((n_mm, n_mm), cdtype), jnp.full((n_mm, n_mm), 0.5, cdtype)
    mm_f = jax.jit(lambda a, b: a @ b)
    block(mm_f(mm_a, mm_b))
    mm_times, mm_reps = [], 8  # 8 back to back (~40 ms on 2 quiet cores): one short matmul is at the scheduler's mercy
    for i in range(steps):
        t0 = time.perf_counter()
        block([mm_f(mm_a, mm_b) for _ in range(mm_reps)])
        mm_times.append((time.perf_counter() - t0) / mm_reps)
        for k, side in sides.items():
            t0 = time.perf_counter()
            side[1], metrics = block(side[0](side[1], batches[k][i + 1]))
            times[k].append(time.perf_counter() - t0)
            if k == "new":
                loss = float(metrics["loss"])
        log(f"  step {i + 1}/{steps}: {times['new'][-1] * 1e3:.1f} ms"
            + (f" (old step {times['old'][-1] * 1e3:.1f} ms)" if compare_old else ""))
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss} in the benchmark's train step")
    state = sides["new"][1]
    compile_s = compile_s["new"]
    old_s = median(times["old"]) if compare_old else None
    times = times["new"]

    step_s = median(times)
    tokens_per_s = tc.batch_size * tc.seq_len / step_s
    fpt = dataclasses.replace(mc, context=tc.seq_len).flops_per_token
    achieved = fpt * tokens_per_s
    per_dev = peak_flops(info["device_kind"])
    peak = None if per_dev is None else per_dev * n_dev
    result = {
        "bench": "training",
        "preset": preset_name,
        "tokens_per_s": rounded(tokens_per_s),
        "step_ms": rounded(step_s * 1e3),
        "step_ms_all": [rounded(t * 1e3) for t in times],
        "compile_s": rounded(compile_s, 3),
        **info,
        "dtype": np.dtype(cdtype).name,
        "fsdp": tc.fsdp,
        "batch_size": tc.batch_size,
        "accum_steps": tc.accum_steps,
        "seq_len": tc.seq_len,
        "vocab_size": vocab,
        "n_params": n_params,
        "flops_per_token": fpt,
        "achieved_tflops": rounded(achieved / 1e12),
        "peak_tflops": None if peak is None else rounded(peak / 1e12),
        "mfu": None if peak is None else rounded(achieved / peak),
        "loss": rounded(loss),
        "roofline": None,
        "load_avg": load_avg(),
    }
    log(f"  {tokens_per_s:,.0f} tokens/s, {step_s * 1e3:.1f} ms/step, {achieved / 1e12:.4f} TFLOP/s achieved"
        + ("" if peak is None else f" of {peak / 1e12:.0f} peak: MFU {achieved / peak:.1%}"))
    mm = None
    if roofline if roofline is not None else info["platform"] == "cpu":
        mm = 2.0 * n_mm**3 / median(mm_times)
        result["roofline"] = {"achieved_gflops": rounded(achieved / 1e9), "matmul_gflops": rounded(mm / 1e9),
                              "fraction": rounded(achieved / mm, 3)}
        log(f"  roofline: achieved {achieved / 1e9:.1f} GFLOP/s vs {mm / 1e9:.1f} GFLOP/s for a 1024^3 "
            f"{np.dtype(cdtype).name} matmul timed between the steps on this {info['platform']} ({achieved / mm:.0%})")
    if old_s is not None:
        old_tps = tc.batch_size * tc.seq_len / old_s
        rel = abs(first_loss["new"] - first_loss["old"]) / abs(first_loss["old"])
        result["old"] = {"tokens_per_s": rounded(old_tps), "step_ms": rounded(old_s * 1e3),
                         "roofline_fraction": None if mm is None else rounded(fpt * old_tps / mm, 3)}
        result["speedup"] = rounded(old_s / step_s, 3)
        result["first_loss_rel_diff"] = rounded(rel, 2)
        log(f"  old step (dot_product_attention, rolled layer scan), timed interleaved: {old_tps:,.0f} tokens/s, "
            f"{old_s * 1e3:.1f} ms/step" + ("" if mm is None else f", {fpt * old_tps / mm:.0%} of the roofline")
            + f"; new/old speedup {old_s / step_s:.2f}x; first losses differ by {rel:.1e} (relative)")
    return result
