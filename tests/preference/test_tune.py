"""Preference tuning end to end on a real (tiny) conditioned run: rounds, files, resume after an interruption."""

import json
import shutil
from dataclasses import replace

import pytest

from tchaikovsky.config import preset
from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.preference.report import summary_table
from tchaikovsky.preference.tune import PreferenceConfig, tune
from tchaikovsky.training.loop import train

TINY = PreferenceConfig(rounds=2, samples_per_prompt=6, top_fraction=0.25, steps_per_round=3, batch_size=2,
                        eval_samples=2, scorer_steps=10, min_pieces=1, learning_rate=1e-3)


@pytest.fixture(scope="module")
def conditioned_run(bach, tmp_path_factory):
    """The fixture chorales as two composers' works, conditioned shards with a judge split, the tiny preset trained
    a few steps: the smallest run preference tuning accepts."""
    names = ["Johann Sebastian Bach", "Claudio Monteverdi"]
    pieces = [replace(p, composer=names[i % 2], period=["Baroque", "Renaissance"][i % 2], instrumentation="voices",
                      work=f"w{i // 2}") for i, p in enumerate(bach.pieces)]
    run = tmp_path_factory.mktemp("pref") / "run"
    cond = Conditions.build(len(bach.tok), pieces)
    tok_lib.save_tokenizer(bach.tok, run / "tokenizer.json")
    cond.save(run)
    sh = shards_lib.Shards(shards_lib.build_shards(bach.tok, pieces, run / "shards", conditions=cond,
                                                   held_out={"judge": 0.3}, progress=False))
    p = preset("tiny", vocab_size=cond.vocab_size, max_steps=10, eval_every=10, checkpoint_every=10)
    train(run, p.model, p.train, sh, progress=False)
    return run


@pytest.mark.slow
def test_rounds_write_everything_and_an_interrupted_run_resumes_to_the_same_result(conditioned_run, tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    shutil.copytree(conditioned_run, straight)
    shutil.copytree(conditioned_run, broken)
    done = tune(straight, TINY, progress=False)
    assert done["stopped"] == "done" and [m["round"] for m in done["table"]] == [0, 1, 2]
    pref = straight / "preference"
    for r in (1, 2):
        rd = pref / f"round_{r:02d}"
        pairs = [json.loads(line) for line in (rd / "pairs.jsonl").read_text().splitlines()]
        assert pairs and all(p["chosen_score"] >= p["rejected_score"] for p in pairs)
        assert (rd / "selection.json").exists() and (rd / "train" / "checkpoints" / "model.eqx").exists()
        history = [json.loads(line) for line in (rd / "train" / "history.jsonl").read_text().splitlines()]
        assert history[-1]["step"] == 3 and "reward_margin" in history[-1]
    assert (pref / "scorer" / "scorer.json").exists() and (pref / "scorer_report.json").exists()
    assert sorted(p.name for p in (pref / "eval").iterdir()) == ["round_00", "round_01", "round_02"]
    assert isinstance(done["guard"], float) and "| 2 |" in summary_table(done)

    # interrupted during round 1's training (out of time), then rerun: the same table as the straight run
    cut = tune(broken, TINY, max_minutes=1e-4, progress=False)
    assert cut["stopped"] == "max_minutes" and [m["round"] for m in cut["table"]] == [0]
    assert (broken / "preference" / "round_01" / "pairs.jsonl").exists()
    again = tune(broken, TINY, progress=False)
    strip = lambda t: [{k: v for k, v in m.items() if k != "training"} for m in t]  # noqa: E731 (wall clock inside)
    assert strip(again["table"]) == strip(done["table"])
    # a finished run is not redone
    assert strip(tune(broken, TINY, progress=False)["table"]) == strip(done["table"])


def test_runs_it_cannot_tune_say_why(trained, conditioned_run, bach, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(trained.run_dir, plain)
    tok_lib.save_tokenizer(bach.tok, plain / "tokenizer.json")
    shutil.copytree(bach.shards_dir, plain / "shards")
    with pytest.raises(ValueError, match="has no conditions"):
        tune(plain, TINY, progress=False)
    with pytest.raises(ValueError, match="no condition combination has more than 50"):
        tune(conditioned_run, replace(TINY, min_pieces=50), progress=False)
    with pytest.raises(ValueError, match="no sample would be chosen"):
        PreferenceConfig(samples_per_prompt=4, top_fraction=0.1)
