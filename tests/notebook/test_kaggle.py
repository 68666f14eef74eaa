import json

import pytest

from tchaikovsky.notebook import kaggle
from tchaikovsky.notebook.runner import NOTEBOOKS


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


def test_user_name_replaces_the_placeholder_everywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    home = tmp_path / "home"
    assert kaggle.kaggle_user(home=home) is None  # no credentials anywhere
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "ada-l", "key": "secret"}))
    assert kaggle.kaggle_user(home=home) == "ada-l"
    monkeypatch.setenv("KAGGLE_USERNAME", "env_user")
    assert kaggle.kaggle_user(home=home) == "env_user"
    assert kaggle.kaggle_user("cli-user", home=home) == "cli-user"
    with pytest.raises(ValueError, match="not a Kaggle user name"):
        kaggle.kaggle_user("a/b")

    written = kaggle.build(tmp_path / "out", user="ada-l")
    texts = [(p / "kernel-metadata.json").read_text() for p in written if p.name != "tchaikovsky-src"]
    texts.append((tmp_path / "out" / "tchaikovsky-src" / "dataset-metadata.json").read_text())
    for text in texts:
        assert kaggle.PLACEHOLDER not in text and "ada-l/" in text
    meta = json.loads(texts[-2])  # notebook 04 reads the trained run of notebook 03, by the same owner
    assert meta["kernel_sources"] == ["ada-l/tchaikovsky-03-train"]
