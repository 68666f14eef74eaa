"""``python -m benchmarks training``: throughput and model-FLOPs utilisation of the package's real train step.

The run starts exactly as training does (``tchaikovsky.training.state.setup``: mesh of all devices, model,
optimizer, state, shardings) and times the step of ``tchaikovsky.training.step.make_train_step`` (AdamW, clipping,
accumulation scan) on random token batches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from benchmarks.common import (block, default_vocab, device_info, load_avg, matmul_roofline, median, peak_flops,
                               quiet_jax_warnings, rounded)


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
    """Throughput of the real train step of a preset on the mesh of all devices; returns the result dict.

    Random token batches (never PAD, so every target counts); the step is compiled and run once before ``steps``
    timed steps, each waited for; ``step_ms`` is their median and ``tokens_per_s`` = batch x seq_len / step time.
    ``flops_per_token`` is ``ModelConfig.flops_per_token`` with the attention term at the timed ``seq_len``;
    ``mfu`` = achieved FLOP/s over the bf16 peak of all devices (``PEAK_BF16_FLOPS``; null when the device is not
    listed, e.g. CPU). ``roofline`` (default: on CPU only) adds the achieved rate against a measured matmul of the
    compute dtype. Raises ``FloatingPointError`` on a non-finite loss."""
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
    state, metrics = block(step_fn(state, batches[0]))
    compile_s = time.perf_counter() - t0
    log(f"  compiled + first step in {compile_s:.1f} s (loss {float(metrics['loss']):.3f})")
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, metrics = block(step_fn(state, batches[i + 1]))
        times.append(time.perf_counter() - t0)
        log(f"  step {i + 1}/{steps}: {times[-1] * 1e3:.1f} ms")
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss} in the benchmark's train step")

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
    if roofline if roofline is not None else info["platform"] == "cpu":
        mm = matmul_roofline(cdtype)
        result["roofline"] = {"achieved_gflops": rounded(achieved / 1e9), "matmul_gflops": rounded(mm / 1e9),
                              "fraction": rounded(achieved / mm, 3)}
        log(f"  roofline: achieved {achieved / 1e9:.1f} GFLOP/s vs {mm / 1e9:.1f} GFLOP/s for a 1024^3 "
            f"{np.dtype(cdtype).name} matmul on this {info['platform']} ({achieved / mm:.0%})")
    return result
