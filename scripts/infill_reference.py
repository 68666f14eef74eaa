"""The infilling reference (issue #22): what fill-in-the-middle training buys, and what it costs, under the protocol.

    python scripts/infill_reference.py --fim runs/conditioning-fim/finetune --plain runs/conditioning-pretrained/finetune

``--fim`` is a conditioned fine-tune trained with ``fim_rate`` > 0 and ``--plain`` (optional: without it, 1.
below is left out) the same recipe (same data, steps and seed) with ``fim_rate`` 0: ``make reference-infilling``
trains both with ``scripts/conditioning_reference.py --pretrain-conditions``, the FIM one with ``--fim-rate 0.5
--pretrain-fim`` (fill-in-the-middle windows in the pretraining and the fine-tune). On the test role's held-out
pieces, bars 5-8 of their first 16 taken out:

1. the cost: left-to-right held-out loss (nats per token) of both models on the same windows of the test pieces,
   with a paired bootstrap interval of the relative difference (the issue allows FIM at most 2%);
2. ``evaluation.infill.measure_infilling``: bits per note of the real middle given prefix and suffix against the
   prefix only, OA of the regenerated bars against the real ones, pitch jumps and onset gaps at both seams against
   the real seams, and how often the model closed the middle itself; then the same bits per note with only the
   first 0, 1, 2, 4 or 6 bars of the suffix, bar by bar (``evaluation.infill.suffix_sweep``): how much of it helps,
   on the test pieces and on the validation role's (where a shorter suffix would be chosen, if one helped);
3. best-of-N infilling (``--rerank N``, ``evaluation.infill_lead``): each middle the best of N by how it leads into
   the bar after the span (the suffix read left to right), chosen or not on the validation role by its last seam,
   then plain and best-of-N on the test role with paired differences at both seams;
4. conditioned infilling: the bars regenerated "as" each composer, and as "any" (the measured chance), judged by the
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


def against(mine: dict, theirs: dict) -> dict:
    """Two ``suffix_sweep`` results on the same pieces (runs built alike): per piece, this run's bits per note of
    the real middle given all the suffix that fits, minus the other's; and the same left to right."""
    from tchaikovsky.evaluation.intervals import mean_interval

    a, b = mine["rows"][-1], theirs["rows"][-1]
    if mine["n_pieces"] != theirs["n_pieces"] or a["bars"] is not None or b["bars"] is not None:
        raise ValueError("compare runs built alike, each swept with all the suffix that fits: their pieces differ")
    return {"run": theirs["settings"]["run_dir"], "order": theirs["settings"]["order"], "theirs": b["fim"],
            "mine": a["fim"], "difference": mean_interval([x - y for x, y in zip(a["per_piece"], b["per_piece"])]),
            "left_to_right": {"theirs": theirs["left_to_right"], "mine": mine["left_to_right"]}}


def against_table(c: dict, order: str) -> str:
    from tchaikovsky.evaluation.intervals import fmt

    cell = lambda m: f"{fmt(m['mean'])} [{fmt(m['lo'])}, {fmt(m['hi'])}]"  # noqa: E731
    return (f"Against `{c['run']}` (same pieces, each run in its own order), bits per note of the real middle:\n\n"
            f"| | this run ({order.upper()}) | that run ({c['order'].upper()}) | this - that (paired) | n |\n"
            "|---|---|---|---|---|\n"
            f"| given prefix and suffix | {cell(c['mine'])} | {cell(c['theirs'])} | {cell(c['difference'])} | "
            f"{c['difference']['n']} |\n"
            f"| given the prefix, left to right | {cell(c['left_to_right']['mine'])} | "
            f"{cell(c['left_to_right']['theirs'])} | | |")


def markdown(result: dict) -> str:
    from tchaikovsky.evaluation.infill import infilling_table, order_table, suffix_table
    from tchaikovsky.evaluation.infill_judge import conditioned_table

    c = result.get("cost")
    cost = "Left-to-right cost: not measured (no `--plain` run at equal steps)."
    if c is not None:
        cost = ("| left-to-right held-out loss (test pieces, same windows) | plain fine-tune | FIM fine-tune | "
                "relative [95%] |\n|---|---|---|---|\n"
                f"| nats per token ({c['windows']} windows, {c['targets']} targets) | "
                f"{c['plain_nats_per_token']:.4f} | {c['fim_nats_per_token']:.4f} | "
                f"{c['relative']:+.2%} [{c['lo']:+.2%}, {c['hi']:+.2%}] |")
    parts = [cost]
    if "order" in result:
        parts.append(order_table(result["order"]))
    parts.append(infilling_table(result["infilling"]))
    if "suffix" in result:
        parts.append("How much of the suffix helps (same pieces, same prefix):\n\n" + suffix_table(result["suffix"]))
    if "suffix_validation" in result:
        parts.append("The same on the validation role's pieces (where a suffix length would be chosen):\n\n"
                     + suffix_table(result["suffix_validation"]))
    if "against" in result:
        parts.append(against_table(result["against"], result["infilling"]["settings"]["order"]))
    if "lead_in" in result:
        from tchaikovsky.evaluation.infill_lead import lead_in_table

        parts.append(lead_in_table(result["lead_in"]))
    return "\n\n".join(parts + [conditioned_table(result["conditioned"])])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fim", required=True, help="a conditioned fine-tune trained with fim_rate > 0")
    ap.add_argument("--plain", default="",
                    help="the same fine-tune with fim_rate 0 (without it, FIM's left-to-right cost is not measured)")
    ap.add_argument("--pieces", type=int, default=32, help="held-out pieces (of the test role)")
    ap.add_argument("--seeds", type=int, default=2, help="regenerations per piece")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--against", default="",
                    help="another FIM fine-tune of the same recipe (e.g. PSM windows only): the paired difference in "
                         "bits per note of the real middles, each run prompted in its own order")
    ap.add_argument("--rerank", type=int, default=8,
                    help="best-of-N infilling by the lead into the bar after the span, against plain (1: skip)")
    args = ap.parse_args(argv)

    from tchaikovsky import io
    from tchaikovsky.data.fim import order_of
    from tchaikovsky.training.checkpoint import model_meta
    from tchaikovsky.evaluation.infill import choose_order, measure_infilling, suffix_sweep
    from tchaikovsky.evaluation.infill_judge import conditioned_infilling

    fim, times, result = Path(args.fim), {}, {}
    if args.plain:
        t = time.time()
        result["cost"] = fim_cost(fim, Path(args.plain))
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
    result["suffix_validation"] = suffix_sweep(fim, role="validation", bars=(5, 8), of_bars=16, n_pieces=args.pieces,
                                               order=order)
    if args.against:
        result["against"] = against(result["suffix"], suffix_sweep(Path(args.against), role="test", bars=(5, 8),
                                                                   of_bars=16, n_pieces=args.pieces, keep=(None,)))
    if args.rerank > 1:
        from tchaikovsky.evaluation.infill_lead import lead_in_reference

        t = time.time()
        result["lead_in"] = lead_in_reference(fim, n=args.rerank, n_pieces=args.pieces, seeds=args.seeds,
                                              temperature=args.temperature, order=order,
                                              plain_test=result["infilling"])
        times["lead_in_s"] = time.time() - t
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
