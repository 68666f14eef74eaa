"""Preference tuning end to end on a real (tiny) conditioned run: rounds, files, resume after an interruption."""

import json
import shutil
from dataclasses import replace

import pytest

from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.preference.report import summary_table
from tchaikovsky.preference.tune import PreferenceConfig, tune

TINY = PreferenceConfig(rounds=2, samples_per_prompt=6, top_fraction=0.25, steps_per_round=3, batch_size=2,
                        eval_samples=2, scorer_steps=10, min_pieces=1, learning_rate=1e-3)


@pytest.mark.slow
def test_rounds_write_everything_and_an_interrupted_run_resumes_to_the_same_result(conditioned_run, tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    shutil.copytree(conditioned_run, straight)
    shutil.copytree(conditioned_run, broken)
    done = tune(straight, TINY)
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
    for role in ("validation", "test"):  # every policy judged on both roles' seeds and works
        assert sorted(p.name for p in (pref / "eval" / role).iterdir()) == ["round_00", "round_01", "round_02"]
    for m in done["table"]:
        assert m["judge_rate"]["n"] == m["validation"]["judge_rate"]["n"] == m["n"] == TINY.eval_samples * \
            len(done["prompts"])  # failures stay in n
        assert m["seeds"][0] >= 1_000_000 > m["validation"]["seeds"][-1]  # test seeds apart from validation's
    assert done["chosen_round"] in (0, 1, 2) and set(done["test_gain"]) >= {"diff", "lo", "hi", "significant"}
    assert isinstance(done["guard"], float) and "| 2 |" in summary_table(done) and "Chosen on validation" in \
        summary_table(done)

    # interrupted during round 1's training (out of time), then rerun: the same table as the straight run
    cut = tune(broken, TINY, max_minutes=1e-4)
    assert cut["stopped"] == "max_minutes" and [m["round"] for m in cut["table"]] == [0]
    assert (broken / "preference" / "round_01" / "pairs.jsonl").exists()
    again = tune(broken, TINY)
    strip = lambda t: [{k: v for k, v in m.items() if k != "training"} for m in t]  # noqa: E731 (wall clock inside)
    assert strip(again["table"]) == strip(done["table"])
    # a finished run is not redone
    assert strip(tune(broken, TINY)["table"]) == strip(done["table"])


def test_runs_it_cannot_tune_say_why(trained, conditioned_run, bach, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(trained.run_dir, plain)
    tok_lib.save_tokenizer(bach.tok, plain / "tokenizer.json")
    shutil.copytree(bach.shards_dir, plain / "shards")
    with pytest.raises(ValueError, match="has no conditions"):
        tune(plain, TINY)
    with pytest.raises(ValueError, match="no condition combination has more than 50"):
        tune(conditioned_run, replace(TINY, min_pieces=50))
    with pytest.raises(ValueError, match="no sample would be chosen"):
        PreferenceConfig(samples_per_prompt=4, top_fraction=0.1)


def test_evaluate_policy_sees_only_its_roles_works_and_seeds(conditioned_run, tmp_path):
    from tchaikovsky.preference.evaluate import EvalSpec, evaluate_policy
    from tchaikovsky.preference.tune import _Context, _scorer

    run = tmp_path / "run"
    shutil.copytree(conditioned_run, run)
    ctx = _Context(run, TINY)
    train_paths = {p.rel_path for p in ctx.train_real}
    specs = {name: EvalSpec.for_role(name, held) for name, held in ctx.held.items()}
    assert {p.rel_path for p in specs["validation"].real}.isdisjoint({p.rel_path for p in specs["test"].real})
    for spec in specs.values():  # references and judges come from held-out works only, never the scorer's pieces
        assert spec.real and train_paths.isdisjoint(p.rel_path for p in spec.real)
        assert set(spec.judge.info["train_works"]) <= {p.work for p in spec.real}
    m = evaluate_policy(ctx, ctx.model0, 0, _scorer(ctx), specs["test"])
    assert m["role"] == "test" and m["n"] == TINY.eval_samples * len(ctx.prompts) == m["judge_rate"]["n"]
    assert m["seeds"][0] == 1_000_000 and m["judge"] == m["judge_rate"]["k"] / m["n"]
    assert sorted(p.name for p in (run / "preference" / "eval").iterdir()) == ["test"]
    for row in m["prompts"].values():
        assert row["n_real"] == len(specs["test"].references(row["prompt"]))


def test_verdict_chooses_on_validation_and_warns_only_on_a_significant_fall():
    from tchaikovsky.preference.evaluate import verdict

    def row(r, val_k, test_k, scorer, n=40):
        return {"round": r, "judge_rate": {"k": test_k, "n": n}, "scorer": scorer,
                "validation": {"judge_rate": {"k": val_k, "n": n}, "scorer": scorer}}

    out = verdict([row(0, 10, 12, 0.4), row(1, 20, 13, 0.5), row(2, 19, 30, 0.6)])
    assert out["chosen_round"] == 1  # validation's best, although round 2 looks best on test
    assert out["test_gain"]["diff"] == pytest.approx((13 - 12) / 40) and not out["test_gain"]["significant"]
    assert out["warnings"] == []  # 20 -> 19 of 40 is noise
    hacked = verdict([row(0, 30, 30, 0.4), row(1, 8, 8, 0.7)])
    assert hacked["chosen_round"] == 0 and len(hacked["warnings"]) == 1 and "round 1" in hacked["warnings"][0]
    assert verdict([row(0, 5, 5, 0.4), row(1, 5, 5, 0.4)])["chosen_round"] == 0  # a tie keeps the earlier round


def test_guidance_reaches_the_preference_samples(conditioned_run):
    from types import SimpleNamespace

    import numpy as np

    from tchaikovsky.config import SampleConfig
    from tchaikovsky.data.conditions import load_conditions
    from tchaikovsky.generate.sampling import generate
    from tchaikovsky.preference.evaluate import sample
    from tchaikovsky.training.checkpoint import load_run_model

    model, tok, _ = load_run_model(conditioned_run)
    cond = load_conditions(conditioned_run, tok)
    prefix = lambda p: np.asarray(cond.prefix(**p) + [tok["BOS_None"]], np.int32)  # noqa: E731 (as _Context's)
    ctx = SimpleNamespace(num_tokens=20, tok=tok, cond=cond, prefix=prefix)
    prompt, kw = {"composer": "bach"}, dict(temperature=1.0, top_k=0, top_p=0.95)
    got = sample(ctx, model, prompt, [0, 1, 2], guidance=2.5, **kw)
    want = generate(model, prefix(prompt), SampleConfig(num_tokens=20, min_tokens=20, top_p=0.95, guidance=2.5),
                    seeds=[0, 1, 2], temperatures=1.0, tok=tok, conditions=cond)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert any(not np.array_equal(g, p) for g, p in zip(got, sample(ctx, model, prompt, [0, 1, 2], **kw)))
    with pytest.raises(ValueError, match="guidance"):
        PreferenceConfig(guidance=-1.0)
