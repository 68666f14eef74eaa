"""``make kaggle``: one folder per notebook for ``kaggle kernels push -p DIR``, and the package as a dataset.

Reads ``kaggle-metadata.json`` at the repository root (owner, defaults shared by all kernels, one entry per
notebook) and writes::

    kaggle/<slug>/<notebook>.ipynb + kernel-metadata.json    # push each with `kaggle kernels push -p kaggle/<slug>`
    kaggle/tchaikovsky-src/tchaikovsky/ + dataset-metadata.json  # once: `kaggle datasets create -p kaggle/tchaikovsky-src`

Attached as a dataset, the package is found by each notebook's set-up cell without internet access to a repo.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def build(out_dir: Path, root: Path = ROOT) -> list[Path]:
    meta = json.loads((root / "kaggle-metadata.json").read_text())
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
    args = ap.parse_args(argv)
    for path in build(Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
