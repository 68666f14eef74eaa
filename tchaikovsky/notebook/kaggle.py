"""Kaggle: ``make kaggle`` (one pushable folder per notebook, the package as a dataset) and, inside a Kaggle
session, where the attached inputs are.

``build()`` reads ``kaggle-metadata.json`` at the repository root (defaults shared by all kernels, one entry per
notebook, and per kernel the ``parameters`` its notebook should default to on Kaggle) and writes::

    kaggle/<slug>/<notebook>.ipynb + kernel-metadata.json   # `kaggle kernels push -p kaggle/<slug>`
    kaggle/tchaikovsky-src/src/tchaikovsky/ + dataset-metadata.json
                          # once: `kaggle datasets create -p kaggle/tchaikovsky-src --dir-mode zip`

The Kaggle CLI uploads only the top-level files of a dataset folder unless ``--dir-mode zip|tar`` is given (it
then uploads each sub-folder as one archive of its contents, which Kaggle unpacks). The package sits one level
down, in ``src/``, so ``tchaikovsky/__init__.py`` exists in the mounted dataset whether Kaggle unpacks ``src.zip``
into ``src/`` or into the dataset's root; each notebook's set-up cell searches the inputs for it.

Every metadata file is checked before it is written, by the rules the Kaggle CLI (2.2.5, ``kernels_push`` and
``dataset_create_new``) and its documentation apply, plus stricter ones where the CLI silently ignores a mistake
(an unknown key, a title whose slug differs from the id): ``check_kernel_metadata``, ``check_dataset_metadata``.

The placeholder ``YOUR_KAGGLE_USERNAME`` becomes your Kaggle user name: ``--user NAME``, else $KAGGLE_USERNAME,
else the ``username`` in ``~/.kaggle/kaggle.json``; with none of them the placeholder stays and a note says so.

In a session, ``kaggle_root()`` is ``/kaggle`` (or $TCHAIKOVSKY_KAGGLE_ROOT, which the tests point at an emulated
one): attached datasets and other kernels' outputs are mounted read-only under ``<root>/input``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tchaikovsky.notebook.params import SPECS

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "YOUR_KAGGLE_USERNAME"
DEFAULT_DATA = f"{PLACEHOLDER}/giantmidi-piano"  # the MIDI dataset kaggle-metadata.json attaches
ROOT_ENV = "TCHAIKOVSKY_KAGGLE_ROOT"

# Kaggle's dataset licence names (the CLI's docs/datasets_metadata.md); the server rejects any other. MIT is not one.
LICENSES = (
    "CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "GPL-2.0", "ODbL-1.0", "DbCL-1.0",
    "copyright-authors", "other", "unknown", "CC-BY-4.0", "CC-BY-NC-4.0", "PDDL", "CC-BY-3.0", "CC-BY-3.0-IGO",
    "US-Government-Works", "CC-BY-NC-SA-3.0-IGO", "CDLA-Permissive-1.0", "CDLA-Sharing-1.0", "CC-BY-ND-4.0",
    "CC-BY-NC-ND-4.0", "ODC-BY-1.0", "LGPL-3.0", "AGPL-3.0", "FDL-1.3", "EU-ODP-Legal-Notice", "apache-2.0", "GPL-3.0",
)
# The keys `kaggle kernels push` reads; it ignores any other silently, so a misspelt key would do nothing.
KERNEL_KEYS = {
    "id", "id_no", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_tpu",
    "enable_internet", "dataset_sources", "competition_sources", "kernel_sources", "model_sources", "keywords",
    "docker_image_pinning_type", "docker_image", "machine_shape",
}
REQUIRED = ("id", "title", "code_file", "language", "kernel_type", "enable_tpu", "enable_internet", "dataset_sources")
RETIRED_SHAPES = {"nvidiateslap100", "tpuv38", "tpu1vmv38", "tpuv232", "tpuv2256"}  # the CLI's list, lower-cased
_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def kaggle_root() -> Path:
    """``/kaggle``, or $TCHAIKOVSKY_KAGGLE_ROOT when set (an emulated Kaggle in the tests)."""
    return Path(os.environ.get(ROOT_ENV) or "/kaggle")


def is_kaggle_input(path: Path) -> bool:
    """True if ``path`` lies under ``<kaggle root>/input``, which Kaggle mounts read-only (even for root)."""
    try:
        Path(path).resolve().relative_to((kaggle_root() / "input").resolve())
        return True
    except ValueError:
        return False


def attached_runs(name: str = "default") -> list[Path]:
    """Run folders ``runs/<name>`` in the attached inputs (another kernel's output), at most 3 levels down."""
    base = kaggle_root() / "input"
    found = {p for d in ("*", "*/*", "*/*/*") for p in base.glob(f"{d}/runs/{name}") if p.is_dir()}
    return sorted(found)


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
    if name is not None and not re.fullmatch(_NAME, name):
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


def _slug(title: str) -> str:
    """The URL slug Kaggle derives from a title: lower case, runs of other characters become one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _check_ref(ref, what: str, versioned: bool) -> None:
    parts = ref.split("/") if isinstance(ref, str) else []
    if not (len(parts) == 2 or (versioned and len(parts) == 3)) or not all(parts[:2]):
        raise ValueError(f"{what} {ref!r} must look like 'owner/slug'")


def check_kernel_metadata(meta: dict, folder: Path | None = None) -> None:
    """Raise ValueError, naming the field, where ``kaggle kernels push -p folder`` would fail or silently do
    something else; with ``folder``, the code file must exist there and be a notebook with cells."""
    unknown = sorted(set(meta) - KERNEL_KEYS)
    if unknown:
        raise ValueError(f"kernel-metadata: unknown keys {unknown} (the CLI ignores them); known: {sorted(KERNEL_KEYS)}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"kernel-metadata {meta.get('id')}: missing {missing}")
    _check_ref(meta["id"], "kernel id", versioned=False)
    title = meta["title"]
    if len(title) < 5 or _slug(title) != meta["id"].split("/")[1].lower():
        raise ValueError(f"kernel title {title!r} must have >= 5 characters and slugify to the id's "
                         f"{meta['id'].split('/')[1]!r} (Kaggle derives the URL from the title)")
    if meta["language"] not in ("python", "r", "rmarkdown") or meta["kernel_type"] not in ("script", "notebook"):
        raise ValueError(f"kernel {meta['id']}: language/kernel_type {meta['language']!r}/{meta['kernel_type']!r}")
    for key in ("is_private", "enable_gpu", "enable_tpu", "enable_internet"):
        if key in meta and not isinstance(meta[key], bool):
            raise ValueError(f"kernel {meta['id']}: {key} must be true or false, not {meta[key]!r}")
    for ref in meta.get("dataset_sources", []):
        _check_ref(ref, "dataset source", versioned=True)
    for ref in meta.get("kernel_sources", []):
        _check_ref(ref, "kernel source", versioned=True)
    shape = meta.get("machine_shape")
    if shape is not None and (not isinstance(shape, str) or shape.lower() in RETIRED_SHAPES):
        raise ValueError(f"kernel {meta['id']}: machine_shape {shape!r} is retired or invalid (TPU: 'TpuV5E8')")
    if folder is not None:
        code = Path(folder) / meta["code_file"]
        if not code.is_file():
            raise ValueError(f"kernel {meta['id']}: code_file {code} does not exist")
        if meta["kernel_type"] == "notebook" and "cells" not in json.loads(code.read_text()):
            raise ValueError(f"kernel {meta['id']}: {code} is not a notebook")


def check_dataset_metadata(meta: dict) -> None:
    """Raise ValueError where ``kaggle datasets create`` (or Kaggle's server) would reject ``meta``."""
    _check_ref(meta.get("id"), "dataset id", versioned=False)
    if not 6 <= len(meta["id"].split("/")[1]) <= 50 or not 6 <= len(meta.get("title", "")) <= 50:
        raise ValueError(f"dataset {meta['id']}: slug and title must each have 6 to 50 characters")
    licenses = meta.get("licenses", [])
    if len(licenses) != 1 or licenses[0].get("name") not in LICENSES:
        raise ValueError(f"dataset {meta['id']}: exactly one licence, named one of {list(LICENSES)}; got {licenses}")
    subtitle = meta.get("subtitle")
    if subtitle is not None and not 20 <= len(subtitle) <= 80:
        raise ValueError(f"dataset {meta['id']}: subtitle must have 20 to 80 characters")


def kernel_metadata(meta: dict) -> list[dict]:
    """One complete kernel-metadata.json dict per notebook (defaults merged in, code_file made local)."""
    out = []
    for kernel in meta["kernels"]:
        merged = {**meta["defaults"], **kernel, "code_file": Path(kernel["code_file"]).name}
        merged.pop("parameters", None)  # ours (the notebook's defaults on Kaggle), not the CLI's
        out.append(merged)
    return out


def set_parameters(nb: dict, values: dict) -> dict:
    """``nb`` (notebook JSON) with the defaults in its ``parameters`` cell replaced by ``values`` (comments kept)."""
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).split("\n")
    for name, value in values.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        if len(hits) != 1:
            raise ValueError(f"the parameters cell has no single line '{name} = ...'")
        comment = lines[hits[0]].partition("  #")[2]
        lines[hits[0]] = f"{name} = {value!r}" + (f"  #{comment}" if comment else "")
    cell["source"] = "\n".join(lines)
    return nb


def with_data(meta: dict, data: str) -> dict:
    """``meta`` attaching the MIDI dataset ``data`` ("owner/slug") instead of ``DEFAULT_DATA``, with every kernel's
    ``data_dir`` pointing at its mount, ``/kaggle/input/<slug>``."""
    _check_ref(data, "MIDI dataset (KAGGLE_DATA)", versioned=False)
    old, new = f"/kaggle/input/{DEFAULT_DATA.split('/')[1]}", f"/kaggle/input/{data.split('/')[1]}"
    meta = json.loads(json.dumps(meta))
    meta["defaults"]["dataset_sources"] = [data if s == DEFAULT_DATA else s for s in meta["defaults"]["dataset_sources"]]
    for kernel in meta["kernels"]:
        params = kernel.get("parameters", {})
        if params.get("data_dir") == old:
            params["data_dir"] = new
    return meta


def build(out_dir: Path, root: Path = ROOT, user: str | None = None, data: str | None = None) -> list[Path]:
    """Write the kernel folders and the package dataset, each checked; ``user`` replaces the placeholder owner and
    ``data`` ("owner/slug") the MIDI dataset the kernels attach and read."""
    meta = json.loads((root / "kaggle-metadata.json").read_text())
    if data:
        meta = with_data(meta, data)
    if user:
        meta = _with_user(meta, user)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kernel, entry in zip(kernel_metadata(meta), meta["kernels"]):
        folder = out_dir / kernel["id"].split("/")[-1]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        nb = set_parameters(json.loads((root / entry["code_file"]).read_text()), entry.get("parameters", {}))
        (folder / kernel["code_file"]).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        check_kernel_metadata(kernel, folder)
        (folder / "kernel-metadata.json").write_text(json.dumps(kernel, indent=2) + "\n")
        written.append(folder)
    src = out_dir / "tchaikovsky-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(root / "tchaikovsky", src / "src" / "tchaikovsky", ignore=shutil.ignore_patterns("__pycache__"))
    dataset = {"title": "tchaikovsky-src", "id": meta["package_dataset"], "licenses": [{"name": "other"}],
               "description": "The tchaikovsky Python package (MIT licence), for its notebooks' set-up cell."}
    check_dataset_metadata(dataset)
    (src / "dataset-metadata.json").write_text(json.dumps(dataset, indent=2) + "\n")
    written.append(src)
    return written


def repo_url(explicit: str | None = None, root: Path = ROOT) -> str | None:
    """This repository's URL: ``explicit``, else $REPO_URL, else ``git remote get-url origin``; None if unknown."""
    if explicit or os.environ.get("REPO_URL"):
        return explicit or os.environ["REPO_URL"]
    try:
        out = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def colab_links(url: str, notebooks: list[str], branch: str = "main") -> tuple[str, list[str]]:
    """(the ``repo_url`` parameter that pip-installs the package, one "Open in Colab" link per notebook) for a
    GitHub repository URL (https or ssh form). Raises ValueError for a URL Colab cannot open (not GitHub)."""
    m = re.fullmatch(r"(?:https://github\.com/|git@github\.com:)([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url.strip())
    if m is None:
        raise ValueError(f"{url!r} is not a GitHub repository URL: Colab opens notebooks from GitHub only")
    owner, repo = m.groups()
    links = [f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/notebooks/{nb}.ipynb"
             for nb in notebooks]
    return f"git+https://github.com/{owner}/{repo}", links


def print_colab(url: str | None) -> None:
    if url is None:
        raise SystemExit("no repository URL: pass REPO_URL=https://github.com/OWNER/REPO (git remote has no origin)")
    pip_url, links = colab_links(url, list(SPECS))
    print("Open a notebook in Colab, set this in its parameters cell, then Run all:")
    print(f'  repo_url = "{pip_url}"')
    for link in links:
        print(f"  {link}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="kaggle")
    ap.add_argument("--user", default=None,
                    help="Kaggle user name (default: $KAGGLE_USERNAME or ~/.kaggle/kaggle.json)")
    ap.add_argument("--data", default=os.environ.get("KAGGLE_DATA") or None,
                    help=f"the Kaggle MIDI dataset the kernels attach, owner/slug (default: {DEFAULT_DATA})")
    ap.add_argument("--colab", nargs="?", const="", default=None, metavar="REPO_URL",
                    help="print Colab links and the repo_url parameter instead (default URL: git remote origin)")
    args = ap.parse_args(argv)
    if args.colab is not None:
        return print_colab(repo_url(args.colab or None))
    user = kaggle_user(args.user)
    written = build(Path(args.out), user=user, data=args.data)
    print("Upload the package once (and `datasets version ... --dir-mode zip -m MSG` after changes), then push the"
          " kernels in order, each after the one before has finished:")
    print(f"  kaggle datasets create -p {written[-1]} --dir-mode zip")
    for path in written[:-1]:
        print(f"  kaggle kernels push -p {path}")
    if user is None:
        print(f"NOTE: the metadata still says {PLACEHOLDER}: pass --user NAME (or set KAGGLE_USERNAME) and rerun")


if __name__ == "__main__":
    main()
