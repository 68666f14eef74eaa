import json

from tchaikovsky import kaggle
from tchaikovsky.notebooks import NOTEBOOKS


def test_make_kaggle_writes_one_pushable_folder_per_notebook(tmp_path):
    written = kaggle.build(tmp_path)
    folders = [p for p in written if p.name != "tchaikovsky-src"]
    assert len(folders) == len(NOTEBOOKS)
    for folder, name in zip(folders, NOTEBOOKS):
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert meta["code_file"] == f"{name}.ipynb" and (folder / meta["code_file"]).exists()
        assert meta["kernel_type"] == "notebook" and meta["enable_tpu"] is True and meta["enable_internet"] is True
        assert meta["id"].split("/")[-1] == folder.name
        assert any("giantmidi" in d for d in meta["dataset_sources"])
    src = tmp_path / "tchaikovsky-src"
    assert (src / "tchaikovsky" / "env.py").exists()
    assert json.loads((src / "dataset-metadata.json").read_text())["id"].endswith("tchaikovsky-src")
