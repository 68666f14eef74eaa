"""Figures of an evaluation: per-feature histograms per set, mean note-length histograms, longest copied runs.

Drawn with ``matplotlib.figure.Figure`` only (no pyplot state, safe in scripts and worker threads), from the dict
``report.evaluate_run`` returns or its ``evaluation.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tchaikovsky.evaluation.features import DURATION_LABELS, SCALAR_FEATURES

__all__ = ["SETS", "LABELS", "COLORS", "plot_evaluation", "plot_confusion", "plot_rounds"]

SETS = ("train", "heldout", "model", "bigram", "random")
LABELS = {"train": "train (reference)", "heldout": "real held-out", "model": "model", "bigram": "bigram",
          "random": "random"}
COLORS = {"train": "0.35", "heldout": "tab:green", "model": "tab:blue", "bigram": "tab:orange", "random": "tab:red"}


def _nan(x) -> float:
    return math.nan if x is None else float(x)


def plot_evaluation(evaluation: dict, out_dir: str | Path) -> list[Path]:
    """Write ``evaluation_features.png`` (per-feature histograms of every set on shared bins),
    ``evaluation_durations.png`` (mean note-length histogram per set) and ``evaluation_originality.png`` (longest
    copied run per piece) into ``out_dir``; returns the paths. Uses ``matplotlib.figure.Figure`` only."""
    from matplotlib.figure import Figure  # heavy: only when a figure is drawn

    out_dir = Path(out_dir)
    sets = evaluation["sets"]
    names = [n for n in SETS if n in sets and sets[n]["n"]]
    paths = []

    feats = SCALAR_FEATURES
    cols = 3
    fig = Figure(figsize=(4.2 * cols, 3.0 * -(-len(feats) // cols)), layout="constrained")
    for k, f in enumerate(feats):
        ax = fig.add_subplot(-(-len(feats) // cols), cols, k + 1)
        values = {n: np.array([_nan(p[f]) for p in sets[n]["pieces"]], np.float64) for n in names}
        values = {n: v[np.isfinite(v)] for n, v in values.items()}
        every = np.concatenate(list(values.values())) if values else np.zeros(0)
        if every.size == 0:
            ax.set_title(f"{f} (no values)")
            continue
        edges = np.histogram_bin_edges(every, bins=16)
        for n, v in values.items():
            if v.size:
                ax.hist(v, bins=edges, weights=np.full(v.size, 1.0 / v.size), histtype="step", linewidth=1.6,
                        color=COLORS[n], label=f"{LABELS[n]} ({v.size})")
        ax.set_title(f.replace("_", " "))
        ax.set_ylabel("share of pieces")
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"per-piece measures: model vs real vs baselines ({evaluation.get('run_dir', '')})")
    paths.append(out_dir / "evaluation_features.png")
    fig.savefig(paths[-1], dpi=90)

    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(DURATION_LABELS))
    for j, n in enumerate(names):
        rows = np.array([[_nan(v) for v in p["duration_histogram"]] for p in sets[n]["pieces"]], np.float64)
        rows = rows[np.isfinite(rows).all(axis=1)] if rows.size else rows
        if len(rows):
            ax.bar(x + (j - (len(names) - 1) / 2) * width, rows.mean(axis=0), width, color=COLORS[n], label=LABELS[n])
    ax.set_xticks(x, DURATION_LABELS)
    ax.set_xlabel("note length (beats)")
    ax.set_ylabel("share of notes (mean over pieces)")
    ax.legend(fontsize=8)
    paths.append(out_dir / "evaluation_durations.png")
    fig.savefig(paths[-1], dpi=90)

    org = evaluation.get("originality", {})
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.add_subplot()
    shown = [n for n in names if n in org]
    for j, n in enumerate(shown):
        runs = np.asarray(org[n]["longest_run"], np.float64)
        ax.scatter(np.full(runs.size, j) + np.linspace(-0.2, 0.2, runs.size), runs, color=COLORS[n], s=18)
    top = max([evaluation["settings"]["copy_run"]] + [max(org[n]["longest_run"], default=0) for n in shown])
    ax.axhline(evaluation["settings"]["copy_run"], color="0.5", linestyle="--", linewidth=1,
               label=f"copy flag at {evaluation['settings']['copy_run']} tokens")
    ax.set_xticks(range(len(shown)), [LABELS[n] for n in shown])
    ax.set_ylim(0, 1.1 * top)
    ax.set_ylabel("longest run found in training (tokens)")
    ax.set_title("originality: longest token run copied from the training split", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    paths.append(out_dir / "evaluation_originality.png")
    fig.savefig(paths[-1], dpi=90)
    return paths


def plot_confusion(matrix, classes, *, title: str = "", path: str | Path | None = None):
    """A confusion matrix (rows: true or requested label, columns: the judge's prediction, as ``Judge.confusion``
    returns) as a ``matplotlib.figure.Figure``, each cell its count, shaded by its share of the row. Saved to
    ``path`` as well when given. Returns the figure."""
    from matplotlib.figure import Figure  # heavy: only when a figure is drawn

    m = np.asarray(matrix, np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig = Figure(figsize=(2.0 + 0.7 * n, 1.5 + 0.6 * n), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.6 else "k")
    short = [str(c)[:18] for c in classes]
    ax.set_xticks(range(n), short, rotation=45, ha="right")
    ax.set_yticks(range(n), short)
    ax.set_xlabel("judge's prediction")
    ax.set_ylabel("label")
    acc = np.trace(m) / m.sum() if m.sum() else math.nan
    ax.set_title(f"{title} (accuracy {acc:.0%})".strip())
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_rounds(table: list[dict], path: str | Path | None = None):
    """Preference rounds side by side (``preference.tune``'s table, round 0 first): the scorer's mean per prompt,
    the judge's accuracy, and mean OA against the prompt's real pieces, one panel each. Saved to ``path`` when
    given. Returns the ``matplotlib.figure.Figure``."""
    from matplotlib.figure import Figure  # heavy: only when a figure is drawn

    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    rounds = [m["round"] for m in table]
    for key in (table[0]["prompts"] if table else {}):
        axes[0].plot(rounds, [_nan(m["prompts"].get(key, {}).get("scorer")) for m in table], marker="o",
                     label=key.rsplit("__", 1)[0].replace("__", ", ")[:40])
    for rows, name, shift in ((table, "test", 0.0), ([m.get("validation", {}) for m in table], "validation", 0.08)):
        rates = [r.get("judge_rate") or {} for r in rows]
        y = np.array([_nan(r.get("rate")) for r in rates])
        err = np.abs(np.array([[_nan(r.get("lo")) for r in rates], [_nan(r.get("hi")) for r in rates]]) - y)
        axes[1].errorbar(np.array(rounds) + shift, y, yerr=err, marker="o", capsize=3, label=name)
    axes[1].set_title("judge: recognised as asked (95% interval)")
    axes[1].legend(fontsize=7)
    axes[2].plot(rounds, [_nan(m["oa"]) for m in table], marker="o", color="tab:green")
    axes[2].set_title("mean OA vs held-out real (test)")
    axes[0].set_title("scorer (cosine to the prompt's real pieces)")
    if table and table[0]["prompts"]:
        axes[0].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
