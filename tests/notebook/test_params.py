import pytest

from tchaikovsky.notebook import params


def good_03(**over):
    ns = {"data_dir": "", "run_dir": "", "seed": 0, "max_files": 40, "composers": "bach", "vocab_size": 2048,
          "preset": "demo", "max_steps": None, "max_minutes": None, "batch_size": None, "learning_rate": None,
          "resume": True, "wandb_mode": "disabled", "sample_every": 0, "repo_url": "", "params": params,
          "init_from": "", "conditions": False, "condition_dropout": None, "judge_fraction": 0.0, "allow_overlap": False,
          "fim_rate": 0.0, "unconditional_rate": None, "fim_spm": None}
    ns.update(over)
    return ns


def test_valid_parameters_pass():
    params.check("03_train", good_03())
    params.check("03_train", good_03(max_steps=10, max_minutes=0.5, batch_size=8, learning_rate=1e-3))


@pytest.mark.parametrize("name,value", [
    ("preset", "huge"), ("max_steps", 0), ("max_steps", 1.5), ("batch_size", -1), ("resume", "yes"),
    ("wandb_mode", "on"), ("learning_rate", 0.0), ("seed", -1), ("vocab_size", 100), ("max_minutes", True),
    ("condition_dropout", 1.5), ("judge_fraction", 0.9), ("init_from", None), ("conditions", "yes"),
    ("allow_overlap", "no"), ("fim_rate", 1.5), ("fim_rate", None), ("unconditional_rate", -0.1), ("fim_spm", 2.0),
])
def test_bad_values_name_the_parameter(name, value):
    with pytest.raises(ValueError, match=f"`{name}`"):
        params.check("03_train", good_03(**{name: value}))


def test_unknown_and_missing_names():
    with pytest.raises(ValueError, match="unknown parameter.*max_step"):
        params.check("03_train", good_03(max_step=5))
    ns = good_03()
    del ns["preset"]
    with pytest.raises(ValueError, match="`preset` is missing"):
        params.check("03_train", ns)
    # underscore names, modules and functions defined by set-up cells are not parameters
    params.check("03_train", good_03(_found=[1], helper=lambda: 0))


def test_lists_accept_papermill_strings():
    assert params.parse_list("0.8, 1.0") == [0.8, 1.0]
    assert params.parse_list([1, 2], int) == [1, 2]
    assert params.parse_list(0.7) == [0.7]
    ns = {"data_dir": "", "run_dir": "", "seed": 0, "max_files": None, "composers": "bach", "repo_url": "",
          "checkpoint": "", "prompt_midi": "", "prompt_chords": "", "prompt_tokens": 64, "num_tokens": 100,
          "min_tokens": 0, "temperatures": "0.8,1.1", "seeds": [0, 1], "top_k": 0, "top_p": 0.9, "min_p": 0.0,
          "grammar": True, "repetition_penalty": 1.0, "max_bars": None, "max_seconds": None, "evaluate": True,
          "evaluate_temperature": 0.9, "interactive": True, "preview_seconds": 30.0, "soundfont": "", "period": "",
          "composer": "bach", "instrumentation": "", "guidance": 1.0, "judge_samples": 2, "rerank": 1,
          "infill_midi": "", "infill_bars": "5-8", "infill_rerank": 1}
    params.check("04_sample", ns)
    for bad in ("8-5", "five", "0-2", 5):  # bars from 1, first-last
        with pytest.raises(ValueError, match="`infill_bars`"):
            params.check("04_sample", {**ns, "infill_bars": bad})
    for bad in (0, 65, 2.0):  # best of 1 (off) to 64 candidates
        with pytest.raises(ValueError, match="`rerank`"):
            params.check("04_sample", {**ns, "rerank": bad})
    params.check("04_sample", {**ns, "guidance": 0})  # 0: unconditional, an integer is fine
    for bad in (-0.5, "2", True):
        with pytest.raises(ValueError, match="`guidance`"):
            params.check("04_sample", {**ns, "guidance": bad})
    with pytest.raises(ValueError, match="`temperatures`"):
        params.check("04_sample", {**ns, "temperatures": "hot"})
    with pytest.raises(ValueError, match="`top_p`"):
        params.check("04_sample", {**ns, "top_p": 0.0})
    with pytest.raises(ValueError, match="`min_tokens`"):
        params.check("04_sample", {**ns, "min_tokens": -1})
    params.check("04_sample", {**ns, "preview_seconds": 45})  # an integer number of seconds is fine
    for bad in (0, -1.0, 601.0, "30"):  # a player must play something, and stay bounded
        with pytest.raises(ValueError, match="`preview_seconds`"):
            params.check("04_sample", {**ns, "preview_seconds": bad})
    with pytest.raises(ValueError, match="`min_tokens` is missing"):
        params.check("04_sample", {k: v for k, v in ns.items() if k != "min_tokens"})
