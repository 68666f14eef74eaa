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
    lever_reports = {"chosen (all levers)": tests["composer"]}
    lever_reports.update(lever_rows(run, T, g, N, by_g, by_N, sampling, times, tests["composer"]))
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


def _tried(chosen, reports: dict, off):
    """The setting a lever's test row uses: the chosen one, or, when validation chose "off", the best of the others
    on validation (so the table still shows what the lever does on test; the row says it was not chosen)."""
    if chosen != off:
        return chosen, ""
    others = [v for v in reports if v != off]
    return (max(others, key=lambda v: (_lift(reports[v]), -v)), " (not chosen)") if others else (off, "")


def lever_rows(run: Path, T, g, N, by_g: dict, by_N: dict, sampling: dict, times: dict, chosen_report) -> dict:
    """The composer test table once per lever: baseline (guidance 1, no reranking), guidance alone, best-of-N alone."""
    from tchaikovsky.evaluation import control

    g_try, g_note = _tried(g, by_g, 1.0)
    n_try, n_note = _tried(N, by_N, 1)
    rows = {"baseline": {"guidance": 1.0, "rerank": 1}, f"guidance {g_try:g}{g_note}": {"guidance": g_try, "rerank": 1},
            f"best-of-{n_try}{n_note}": {"guidance": 1.0, "rerank": n_try}}
    out = {}
    for name, setting in rows.items():
        if setting == {"guidance": g, "rerank": N}:
            out[name] = chosen_report
            continue
        t = time.time()
        out[name] = control.controllability(run, label="composer", role="test", temperature=T, **setting,
                                            **sampling, write=False)
        times[f"test_lever_{name}_s"] = time.time() - t
    return out


def relever(run: Path, samples=16, num_tokens=512, min_tokens=256) -> dict:
    """Redo the lever rows of a run's ``levers.json`` (as ``lever_rows`` makes them now) and its markdown."""
    from tchaikovsky import io

    result = json.loads((run / "levers.json").read_text())
    c, v = result["chosen"], result["validation"]
    by_g = {float(k): r for k, r in v["guidance"].items()}
    by_N = {int(k): r for k, r in v["rerank"].items()}
    sampling = dict(n_per_value=samples, num_tokens=num_tokens, min_tokens=min_tokens, min_pieces=4)
    result["levers"] = {"chosen (all levers)": result["test"]["composer"],
                        **lever_rows(run, c["temperature"], c["guidance"], c["rerank"], by_g, by_N, sampling,
                                     result["times"], result["test"]["composer"])}
    (run / "levers.md").write_text(levers_markdown(result) + "\n")
    io.atomic_write(run / "levers.json", json.dumps(io.jsonable(result), indent=1))
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
    if any(t.get("outside") for t in result["test"]["composer"]["table"]):
        parts.append("### the outside check: composer\n\n" + levers.outside_table(result["test"]["composer"]))
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
    ap.add_argument("--relever", action="store_true", help="only redo the lever rows of the run's levers.json")
    ap.add_argument("--markdown", action="store_true",
                    help="only print the tables of the run's levers.json again (and rewrite levers.md): no sampling")
    ap.add_argument("--against", default=None,
                    help="with --markdown: another run (same test works) to compare with, value by value")
    args = ap.parse_args(argv)
    if args.markdown:
        result = json.loads((Path(args.run) / "levers.json").read_text())
        md = levers_markdown(result)
        (Path(args.run) / "levers.md").write_text(md + "\n")
        if args.against:
            from tchaikovsky.evaluation.levers import runs_table

            other = json.loads((Path(args.against) / "levers.json").read_text())
            md += (f"\n\n### test at the chosen settings: {args.run} against {args.against}\n\n"
                   + runs_table(result["test"], other["test"], "this run", "the other"))
        print(md)
        return result
    if args.relever:
        return relever(Path(args.run), args.samples, args.num_tokens, args.min_tokens)
    outside = None
    if args.outside:
        from tchaikovsky.evaluation.judge import Judge

        outside = Judge.load(args.outside)
    return evaluate(Path(args.run), temperatures=args.temperatures, guidance=args.guidance, rerank=args.rerank,
                    samples=args.samples, num_tokens=args.num_tokens, min_tokens=args.min_tokens, outside=outside)


if __name__ == "__main__":
    main()
