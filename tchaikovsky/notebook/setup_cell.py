"""The notebooks' set-up cell, in one place: every notebook's copy must equal ``BLOCK`` (a test checks it).

The cell runs before ``tchaikovsky`` can be imported (it is what finds or installs it), so each notebook carries
the text itself; this module is its single source. ``python -m tchaikovsky.notebook.setup_cell --write`` rewrites
every notebook's copy from here (then ``make sync`` pairs the ``.ipynb``); ``--check`` lists the notebooks whose
copy drifted. After the block each notebook calls ``env.ensure(...)`` with what it needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

START = "# ## Set-up\n"
END = "from tchaikovsky import env  # noqa: E402\n"
BLOCK = """# ## Set-up
# Finds the `tchaikovsky` package (this repository, a Kaggle dataset holding it, or `repo_url`) and installs only
# what is missing, without upgrading the JAX that Kaggle or Colab ships. After `make demo` this does nothing.

# %%
import glob, importlib.util, os, subprocess, sys  # noqa: E401

_kaggle = os.environ.get("TCHAIKOVSKY_KAGGLE_ROOT") or "/kaggle"  # the tests point this at an emulated Kaggle
_found = glob.glob(f"{_kaggle}/input/**/tchaikovsky/__init__.py", recursive=True)  # the tchaikovsky-src dataset
if not _found and importlib.util.find_spec("tchaikovsky") is None:
    _found = glob.glob("../tchaikovsky/__init__.py")  # run from this repository's notebooks/ folder
if _found:  # on Kaggle the attached dataset wins over anything installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(_found[0]))))
elif importlib.util.find_spec("tchaikovsky") is None:
    if not repo_url:
        raise ImportError("tchaikovsky not found: attach the tchaikovsky-src dataset or set repo_url (see README)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", repo_url], check=True)
from tchaikovsky import env  # noqa: E402
"""


def span(text: str) -> tuple[int, int]:
    """(start, end) of the set-up block in a notebook's percent source; ValueError when it has none."""
    start = text.find(START)
    end = text.find(END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError("no set-up block (a '# ## Set-up' markdown cell down to 'from tchaikovsky import env')")
    return start, end + len(END)


def drifted(path: str | Path) -> bool:
    """Whether the notebook's copy of the block differs from ``BLOCK``."""
    text = Path(path).read_text()
    start, end = span(text)
    return text[start:end] != BLOCK


def write(path: str | Path) -> bool:
    """Rewrite the notebook's copy from ``BLOCK``; True when it changed."""
    path = Path(path)
    text = path.read_text()
    start, end = span(text)
    if text[start:end] == BLOCK:
        return False
    path.write_text(text[:start] + BLOCK + text[end:])
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check or rewrite the notebooks' set-up cell from its single source.")
    ap.add_argument("notebooks", nargs="*", default=sorted(str(p) for p in Path("notebooks").glob("*.py")))
    ap.add_argument("--write", action="store_true", help="rewrite drifted copies (then: make sync)")
    args = ap.parse_args(argv)
    bad = [p for p in args.notebooks if (write(p) if args.write else drifted(p))]
    for p in bad:
        print(f"{p}: set-up cell {'rewritten' if args.write else 'differs from tchaikovsky/notebook/setup_cell.py'}")
    return 1 if bad and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
