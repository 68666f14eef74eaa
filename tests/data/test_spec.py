"""DataSpec: how a run's data was made, kept in the shards' index and compared on reruns and fine-tunes."""

from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data.spec import DataSpec


def test_a_spec_from_a_notebooks_names_compares_only_what_it_set():
    made = DataSpec(vocab_size=1024, transpose_range=2, judge_fraction=0.4)
    asked = DataSpec.of({"vocab_size": 2048, "judge_fraction": 0.4, "learning_rate": 1e-3}, seed=3)
    assert asked.given == {"vocab_size", "judge_fraction", "seed"}  # transpose_range: not this notebook's
    assert asked.differences(made) == ["seed: 3 asked, 0 in the shards", "vocab_size: 2048 asked, 1024 in the shards"]
    assert DataSpec.from_dict(made.to_dict()) == made and "given" not in made.to_dict()
    assert made.transpositions == (-2, -1, 1, 2) and DataSpec.from_dict(None) is None


def test_shards_keep_their_spec(bach, tmp_path):
    spec = DataSpec(composers="bach", vocab_size=600, judge_fraction=0.2)
    sh = shards_lib.Shards(shards_lib.build_shards(bach.tok, bach.pieces, tmp_path / "shards",
                                                   data_spec=spec.to_dict()))
    assert DataSpec.of_shards(sh) == spec and DataSpec.of_shards(bach.shards) is None


def test_a_rerun_asking_for_other_data_says_what_differs(bach, tmp_path, capsys):
    from tchaikovsky.notebook import pipeline

    run = tmp_path / "run"
    shards_lib.build_shards(bach.tok, bach.pieces, run / "shards",
                            data_spec=DataSpec(vocab_size=600).to_dict())
    pipeline.ensure_data(run, DataSpec.of({"vocab_size": 600}))
    assert capsys.readouterr().out == ""
    sh = pipeline.ensure_data(run, DataSpec.of({"vocab_size": 999, "data_dir": ""}))
    out = capsys.readouterr().out
    assert sh.path == run / "shards" and "vocab_size: 999 asked, 600 in the shards" in out and "data_dir" not in out
