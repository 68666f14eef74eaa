"""What every benchmark shares: device tables, timing helpers, the matmul roofline and the JSON result line.

Rules every measurement follows:

* only compiled work is timed: every jitted function runs once first (compilation, warm-up), then each timed call
  ends in ``jax.block_until_ready`` (or returns host numpy, which waits too), and the median of the repeats is kept;
* performance claims are ratios measured side by side in one run, the sides interleaved repeat by repeat so a busy
  machine slows both alike; absolute rates depend on the machine and its load (``load_avg`` is reported).

JAX is imported inside the functions: ``build_shards`` starts spawn workers, which re-import the ``__main__``
module under ``python -m benchmarks``; a light top level keeps their start-up cost what a user would see.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

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
    """The vocabulary a benchmark of ``preset_name`` uses unless told otherwise."""
    return PRESET_VOCAB.get(preset_name, CPU_VOCAB)


def device_info() -> dict:
    """``device_kind`` and ``platform`` of the first JAX device, and the number of ``devices``."""
    import jax

    dev = jax.devices()[0]
    return {"device_kind": dev.device_kind, "platform": dev.platform, "devices": jax.device_count()}


def load_avg() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def block(x):
    """``x``, once every array in it is computed."""
    import jax

    return jax.block_until_ready(x)


def timed(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn``, waiting for its result (``block_until_ready``)."""
    t0 = time.perf_counter()
    block(fn())
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time several callables side by side: warm each up ``warmup`` times (compile), then run them in turn
    ``repeats`` times (at least once). Returns the seconds of every timed call, by name.

    Interleaving keeps the comparison fair on a shared machine: a burst of load slows every side of one round."""
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for k, fn in fns.items():
            out[k].append(timed(fn))
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def rounded(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded to ``digits`` significant digits (None stays None)."""
    if x is None:
        return None
    return float(f"{x:.{digits}g}")


def quiet_jax_warnings() -> None:
    """Silence the warnings about buffer donation: CPU cannot donate, and the train step donates its state."""
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


def emit(result: dict) -> dict:
    """Print ``result`` as the one JSON line that ends a benchmark's output (after flushing the progress lines)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return result
