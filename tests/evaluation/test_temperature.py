"""Choosing the sampling temperature on validation seeds and reporting it on test seeds (a real tiny model)."""

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest

from tchaikovsky.data.tokenizer import decode_ids
from tchaikovsky.evaluation import cli
from tchaikovsky.evaluation import report as E
from tchaikovsky.evaluation.compare import compare_sets, mean_oa
from tchaikovsky.evaluation.features import piece_metrics
from tchaikovsky.evaluation.intervals import centred_interval
from tchaikovsky.evaluation.temperature import TEST_SEED, choose_temperature, disjoint_references

TEMPERATURES = [0.6, 1.0, 2.0]
N, TOKENS = 4, 96  # test_report evaluates 4 samples of 96 tokens too: the test split reuses that compilation


@pytest.fixture(scope="module")
def chosen(tiny_run):
    out = io.StringIO()
    with redirect_stdout(out):
        result = cli.main(["--run-dir", str(tiny_run), "--temperatures", *map(str, TEMPERATURES), "--n-samples",
                         str(N), "--num-tokens", str(TOKENS), "--n-boot", "200"])
    return result, out.getvalue()


def test_chooses_the_validation_best_with_intervals(chosen):
    result, _ = chosen
    rows = result["validation"]["rows"]
    assert [r["temperature"] for r in rows] == TEMPERATURES
    best = rows[int(np.argmax([r["mean_oa"] for r in rows]))]
    assert result["chosen"] == best["temperature"] == result["test"]["temperature"]
    assert best["diff"] == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "significant": False}
    for r in rows + [result["test"]]:
        assert r["n"] == N and 0.0 <= r["lo"] <= r["mean_oa"] <= r["hi"] <= 1.0 and r["lo"] < r["hi"]
    for r in rows:
        d = r["diff"]
        assert d["diff"] == pytest.approx(r["mean_oa"] - best["mean_oa"]) and d["diff"] <= 0.0
        assert d["lo"] <= d["diff"] <= d["hi"] and d["significant"] == (d["lo"] > 0 or d["hi"] < 0)
    assert result["within_noise"] == (not any(r["diff"]["significant"] for r in rows))


def test_validation_and_test_never_meet(chosen, tiny_run):
    result, _ = chosen
    v, t = result["validation"], result["test"]
    assert v["seeds"] == [0, N - 1] and t["seeds"] == [TEST_SEED, TEST_SEED + N - 1]
    assert len(v["reference"]) >= 2 and len(t["reference"]) >= 2
    train = E.load_run(tiny_run).shards.pieces("train")
    works = [{train[i]["work"] for i in r["reference"]} for r in (v, t)]
    assert not works[0] & works[1]  # no work, so no piece and no transposition of one, in both references
    files = [train[i]["rel_path"] for r in (v, t) for i in r["reference"]]
    assert len(files) == len(set(files))


def test_figures_are_those_of_the_seeds_and_references_named(chosen, tiny_run):
    """Recomputed independently: the validation rows are the mean OA of seeds 0..N-1 at each temperature against
    the validation reference, the test row that of the test seeds at the chosen temperature against the other."""
    result, _ = chosen
    run = E.load_run(tiny_run)
    train = E._split_pieces(run.shards, "train")

    def metrics(ids_list):
        return [piece_metrics(decode_ids(run.tok, ids)) for ids in ids_list]

    def reference(split):
        return metrics([train[i][: 1 + TOKENS] for i in result[split]["reference"]])

    val = metrics(E.sample_ids(run, num_tokens=TOKENS, top_p=0.95, seeds=np.arange(N)[:, None],
                               temperatures=TEMPERATURES))
    val_ref = reference("validation")
    for j, row in enumerate(result["validation"]["rows"]):
        assert row["mean_oa"] == pytest.approx(mean_oa(compare_sets(val[j::len(TEMPERATURES)], val_ref)))
    test = metrics(E.sample_ids(run, num_tokens=TOKENS, top_p=0.95, seeds=np.arange(TEST_SEED, TEST_SEED + N),
                                temperatures=result["chosen"]))
    assert result["test"]["mean_oa"] == pytest.approx(mean_oa(compare_sets(test, reference("test"))))


def test_prints_a_table_and_one_json_line(chosen):
    result, out = chosen
    lines = out.strip().splitlines()
    assert json.loads(lines[-1]) == json.loads(json.dumps(result))
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[0].startswith("| split | temperature | n | mean OA [95%]")
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["validation"] * 3 + ["**test**"]
    assert sum("(best: chosen)" in r for r in rows) == 1 and "nan" not in out.lower()


def test_validation_seeds_may_not_reach_the_test_seeds(tiny_run):
    with pytest.raises(ValueError, match="test seeds"):
        choose_temperature(tiny_run, [1.0], n_samples=4, seed=TEST_SEED - 3)


def test_centred_interval_sits_on_the_figure():
    """Bootstrap figures that run 0.02 below the point (resamples repeat pieces): the interval is their spread
    around the point, not the plain percentiles below it; clipped to the figure's range."""
    boot = np.random.default_rng(0).normal(0.88, 0.01, 4000)
    lo, hi = centred_interval(np.concatenate([[0.90], boot]))
    assert lo == pytest.approx(0.90 - 0.0196, abs=0.002) and hi == pytest.approx(0.90 + 0.0196, abs=0.002)
    assert centred_interval(np.concatenate([[0.995], boot]))[1] == 1.0


def test_references_share_no_work_and_no_transposition():
    # five works of two chorales each, every chorale in three transpositions
    pieces = [{"work": f"w{w}", "rel_path": f"w{w}.{c}.mid"} for w in range(5) for c in range(2) for _ in range(3)]
    for seed in range(5):
        refs = disjoint_references(pieces, 3, np.random.default_rng(seed))
        files = [pieces[i]["rel_path"] for r in refs.values() for i in r]
        assert len(files) == len(set(files))
        assert not {pieces[i]["work"] for i in refs["validation"]} & {pieces[i]["work"] for i in refs["test"]}
        assert min(len(r) for r in refs.values()) >= 2 and max(len(r) for r in refs.values()) == 3
