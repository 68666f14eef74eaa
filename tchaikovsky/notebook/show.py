"""What the notebooks show of the evaluations: each report as Markdown and a figure, or one line saying why it does
not apply. The reports themselves are computed (and tested) in ``tchaikovsky.evaluation``."""

from __future__ import annotations

from pathlib import Path

from tchaikovsky.evaluation import control
from tchaikovsky.evaluation.plots import plot_confusion


def show_controllability(run_dir: str | Path, *, label: str = "composer", **kwargs) -> dict | None:
    """Run ``evaluation.control.controllability`` and display its table and confusion matrix (saved as
    ``run_dir/controllability_<label>_<role>.png``); a run it does not apply to (no conditions, no held-out split,
    too few values) gets one line saying why, and None."""
    from IPython.display import Markdown, display  # optional: only inside a notebook kernel


    try:
        report = control.controllability(run_dir, label=label, **kwargs)
    except ValueError as e:
        print(f"no controllability check: {e}")
        return None
    display(Markdown(control.summary_table(report)))
    fig = plot_confusion(report["confusion"], report["classes"],
                         path=Path(run_dir) / f"controllability_{label}_{report['role']}.png",
                         title=f"requested {label} (rows) vs the judge's verdict (columns), {report['role']}")
    display(fig)
    return report
