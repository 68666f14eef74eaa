"""Tables that compare controllability reports (``evaluation.control``) side by side, and the issue's target.

``lever_table`` puts one report per row (a sampling setting, a lever, a training recipe): per value the share
recognised as asked and that share of the judge's ceiling, the pooled lift over measured chance with its interval,
the difference from a baseline row with its interval, OA, diversity against the real pieces' and failures.
``target_table`` says, per value, whether a report meets the target of "conditioning that obeys": recognised in at
least ``share`` of the judge's ceiling for that value, and the lower end of the recognition's 95% interval above
that value's measured chance.
"""

from __future__ import annotations

import numpy as np

from tchaikovsky.evaluation.intervals import Difference, Rate, fmt

TARGET_SHARE = 0.8  # of the judge's ceiling


def _share_of_ceiling(t: dict) -> float:
    ceiling = t.get("ceiling")
    if not ceiling or not ceiling.get("n"):
        return float("nan")
    c = Rate.from_dict(ceiling).value
    return Rate.from_dict(t["conditioned"]).value / c if c > 0 else float("nan")


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and x == x]
    return float(np.mean(xs)) if xs else float("nan")


def diversity_ratio(report: dict) -> float:
    """Mean over values of (diversity of the pieces asked for it) / (diversity of its real held-out pieces): 1 is as
    varied as the real music, well under 1 a collapse onto a few pieces."""
    return _mean([t["diversity"] / t["diversity_real"] for t in report["table"]
                  if t.get("diversity") is not None and t.get("diversity_real")])


def recognised(report: dict) -> Rate:
    """Every value's pieces together: how many of all the pieces asked for a value were recognised as asked."""
    rates = [Rate.from_dict(t["conditioned"]) for t in report["table"]]
    return Rate(sum(r.k for r in rates), sum(r.n for r in rates))


def lever_table(reports: dict, column: str = "setting", baseline: str | None = None) -> str:
    """Markdown: one row per ``reports`` entry ({name: controllability report}, all of one label and role), and
    each row's share recognised (all values together) minus the ``baseline`` row's (default: the row named
    "baseline", else the first), with the interval of that difference (``intervals.Difference``)."""
    first = next(iter(reports.values()))
    base_name = baseline or ("baseline" if "baseline" in reports else next(iter(reports)))
    base = recognised(reports[base_name])
    values = [t["value"] for t in first["table"]]
    head = [column] + [f"{v}: recognised (share of ceiling)" for v in values] + [
        "pooled lift over chance [95%]", f"recognised - {base_name} [95%]", "mean OA", "diversity / real", "failed",
        "copies"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in reports.items():
        by_value = {t["value"]: t for t in r["table"]}
        cells = [str(name)]
        for v in values:
            t = by_value.get(v)
            cells.append("–" if t is None else
                         f"{Rate.from_dict(t['conditioned'])} ({fmt(_share_of_ceiling(t))})")
        p, n = r["pooled"], sum(t["n"] for t in r["table"])
        cells += [f"{fmt(p['lift'], True)} [{fmt(p['lo'], True)}, {fmt(p['hi'], True)}]",
                  "–" if name == base_name else str(Difference(recognised(r), base)),
                  fmt(_mean([t["oa"] for t in r["table"]])), fmt(diversity_ratio(r)),
                  f"{r['failed']['asked']}/{n}", f"{sum(t['copies'] for t in r['table'])}/{n}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(a: dict, b: dict, a_name: str = "a", b_name: str = "b") -> str:
    """Markdown: two runs' test reports side by side ({label: controllability report}, e.g. two recipes on the same
    test works, seeds and judge): per label and value, each run's share recognised as asked and their difference
    with its interval, then each label's values together (those both runs asked for)."""
    lines = [f"| asked for (test) | {a_name}: recognised [95%] | {b_name}: recognised [95%] | difference [95%] |",
             "|---|---|---|---|"]
    for label in [k for k in a if k in b]:
        rows_b = {t["value"]: t for t in b[label]["table"]}
        both = [(t, rows_b[t["value"]]) for t in a[label]["table"] if t["value"] in rows_b]
        for ta, tb in both:
            ra, rb = Rate.from_dict(ta["conditioned"]), Rate.from_dict(tb["conditioned"])
            lines.append(f"| {ta['value']} | {ra} | {rb} | {Difference(ra, rb)} |")
        ra, rb = (recognised({"table": [pair[k] for pair in both]}) for k in (0, 1))
        lines.append(f"| **{label}, all** | {ra} | {rb} | **{Difference(ra, rb)}** |")
    return "\n".join(lines)


def target_rows(report: dict, share: float = TARGET_SHARE) -> list[dict]:
    """Per value: ceiling, recognised (Rate), the target (``share`` x ceiling), chance, and whether each half of the
    target is met (``reached``: recognised >= target; ``above_chance``: the interval's lower end > chance)."""
    out = []
    for t in report["table"]:
        rec, chance = Rate.from_dict(t["conditioned"]), Rate.from_dict(t["chance"])
        ceiling = Rate.from_dict(t["ceiling"]).value if t.get("ceiling") and t["ceiling"].get("n") else float("nan")
        target = share * ceiling
        out.append({"value": t["value"], "ceiling": ceiling, "recognised": rec, "target": target,
                    "chance": chance.value, "reached": bool(rec.value >= target),
                    "above_chance": bool(rec.interval[0] > chance.value), "short_by": max(0.0, target - rec.value)})
    return out


def target_table(report: dict, share: float = TARGET_SHARE) -> str:
    """Markdown of ``target_rows``."""
    lines = [f"| {report['label']} ({report['role']}) | judge ceiling | target ({share:.0%} of it) | recognised as "
             "asked [95%] | measured chance | target reached | interval above chance |", "|---|---|---|---|---|---|---|"]
    for row in target_rows(report, share):
        reached = "yes" if row["reached"] else f"no (short by {row['short_by']:.2f})"
        lines.append(f"| {row['value']} | {fmt(row['ceiling'])} | {fmt(row['target'])} | {row['recognised']} | "
                     f"{fmt(row['chance'])} | {reached} | "
                     f"{'yes' if row['above_chance'] else 'no'} |")
    return "\n".join(lines)


def outside_table(report: dict) -> str:
    """Markdown: the outside judge's verdict (``controllability(..., outside=)``) beside the role's judge's."""
    lines = [f"| {report['label']} ({report['role']}) | recognised as asked: the role's judge | the outside judge | "
             "outside judge's chance (asked \"any\") | outside difference [95%] |", "|---|---|---|---|---|"]
    for t in report["table"]:
        o = t.get("outside")
        if not o:
            continue
        d = o["lift"]
        lines.append(f"| {t['value']} | {Rate.from_dict(t['conditioned'])} | {Rate.from_dict(o['conditioned'])} | "
                     f"{Rate.from_dict(o['chance'])} | {fmt(d['diff'], True)} [{fmt(d['lo'], True)}, "
                     f"{fmt(d['hi'], True)}] |")
    return "\n".join(lines)
