"""The judge's check of a conditioned run, lever by lever, under the evaluation protocol (issue #21).

    python scripts/conditioning_eval.py --run runs/conditioning/finetune      # (conditioning_reference.py calls it)

Every choice is made on the validation role (its works, its seeds, its judge), in turn: the sampling temperature
(at guidance 1, no reranking), then the guidance scale g (classifier-free guidance over the conditions), then
best-of-N (``rerank``: the in-project scorer keeps the best of N pieces drawn for a request). Each is chosen by the
pooled lift of composer recognition over measured chance. The test role (other works, other seeds, another judge)
then reports composer, period and instrumentation at the chosen settings, and the composer table once per lever
(baseline, guidance alone, best-of-N alone, both), so each lever's effect is measured on the same test pieces.
With ``--outside DIR`` (MIDI files labelled in their metadata, never trained on), an outside judge trained on that
music judges the test pieces too. Writes ``levers.json`` and ``levers.md`` into the run directory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _lift(report: dict) -> float:
    return report["pooled"]["lift"]


def _choose(run: Path, name: str, values, base: dict, sampling: dict, times: dict, prefer, known=None) -> tuple:
    """(chosen value, {value: validation report}) for one setting ``name`` over ``values``: the largest pooled lift,
    ties broken by ``prefer`` (smaller is preferred); ``known`` {value: report} already measured (not redone)."""
    from tchaikovsky.evaluation import control

    reports = {}
    for v in values:
        if known and v in known:
            reports[v] = known[v]
            continue
        t = time.time()
        reports[v] = control.controllability(run, label="composer", role="validation", **{**base, name: v},
                                             **sampling)
        times[f"validation_{name}_{v}_s"] = time.time() - t
    chosen = max(values, key=lambda v: (_lift(reports[v]), -prefer(v)))
    print(f"chosen on validation: {name} {chosen} (pooled lift over chance: "
          + ", ".join(f"{v}: {_lift(reports[v]):+.2f}" for v in values) + ")", flush=True)
    return chosen, reports


def evaluate(run: Path, *, temperatures=(0.9, 1.0), guidance=(1.0, 1.5, 2.0, 3.0), rerank=(1, 4), samples=16,
             num_tokens=512, min_tokens=256, outside=None) -> dict:
    """The lever table of ``run`` (a conditioned fine-tune with held-out works); see the module docstring."""
    from tchaikovsky import io
    from tchaikovsky.evaluation import control

    run, times = Path(run), {}
    sampling = dict(n_per_value=samples, num_tokens=num_tokens, min_tokens=min_tokens, min_pieces=4)
    T, by_T = _choose(run, "temperature", list(temperatures), {}, sampling, times, lambda T: abs(T - 1.0))
    g, by_g = _choose(run, "guidance", list(guidance), {"temperature": T}, sampling, times, lambda g: g,
                      known={1.0: by_T[T]})
    N, by_N = _choose(run, "rerank", list(rerank), {"temperature": T, "guidance": g}, sampling, times, lambda n: n,
                      known={1: by_g[g]})
    chosen = {"temperature": T, "guidance": g, "rerank": N}
    extra = {"outside": outside} if outside is not None else {}
    tests = {}
    for label in ("composer", "period", "instrumentation"):
        t = time.time()
        tests[label] = control.controllability(run, label=label, role="test", **chosen, **sampling, **extra)
        times[f"test_{label}_s"] = time.time() - t
    levers = {"baseline": {"guidance": 1.0, "rerank": 1}, "guidance": {"guidance": g, "rerank": 1},
              "best-of-N": {"guidance": 1.0, "rerank": N}}
    lever_reports = {"chosen (all levers)": tests["composer"]}
    for name, setting in levers.items():
        if setting["guidance"] == g and setting["rerank"] == N:
            lever_reports[name] = tests["composer"]
            continue
        t = time.time()
        lever_reports[name] = control.controllability(run, label="composer", role="test", temperature=T, **setting,
                                                      **sampling, write=False)
        times[f"test_lever_{name}_s"] = time.time() - t
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if "eval_loss" in h]
    result = {"run": str(run), "chosen": chosen, "times": times, "finetune_eval": evals[-1] if evals else None,
              "validation": {"temperature": by_T, "guidance": by_g, "rerank": by_N}, "test": tests,
              "levers": lever_reports}
    md = levers_markdown(result)
    (run / "levers.md").write_text(md + "\n")
    io.atomic_write(run / "levers.json", json.dumps(io.jsonable(result), indent=1))
    print(md, flush=True)
    return result


def levers_markdown(result: dict) -> str:
    from tchaikovsky.evaluation import control, levers

    c = result["chosen"]
    parts = [f"chosen on validation: temperature {c['temperature']}, guidance {c['guidance']}, "
             f"best-of-{c['rerank']}"]
    for name, reports in result["validation"].items():
        parts.append(f"### validation: {name}\n\n" + levers.lever_table(reports, name))
    parts.append("### test: composer, one row per lever\n\n" + levers.lever_table(result["levers"], "lever"))
    parts += [f"### test at the chosen settings: {label}\n\n{levers.target_table(r)}\n\n{control.summary_table(r)}"
              for label, r in result["test"].items()]
    return "\n\n".join(parts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a conditioned fine-tune with held-out works")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.9, 1.0])
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--rerank", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--samples", type=int, default=16, help="pieces per requested value")
    ap.add_argument("--num-tokens", type=int, default=512)
    ap.add_argument("--min-tokens", type=int, default=256)
    ap.add_argument("--outside", default=None, help="a judge trained on outside music (control.outside_judge)")
    args = ap.parse_args(argv)
    outside = None
    if args.outside:
        from tchaikovsky.evaluation.judge import Judge

        outside = Judge.load(args.outside)
    return evaluate(Path(args.run), temperatures=args.temperatures, guidance=args.guidance, rerank=args.rerank,
                    samples=args.samples, num_tokens=args.num_tokens, min_tokens=args.min_tokens, outside=outside)


if __name__ == "__main__":
    main()
