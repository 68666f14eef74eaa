"""Run the notebooks headless with Papermill: ``python -m tchaikovsky.notebook --run-dir runs/demo``.

Parameter names are checked against the notebooks' contract (``params.SPECS``) before anything runs, so a typo
fails at once instead of becoming a Papermill warning. Executed copies land in ``run_dir/notebooks/``.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

from tchaikovsky.notebook.params import SPECS

NOTEBOOKS = tuple(SPECS)  # in running order: the contract lists every notebook once
PIPELINE = NOTEBOOKS[:4]  # data -> tokenizer -> model -> samples: what `make demo` runs (05 needs a conditioned run)
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str, run_dir: str | Path, *, notebook_dir: Path = NOTEBOOK_DIR, **params) -> Path:
    """Execute one notebook with ``params`` (plus ``run_dir``); returns the executed copy's path."""
    import papermill as pm  # notebook runner only

    if name not in SPECS:
        raise ValueError(f"unknown notebook {name!r}; one of {list(SPECS)}")
    params = {k: v for k, v in params.items() if k in SPECS[name] or k not in _SHARED}
    unknown = sorted(set(params) - set(SPECS[name]))
    if unknown:
        raise ValueError(f"{name} has no parameter(s) {unknown}; it accepts {sorted(SPECS[name])}")
    run_dir = Path(run_dir).resolve()
    out = run_dir / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(notebook_dir / f"{name}.ipynb"), str(out), parameters={**params, "run_dir": str(run_dir)},
        kernel_name="python3", cwd=str(notebook_dir), progress_bar=False,
    )
    return out


# Parameters that make sense to pass to "all notebooks": each notebook gets those it has.
_SHARED = {"data_dir", "seed", "max_files", "composers", "vocab_size", "preset"}


def run_all(run_dir: str | Path, *, notebooks=PIPELINE, **params) -> dict[str, float]:
    """Run the notebooks in order with the parameters each one accepts; returns seconds per notebook."""
    unused = set(params) - set().union(*(SPECS[n] for n in notebooks)) - _SHARED  # shared: for those that take it
    if unused:
        raise ValueError(f"no notebook takes {sorted(unused)}")
    times = {}
    for name in notebooks:
        start = time.time()
        mine = {k: v for k, v in params.items() if k in SPECS[name]}
        run_notebook(name, run_dir, **mine)
        times[name] = round(time.time() - start, 1)
        print(f"{name}: {times[name]} s", flush=True)
    return times


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m tchaikovsky.notebook``."""
    ap = argparse.ArgumentParser(prog="python -m tchaikovsky.notebook", description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/demo")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--max-files", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--num-tokens", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=list(PIPELINE),
                    help=f"notebooks to run, in order (default: {' '.join(PIPELINE)})")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="any notebook parameter (Python literal or plain string), e.g. -p transpose_range=2")
    return ap


def parameters(args: argparse.Namespace) -> dict:
    """The notebook parameters a parsed command line asks for: -p NAME=VALUE (a Python literal, else the plain
    string) and the shortcut options."""
    params = {"data_dir": args.data_dir, "preset": args.preset}
    for item in args.param:
        name, _, value = item.partition("=")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    for key in ("max_files", "max_steps", "num_tokens"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def main(argv=None):
    args = parser().parse_args(argv)
    times = run_all(args.run_dir, notebooks=args.only, **parameters(args))
    print(f"total: {sum(times.values()):.0f} s")


if __name__ == "__main__":
    main()
