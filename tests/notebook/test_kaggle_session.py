"""The pushed kernels, run as Kaggle would run them: ``make kaggle``'s folders, uploaded and mounted the way the
Kaggle CLI and Kaggle do it, executed with Papermill in an emulated ``/kaggle``.

What is emulated, and how (the CLI's behaviour read from its source, kaggle 2.2.5 ``upload_files`` and
``DirectoryArchive``):
- ``kaggle datasets create -p DIR [--dir-mode zip]``: every top-level file but the metadata is uploaded; a
  sub-folder is skipped, or with ``--dir-mode zip`` uploaded as ``<name>.zip`` of its contents
  (``shutil.make_archive``), which Kaggle unpacks into ``<name>/`` of the mounted dataset.
- A session: one root (``$TCHAIKOVSKY_KAGGLE_ROOT`` standing in for ``/kaggle``, the same path in every session as
  on Kaggle) with the attached datasets and kernel outputs under ``input/<slug>/`` made read-only (chmod, which
  binds non-root users; as root the code's by-location rule is what is tested), and an empty ``working/`` as the
  cwd. A kernel's output is what it left in ``working/``.
- The Python: a venv whose site-packages are links to this venv's packages except the ``.pth`` files (so no
  editable install of this repository), tchaikovsky itself, and wandb (which Kaggle's image lacks); PYTHONPATH is
  emptied. So the kernels can import tchaikovsky only from the attached dataset, as on Kaggle.
Not emulated: the TPU (JAX runs on the CPU), the package index (nothing else is missing), GiantMIDI-Piano (ten
Bach chorales stand in for it, passed as ``data_dir`` under the emulated root).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tchaikovsky.notebook import kaggle

pytestmark = [pytest.mark.slow, pytest.mark.kaggle_session]
KERNEL = "kaggle-emulated"


@pytest.fixture(scope="module")
def kaggle_python(tmp_path_factory) -> Path:
    """A jupyter kernel named KERNEL running a Python that has everything but tchaikovsky and wandb."""
    base = tmp_path_factory.mktemp("kaggle-python")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.endswith(".pth") or "tchaikovsky" in name or name == "wandb" or name.startswith("wandb-"):
            continue
        (site / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    probe = "import importlib.util as u; print(u.find_spec('tchaikovsky'), u.find_spec('wandb'), u.find_spec('jax') is not None)"
    out = subprocess.run([python, "-c", probe], env={**os.environ, "PYTHONPATH": ""}, cwd=base,
                         capture_output=True, text=True)
    assert out.stdout.split() == ["None", "None", "True"], out.stdout + out.stderr
    spec = base / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return base / "jupyter"


def upload_dataset(folder: Path, mount: Path, dir_mode: str = "skip") -> None:
    """What ``kaggle datasets create -p folder --dir-mode dir_mode`` puts in the dataset Kaggle mounts at ``mount``."""
    mount.mkdir(parents=True)
    for item in folder.iterdir():
        if item.name in ("dataset-metadata.json", "datapackage.json"):
            continue
        if item.is_file():
            shutil.copy(item, mount / item.name)
        elif dir_mode == "zip":  # the CLI archives the folder's contents; Kaggle unpacks <name>.zip into <name>/
            archive = shutil.make_archive(str(mount.parent / f".upload-{item.name}"), "zip", item)
            shutil.unpack_archive(archive, mount / item.name)
            os.remove(archive)


class Session:
    """One Kaggle session at ``root``: ``input/<slug>`` read-only, ``working/`` empty and the cwd."""

    def __init__(self, root: Path, monkeypatch, inputs: dict[str, Path]):
        if root.exists():  # the last session's read-only inputs: writable again, so they can go
            for path in (root, *root.rglob("*")):
                path.chmod(0o755 if path.is_dir() else 0o644)
            shutil.rmtree(root)
        self.root, self.working = root, root / "working"
        self.working.mkdir(parents=True)
        for slug, src in inputs.items():
            shutil.copytree(src, root / "input" / slug, symlinks=True)
        for path in sorted((root / "input").rglob("*"), reverse=True):
            path.chmod(0o555 if path.is_dir() else 0o444)
        monkeypatch.setenv(kaggle.ROOT_ENV, str(root))
        monkeypatch.setenv("PYTHONPATH", "")

    def run(self, folder: Path, out: Path, **params) -> Path:
        import papermill as pm

        code = json.loads((folder / "kernel-metadata.json").read_text())["code_file"]
        pm.execute_notebook(str(folder / code), str(out), parameters=params, kernel_name=KERNEL,
                            cwd=str(self.working), progress_bar=False)
        return out

    def output(self, dest: Path) -> Path:
        """The kernel's output (its working/), kept for a later session to attach."""
        shutil.copytree(self.working, dest, symlinks=True)
        return dest


