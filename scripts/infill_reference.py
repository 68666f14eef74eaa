"""The infilling reference (issue #22): what fill-in-the-middle training buys, and what it costs, under the protocol.

    python scripts/infill_reference.py --fim runs/conditioning-fim/finetune --plain runs/conditioning-pretrained/finetune

``--fim`` is a conditioned fine-tune trained with ``fim_rate`` > 0 and ``--plain`` the same recipe (same data,
steps and seed) with ``fim_rate`` 0: ``make reference-infilling`` trains both with
``scripts/conditioning_reference.py --pretrain-conditions``, the FIM one with ``--fim-rate 0.5 --pretrain-fim``
(fill-in-the-middle windows in the pretraining and the fine-tune). On the test role's held-out pieces, bars 5-8 of their
first 16 taken out:

1. the cost: left-to-right held-out loss (nats per token) of both models on the same windows of the test pieces,
   with a paired bootstrap interval of the relative difference (the issue allows FIM at most 2%);
2. ``evaluation.infill.measure_infilling``: bits per note of the real middle given prefix and suffix against the
   prefix only, OA of the regenerated bars against the real ones, pitch jumps and onset gaps at both seams against
   the real seams, and how often the model closed the middle itself; then the same bits per note with only the
   first 0, 1, 2 or 4 bars of the suffix (``evaluation.infill.suffix_sweep``): how much of it helps;
3. conditioned infilling: the bars regenerated "as" each composer, and as "any" (the measured chance), judged by the
   test role's judge on the regenerated bars alone.
A model trained with SPM windows too (``fim_spm`` > 0: ``--fim-spm`` of conditioning_reference.py) can be prompted in
either order: the bits per note of the real middle on the validation role's pieces choose one, and every test figure
above is measured with it.
Writes ``infilling.json`` and ``infilling.md`` into the FIM run and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def ltr_losses(run: Path, split: str, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluation window of ``split`` (``Shards.eval_batches``: every target once, conditions in view): the
    summed left-to-right NLL (nats) and the number of targets, under the run's model."""
    import equinox as eqx
    import jax.numpy as jnp

    from tchaikovsky.data.shards import Shards
    from tchaikovsky.training import checkpoint
    from tchaikovsky.training.losses import token_losses

    model, _, _ = checkpoint.load_run_model(run)
    shards = Shards(run / "shards")
    fn = eqx.filter_jit(lambda m, t: token_losses(m, t, jnp.float32)[0])
    sums, counts = [], []
    for tokens, mask in shards.eval_batches(batch, model.config.context, split=split):
        nll = np.asarray(fn(model, jnp.asarray(tokens)))
        sums.append((nll * mask).sum(axis=1))
        counts.append(mask.sum(axis=1))
    sums, counts = np.concatenate(sums), np.concatenate(counts)
    keep = counts > 0
    return sums[keep], counts[keep]


def fim_cost(fim: Path, plain: Path, split: str = "judge_test", n_boot: int = 4000, seed: int = 0) -> dict:
    """The relative left-to-right loss of the FIM model over the plain one on the same windows, with a paired
    bootstrap 95% interval over windows."""
    a_sum, a_n = ltr_losses(plain, split)
    b_sum, b_n = ltr_losses(fim, split)
    if not np.array_equal(a_n, b_n):
        raise ValueError(f"{fim} and {plain} do not hold the same {split} pieces: compare runs built alike")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a_sum), size=(n_boot, len(a_sum)))
    ratio = b_sum[idx].sum(1) / a_sum[idx].sum(1) - 1.0
    lo, hi = np.quantile(ratio, [0.025, 0.975])
    return {"split": split, "windows": int(len(a_sum)), "targets": int(a_n.sum()),
            "plain_nats_per_token": float(a_sum.sum() / a_n.sum()), "fim_nats_per_token": float(b_sum.sum() / b_n.sum()),
            "relative": float(b_sum.sum() / a_sum.sum() - 1.0), "lo": float(lo), "hi": float(hi)}


def markdown(result: dict) -> str:
    from tchaikovsky.evaluation.infill import infilling_table, order_table, suffix_table
    from tchaikovsky.evaluation.infill_judge import conditioned_table

    c = result["cost"]
    cost = ("| left-to-right held-out loss (test pieces, same windows) | plain fine-tune | FIM fine-tune | relative "
            "[95%] |\n|---|---|---|---|\n"
            f"| nats per token ({c['windows']} windows, {c['targets']} targets) | {c['plain_nats_per_token']:.4f} | "
            f"{c['fim_nats_per_token']:.4f} | {c['relative']:+.2%} [{c['lo']:+.2%}, {c['hi']:+.2%}] |")
    parts = [cost]
    if "order" in result:
        parts.append(order_table(result["order"]))
    parts.append(infilling_table(result["infilling"]))
    if "suffix" in result:
        parts.append("How much of the suffix helps (same pieces, same prefix):\n\n" + suffix_table(result["suffix"]))
    return "\n\n".join(parts + [conditioned_table(result["conditioned"])])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fim", required=True, help="a conditioned fine-tune trained with fim_rate > 0")
    ap.add_argument("--plain", required=True, help="the same fine-tune with fim_rate 0")
    ap.add_argument("--pieces", type=int, default=32, help="held-out pieces (of the test role)")
    ap.add_argument("--seeds", type=int, default=2, help="regenerations per piece")
    ap.add_argument("--temperature", type=float, default=0.9)
    args = ap.parse_args(argv)

    from tchaikovsky import io
    from tchaikovsky.data.fim import order_of
    from tchaikovsky.training.checkpoint import model_meta
    from tchaikovsky.evaluation.infill import choose_order, measure_infilling, suffix_sweep
    from tchaikovsky.evaluation.infill_judge import conditioned_infilling

    fim, plain, times = Path(args.fim), Path(args.plain), {}
    t = time.time()
    result = {"cost": fim_cost(fim, plain)}
    times["cost_s"] = time.time() - t
    order = None  # the run's own (data.fim.order_of)
    if order_of(model_meta(fim)) == "spm":
        result["order"] = choose_order(fim, role="validation", bars=(5, 8), of_bars=16, n_pieces=args.pieces)
        order = result["order"]["chosen"]
    t = time.time()
    result["infilling"] = measure_infilling(fim, role="test", bars=(5, 8), of_bars=16, n_pieces=args.pieces,
                                            seeds=args.seeds, temperature=args.temperature, order=order)
    times["infilling_s"] = time.time() - t
    result["suffix"] = suffix_sweep(fim, role="test", bars=(5, 8), of_bars=16, n_pieces=args.pieces, order=order)
    t = time.time()
    result["conditioned"] = conditioned_infilling(fim, role="test", bars=(5, 8), of_bars=16, n_pieces=args.pieces,
                                                  temperature=args.temperature, order=order)
    times["conditioned_s"] = time.time() - t
    result["times"] = times
    md = markdown(result)
    (fim / "infilling.md").write_text(md + "\n")
    io.atomic_write(fim / "infilling.json", json.dumps(io.jsonable(result), indent=1))
    print(md)
    print(json.dumps(times))
    return result


if __name__ == "__main__":
    main()
