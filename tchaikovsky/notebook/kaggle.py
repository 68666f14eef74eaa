"""``make kaggle``: one folder per notebook for ``kaggle kernels push -p DIR``, and the package as a dataset.

Reads ``kaggle-metadata.json`` at the repository root (owner, defaults shared by all kernels, one entry per
notebook) and writes::

    kaggle/<slug>/<notebook>.ipynb + kernel-metadata.json    # push each with `kaggle kernels push -p kaggle/<slug>`
    kaggle/tchaikovsky-src/tchaikovsky/ + dataset-metadata.json  # once: `kaggle datasets create -p kaggle/tchaikovsky-src`

Attached as a dataset, the package is found by each notebook's set-up cell without internet access to a repo.

The placeholder ``YOUR_KAGGLE_USERNAME`` in the metadata becomes your Kaggle user name: ``--user NAME``, else the
``KAGGLE_USERNAME`` environment variable, else the ``username`` in ``~/.kaggle/kaggle.json`` (the Kaggle CLI's own
credentials file); with none of them the placeholder stays and a note says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "YOUR_KAGGLE_USERNAME"


def kaggle_user(explicit: str | None = None, home: Path | None = None) -> str | None:
    """The Kaggle user name: ``explicit``, else $KAGGLE_USERNAME, else ~/.kaggle/kaggle.json's; None if unknown."""
    if explicit:
        name = explicit
    elif os.environ.get("KAGGLE_USERNAME"):
        name = os.environ["KAGGLE_USERNAME"]
    else:
        creds = (home or Path.home()) / ".kaggle" / "kaggle.json"
        try:
            name = json.loads(creds.read_text()).get("username")
        except (OSError, ValueError, AttributeError):
            name = None
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ValueError(f"{name!r} is not a Kaggle user name (letters, digits, '-' and '_')")
    return name or None


def _with_user(obj, user: str):
    if isinstance(obj, str):
        return obj.replace(PLACEHOLDER, user)
    if isinstance(obj, list):
        return [_with_user(x, user) for x in obj]
    if isinstance(obj, dict):
        return {k: _with_user(v, user) for k, v in obj.items()}
    return obj
REQUIRED = ("id", "title", "code_file", "language", "kernel_type", "enable_tpu", "enable_internet", "dataset_sources")


def kernel_metadata(meta: dict) -> list[dict]:
    """One complete kernel-metadata.json dict per notebook (defaults merged in, code_file made local)."""
    out = []
    for kernel in meta["kernels"]:
        merged = {**meta["defaults"], **kernel, "code_file": Path(kernel["code_file"]).name}
        missing = [k for k in REQUIRED if k not in merged]
        if missing:
            raise ValueError(f"kaggle-metadata.json: kernel {kernel.get('id')} lacks {missing}")
        out.append(merged)
    return out


def build(out_dir: Path, root: Path = ROOT, user: str | None = None) -> list[Path]:
    """Write the kernel folders and the package dataset; ``user`` replaces the placeholder owner if given."""
    meta = json.loads((root / "kaggle-metadata.json").read_text())
    if user:
        meta = _with_user(meta, user)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kernel, entry in zip(kernel_metadata(meta), meta["kernels"]):
        folder = out_dir / kernel["id"].split("/")[-1]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copy(root / entry["code_file"], folder / kernel["code_file"])
        (folder / "kernel-metadata.json").write_text(json.dumps(kernel, indent=2) + "\n")
        written.append(folder)
    src = out_dir / "tchaikovsky-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(root / "tchaikovsky", src / "tchaikovsky", ignore=shutil.ignore_patterns("__pycache__"))
    dataset = {"title": "tchaikovsky-src", "id": meta["package_dataset"], "licenses": [{"name": "MIT"}]}
    (src / "dataset-metadata.json").write_text(json.dumps(dataset, indent=2) + "\n")
    written.append(src)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="kaggle")
    ap.add_argument("--user", default=None,
                    help="Kaggle user name (default: $KAGGLE_USERNAME or ~/.kaggle/kaggle.json)")
    args = ap.parse_args(argv)
    user = kaggle_user(args.user)
    for path in build(Path(args.out), user=user):
        print(path)
    if user is None:
        print(f"NOTE: the metadata still says {PLACEHOLDER}: pass --user NAME (or set KAGGLE_USERNAME) and rerun")


if __name__ == "__main__":
    main()
