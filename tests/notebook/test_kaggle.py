import json
import shutil

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
        assert meta["kernel_type"] == "notebook" and meta["enable_internet"] is True
        assert meta["enable_tpu"] is (name in ("03_train", "04_sample", "05_preference_tuning"))
        assert meta["id"].split("/")[-1] == folder.name
        assert any("giantmidi" in d for d in meta["dataset_sources"])
    src = tmp_path / "tchaikovsky-src"
    assert (src / "src" / "tchaikovsky" / "env.py").exists()
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


def _built(tmp_path):
    written = kaggle.build(tmp_path)
    kernels = {p.name: json.loads((p / "kernel-metadata.json").read_text()) for p in written[:-1]}
    return written, kernels


def test_every_written_metadata_file_passes_the_clis_rules(tmp_path):
    written, kernels = _built(tmp_path)
    for folder in written[:-1]:
        kaggle.check_kernel_metadata(kernels[folder.name], folder)
    dataset = json.loads((written[-1] / "dataset-metadata.json").read_text())
    kaggle.check_dataset_metadata(dataset)
    assert dataset["licenses"] == [{"name": "other"}] and "MIT" in dataset["description"]


def test_package_dataset_survives_the_clis_dir_mode_zip(tmp_path):
    """`kaggle datasets create` skips sub-folders by default: the package must sit in a sub-folder that
    `--dir-mode zip` uploads as one archive, holding tchaikovsky/ whether Kaggle unpacks it into src/ or the root."""
    import zipfile

    src = kaggle.build(tmp_path)[-1]
    top = sorted(p.name for p in src.iterdir())
    assert top == ["dataset-metadata.json", "src"]  # nothing but metadata goes up without --dir-mode
    archive = shutil.make_archive(str(tmp_path / "src"), "zip", src / "src")  # what the CLI uploads
    names = zipfile.ZipFile(archive).namelist()
    assert "tchaikovsky/__init__.py" in names and "tchaikovsky/data/corpus.py" in names


@pytest.mark.parametrize("change, message", [
    ({"licenses": [{"name": "MIT"}]}, "licence"),
    ({"licenses": [{"name": "other"}, {"name": "CC0-1.0"}]}, "exactly one"),
    ({"title": "src"}, "6 to 50"),
    ({"id": "someone/src"}, "6 to 50"),
    ({"id": "no-owner"}, "owner/slug"),
    ({"subtitle": "too short"}, "subtitle"),
])
def test_dataset_metadata_that_kaggle_rejects_fails_here(change, message):
    good = {"id": "ada/tchaikovsky-src", "title": "tchaikovsky-src", "licenses": [{"name": "CC0-1.0"}]}
    kaggle.check_dataset_metadata(good)
    with pytest.raises(ValueError, match=message):
        kaggle.check_dataset_metadata({**good, **change})


@pytest.mark.parametrize("change, message", [
    ({"enable_tpus": True}, "unknown keys"),
    ({"title": "tchaikovsky 3 train"}, "slugify"),
    ({"title": "t03"}, ">= 5 characters"),
    ({"enable_tpu": "true"}, "true or false"),
    ({"language": "python3"}, "language"),
    ({"machine_shape": "TpuV38"}, "retired"),
    ({"kernel_sources": ["tchaikovsky-02-train-tokenizer"]}, "owner/slug"),
    ({"dataset_sources": ["a/b/c/d"]}, "owner/slug"),
    ({"code_file": "missing.ipynb"}, "does not exist"),
])
def test_kernel_metadata_that_the_cli_rejects_or_ignores_fails_here(tmp_path, change, message):
    written, kernels = _built(tmp_path)
    folder = written[2]
    meta = kernels[folder.name]
    kaggle.check_kernel_metadata(meta, folder)
    with pytest.raises(ValueError, match=message):
        kaggle.check_kernel_metadata({**meta, **change}, folder)


def test_pushed_notebooks_default_to_kaggle_inputs_and_chain_their_outputs(tmp_path):
    import papermill as pm

    written, kernels = _built(tmp_path)
    by_name = {k["code_file"]: (folder, k) for folder, k in zip(written, kernels.values())}
    for code_file, (folder, meta) in by_name.items():
        defaults = pm.inspect_notebook(str(folder / code_file))
        assert any(d.endswith("/giantmidi-piano") for d in meta["dataset_sources"])
        if code_file.startswith("05"):  # preference tuning reads the run 03 wrote, not the MIDI folder
            assert "data_dir" not in defaults and meta["kernel_sources"][0].endswith("/tchaikovsky-03-train")
            continue
        assert defaults["data_dir"]["default"] == "'/kaggle/input/giantmidi-piano'", code_file
        cells = json.loads((folder / code_file).read_text())["cells"]
        source = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
        assert "data_dir = '/kaggle/input/giantmidi-piano'  # " in source  # the comment is kept
    assert by_name["02_train_tokenizer.ipynb"][1]["enable_tpu"] is False  # tokenizing needs no TPU quota
    assert by_name["03_train.ipynb"][1]["machine_shape"] == "TpuV5E8"
    assert by_name["03_train.ipynb"][1]["kernel_sources"][0].endswith("/tchaikovsky-02-train-tokenizer")
    assert by_name["04_sample.ipynb"][1]["kernel_sources"][0].endswith("/tchaikovsky-03-train")
    with pytest.raises(ValueError, match="no single line"):
        kaggle.set_parameters(json.loads((written[0] / "01_explore_data.ipynb").read_text()), {"nope": 1})


def test_kaggle_data_names_the_midi_dataset_every_kernel_attaches_and_reads(tmp_path, capsys):
    import papermill as pm

    kaggle.main(["--out", str(tmp_path / "k"), "--user", "ann", "--data", "bob/maestro-v3-midi"])
    folders = [p for p in sorted((tmp_path / "k").iterdir()) if p.name != "tchaikovsky-src"]
    assert len(folders) == len(NOTEBOOKS)
    for folder in folders:
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert "bob/maestro-v3-midi" in meta["dataset_sources"]
        assert not any("giantmidi" in d for d in meta["dataset_sources"])
        defaults = pm.inspect_notebook(str(folder / meta["code_file"]))
        if "data_dir" in defaults:  # all but 05, which reads 03's run
            assert defaults["data_dir"]["default"] == "'/kaggle/input/maestro-v3-midi'"
    with pytest.raises(ValueError, match="KAGGLE_DATA"):
        kaggle.build(tmp_path / "bad", user="ann", data="no-owner-here")


def test_colab_links_come_from_the_github_url(capsys):
    pip_url, links = kaggle.colab_links("git@github.com:ann/tchaikovsky.git", ["01_explore_data", "04_sample"])
    assert pip_url == "git+https://github.com/ann/tchaikovsky"
    assert links == ["https://colab.research.google.com/github/ann/tchaikovsky/blob/main/notebooks/01_explore_data.ipynb",
                     "https://colab.research.google.com/github/ann/tchaikovsky/blob/main/notebooks/04_sample.ipynb"]
    assert kaggle.colab_links("https://github.com/ann/tchaikovsky/", ["x"])[0] == pip_url
    with pytest.raises(ValueError, match="not a GitHub repository URL"):
        kaggle.colab_links("https://gitlab.com/ann/tchaikovsky", ["x"])
    kaggle.main(["--colab", "https://github.com/ann/tchaikovsky.git"])
    out = capsys.readouterr().out
    assert 'repo_url = "git+https://github.com/ann/tchaikovsky"' in out
    assert out.count("colab.research.google.com/github/ann/tchaikovsky/blob/main/notebooks/") == len(NOTEBOOKS)
