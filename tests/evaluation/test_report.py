"""Evaluation of a trained run end to end (real chorales, a real tiny model): JSON, plots, table, command line."""

import json
from pathlib import Path

import pytest

from tchaikovsky.evaluation import cli
from tchaikovsky.evaluation import report as E


@pytest.fixture(scope="module")
def evaluated(tiny_run):
    """The tiny trained run (``conftest.tiny_run``), evaluated once through the command line entry point."""
    run = tiny_run
    result = cli.main(["--run-dir", str(run), "--n-samples", "4", "--num-tokens", "96", "--max-reference", "16"])
    return run, result


def test_evaluation_json_has_every_section(evaluated, trained):
    run, result = evaluated
    saved = json.loads((run / "evaluation.json").read_text())
    for key in ("settings", "loss", "summary", "comparison", "comparison_vs_heldout", "originality", "sets",
                "plots", "midi", "step"):
        assert key in saved, key
    assert set(saved["sets"]) == {"train", "heldout", "model", "bigram", "random"}
    assert saved["sets"]["model"]["n"] == 4 and saved["sets"]["random"]["n"] == 4
    assert all(n <= 97 for s in saved["sets"].values() for n in s["n_tokens"])  # BOS + at most 96 tokens
    assert set(saved["comparison"]) == {"heldout", "model", "bigram", "random"}
    for feature, row in saved["comparison"]["model"].items():
        assert {"oa", "kl", "gen_mean", "ref_mean"} <= set(row), feature
    assert set(saved["originality"]["model"]) >= {"longest_run", "ngram_overlap", "copied", "n_copied"}
    loss = saved["loss"]
    assert loss["eval_loss"] > 0 and loss["bits_per_note"] > 0
    # the tiny model and the bigram both beat a uniform distribution over the vocabulary
    assert loss["bits_per_note"] < loss["bits_per_note_uniform"]
    assert loss["bits_per_note_bigram"] < loss["bits_per_note_uniform"]
    assert saved["step"] == trained.preset.train.max_steps
    assert [Path(p).name for p in saved["plots"]] == [f"evaluation_{k}.png" for k in ("features", "durations",
                                                                                        "originality")]
    assert all(Path(p).is_file() and Path(p).parent == run for p in saved["plots"])
    assert all(Path(p).is_file() for p in saved["midi"])
    assert len(saved["midi"]) == 12 and all(p.endswith(".mid") for p in saved["midi"])


def test_real_pieces_beat_random_tokens(evaluated):
    _, result = evaluated
    s = result["summary"]
    assert s["heldout"]["mean_oa"] > s["random"]["mean_oa"]
    assert s["train"]["empty"] == 0.0 and s["heldout"]["empty"] == 0.0
    # real pieces stay in a key; uniformly random tokens, when they decode to notes at all, do not
    assert s["heldout"]["scale_consistency"] > 0.9


def test_summary_table(evaluated):
    _, result = evaluated
    table = E.summary_table(result)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| set | pieces | notes | mean OA")
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["real held-out", "model", "bigram", "random",
                                                             "train (reference)"]
    assert all(r.count("|") == rows[0].count("|") for r in rows)
    assert "nan" not in table.lower()


def test_without_baselines_writes_nothing(evaluated):
    run, first = evaluated
    before = sorted(p.name for p in run.iterdir())
    result = E.evaluate_run(run, n_samples=4, num_tokens=96, max_reference=16, baselines=False, write=False)
    assert set(result["sets"]) == {"train", "heldout", "model"} and "plots" not in result
    assert sorted(p.name for p in run.iterdir()) == before
    # same seeds, same settings: the same samples and the same measures as the first evaluation
    assert result["sets"]["model"] == first["sets"]["model"]
    assert "| model |" in E.summary_table(result) and "| bigram |" not in E.summary_table(result)