@pytest.fixture
def pushed(tmp_path, kaggle_python, corpus_cache, monkeypatch):
    """``make kaggle``'s folders, the package dataset as uploaded with --dir-mode zip, a stand-in MIDI dataset."""
    from tchaikovsky.data import embedded

    monkeypatch.setenv("JUPYTER_PATH", str(kaggle_python))
    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(corpus_cache))
    folders = {p.name: p for p in kaggle.build(tmp_path / "kaggle-folders", user="ada")}
    uploads = tmp_path / "uploads"
    upload_dataset(folders["tchaikovsky-src"], uploads / "tchaikovsky-src", dir_mode="zip")
    midi = uploads / "giantmidi-piano"
    midi.mkdir()
    for f in sorted(embedded.embedded_corpus(max_files=10, cache_dir=corpus_cache).rglob("*.mid"))[:10]:
        shutil.copy(f, midi / f.name)
    return folders, uploads


def test_kernels_02_03_04_run_as_pushed_each_on_the_one_before(tmp_path, pushed, monkeypatch):
    folders, uploads = pushed
    root, outputs, executed = tmp_path / "kaggle", tmp_path / "outputs", tmp_path / "executed"
    executed.mkdir()
    data = {"tchaikovsky-src": uploads / "tchaikovsky-src", "giantmidi-piano": uploads / "giantmidi-piano"}
    data_dir = str(root / "input" / "giantmidi-piano")  # the pushed default is /kaggle/input/giantmidi-piano

    s = Session(root, monkeypatch, data)
    s.run(folders["tchaikovsky-02-train-tokenizer"], executed / "02.ipynb", data_dir=data_dir, max_files=10,
          vocab_size=700)
    out02 = s.output(outputs / "tchaikovsky-02-train-tokenizer")
    assert json.loads((out02 / "runs" / "default" / "data_report.json").read_text())["kept"] == 10

    s = Session(root, monkeypatch, {**data, "tchaikovsky-02-train-tokenizer": out02})
    s.run(folders["tchaikovsky-03-train"], executed / "03.ipynb", data_dir=data_dir, preset="tiny", max_steps=20)
    out03 = s.output(outputs / "tchaikovsky-03-train")
    run03 = out03 / "runs" / "default"
    assert (run03 / "tokenizer.json").read_bytes() == (out02 / "runs" / "default" / "tokenizer.json").read_bytes()
    assert json.loads((run03 / "history.jsonl").read_text().splitlines()[-1])["step"] == 20
    assert list((run03 / "checkpoints").glob("step_*"))

    s = Session(root, monkeypatch, {**data, "tchaikovsky-03-train": out03})
    s.run(folders["tchaikovsky-04-sample"], executed / "04.ipynb", data_dir=data_dir, num_tokens=80,
          seeds=[0, 1], temperatures=[1.0])
    mids = sorted((s.working / "runs" / "default" / "samples").glob("sample-*.mid"))
    assert len(mids) == 2 and all(m.stat().st_size > 0 for m in mids)
    text = json.dumps(json.loads((executed / "04.ipynb").read_text())["cells"])
    assert "is read-only: working on a copy" in text  # 04 found 03's run in its inputs


def test_setup_cell_fails_clearly_without_dir_mode_or_internet(tmp_path, pushed, monkeypatch):
    import papermill as pm

    folders, uploads = pushed
    bare = tmp_path / "uploaded-without-dir-mode"
    upload_dataset(folders["tchaikovsky-src"], bare, dir_mode="skip")  # `kaggle datasets create -p ...` alone
    assert list(bare.iterdir()) == []
    s = Session(tmp_path / "kaggle", monkeypatch, {"tchaikovsky-src": bare})
    with pytest.raises(pm.PapermillExecutionError, match="tchaikovsky not found: attach the tchaikovsky-src"):
        s.run(folders["tchaikovsky-02-train-tokenizer"], tmp_path / "02.ipynb")

    # Internet off (pip reaches no index) and wandb asked for: Kaggle's image has no wandb, so 03 must install it.
    s = Session(tmp_path / "kaggle", monkeypatch, {"tchaikovsky-src": uploads / "tchaikovsky-src"})
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    with pytest.raises(pm.PapermillExecutionError, match="switch on Internet in the notebook's Settings"):
        s.run(folders["tchaikovsky-03-train"], tmp_path / "03.ipynb", wandb_mode="offline")
