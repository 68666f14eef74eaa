"""scripts/gpu_check.sh and its Python side (benchmarks.gpu_check): the settings check, the summary, the dry run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
NB = "--only 02_train_tokenizer 03_train 04_sample --run-dir run"
GOOD = {
    "training": "--preset base-100m --steps 10",
    "sampling": "--preset base-100m --recompute-tokens 256",
    "notebooks": f"{NB} --preset small --max-files 400 -p transpose_range=2 -p vocab_size=1024 -p max_steps=2000 "
                 "-p max_minutes=3 -p num_tokens=512",
}


def test_check_accepts_good_settings():
    assert gpu_check.check(**GOOD) == []


@pytest.mark.parametrize("part, argv, expect", [
    ("training", "--preset base-100m --stepz 10", "unrecognized arguments: --stepz"),
    ("training", "--preset base100m", "preset='base100m'"),
    ("training", "--preset tiny --seq-len 4096", "exceeds"),
    ("sampling", "--preset base-100m --recompute-tokens many", "invalid int value"),
    ("sampling", "--preset tiny --prompt-len 65", "--prompt-len 65 outside 1..64"),
    ("notebooks", f"{NB} --preset small -p transpose_rang=2", "takes 'transpose_rang'"),
    ("notebooks", f"{NB} --preset small -p vocab_size=100", "vocab_size=100: expected an integer >= 600"),
    ("notebooks", f"{NB} --preset small -p max_steps=True", "max_steps=True"),
    ("notebooks", f"{NB} --preset smal", "preset='smal'"),
    ("notebooks", "--only 03_trian --run-dir run", "no notebook '03_trian'"),
    ("notebooks", f"{NB} --max-filez 4", "unrecognized arguments: --max-filez"),
])
def test_check_names_each_mistake(part, argv, expect):
    errors = gpu_check.check(**{**GOOD, part: argv})
    assert errors and all(e.startswith(f"{part}: ") for e in errors), errors
    assert any(expect in e for e in errors), errors


def test_summary_judges_targets_only_on_accelerators(tmp_path):
    """Targets are judged (met / MISSED) on an accelerator, not on a CPU; missing files leave rows empty, and a
    failed stage is named."""
    (tmp_path / "device.json").write_text(json.dumps({"devices": 1, "device_kind": "NVIDIA H100 80GB HBM3",
                                                      "platform": "gpu", "jax": "0.7.2", "host": "h"}))
    (tmp_path / "training.json").write_text(json.dumps({"bench": "training", "preset": "base-100m", "mfu": 0.5,
                                                        "tokens_per_s": 4.0e5, "step_ms": 160.0}))
    (tmp_path / "sampling.json").write_text(json.dumps({"bench": "sampling", "preset": "base-100m",
                                                        "bandwidth_fraction": 0.3, "batch64_tokens_per_s": None}))
    (tmp_path / "stages.jsonl").write_text('{"stage": "training", "seconds": 60, "rc": 0}\n'
                                           '{"stage": "notebooks", "seconds": 5, "rc": 1}\n')
    s = gpu_check.main(["summary", str(tmp_path)])
    md = (tmp_path / "summary.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()}
    assert ">= 0.45: met" in rows["training base-100m: MFU"]
    assert ">= 0.5: MISSED" in rows["sampling base-100m: batch-1 bandwidth fraction"]
    assert "(not measured)" in rows["sampling base-100m: batch-64 tokens/s"]
    assert "notebooks 5 (FAILED, rc 1)" in rows["stages (s)"] and "total 65" in rows["stages (s)"]
    assert s["small_run"] is None and s["failed"] == ["notebooks"]
    assert json.loads((tmp_path / "summary.json").read_text()) == s

    (tmp_path / "device.json").write_text(json.dumps({"devices": 1, "device_kind": "cpu", "platform": "cpu"}))
    md = gpu_check.table(gpu_check.collect(tmp_path))
    assert "met" not in md and "MISSED" not in md and "(not judged on a CPU)" in md


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path, corpus_cache):
    """``gpu_check.sh --dry-run``: every stage succeeds on the CPU, each output file is where the summary reads it,
    and the table printed last holds the figures of the real outputs."""
    out = tmp_path / "gpu-check"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user's machine has
    env.update(TCHAIKOVSKY_CACHE=str(corpus_cache), JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--python", sys.executable, str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    stages = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in stages] == ["install", "plan", "device", "training", "sampling", "notebooks"]
    assert all(s["rc"] == 0 for s in stages)
    for name in ("gpu_check.log", "settings.json", "device.json", "training.log", "sampling.log", "notebooks.log",
                 "summary.md", "run/history.jsonl", "run/evaluation.json", "run/checkpoints"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in (out / "run" / "notebooks").glob("*.ipynb")) == [
        "02_train_tokenizer.ipynb", "03_train.ipynb", "04_sample.ipynb"]
    assert list((out / "run" / "samples").glob("*.mid")), "04 wrote no samples"

    s = json.loads((out / "summary.json").read_text())
    assert s == gpu_check.collect(out)
    assert s["settings"]["dry_run"] is True and s["settings"]["notebook_preset"] == "tiny"
    assert s["machine"]["platform"] == "cpu" and s["machine"]["devices"] == 1
    assert s["training"]["bench"] == "training" and s["training"]["preset"] == "tiny"
    assert s["training"]["tokens_per_s"] > 0 and s["training"]["mfu"] is None
    assert s["sampling"]["bench"] == "sampling" and s["sampling"]["batch"] == 64
    assert s["sampling"]["batch64_tokens_per_s"] > 0 and s["sampling"]["speedup"] > 0
    run = s["small_run"]
    assert run["steps"] == 10
    for key in ("heldout_loss", "bits_per_note", "bits_per_note_uniform", "mean_oa"):
        assert isinstance(run[key], float) and math.isfinite(run[key]) and run[key] > 0, key
    table = (out / "summary.md").read_text().strip()
    assert proc.stdout.strip().splitlines()[-1].startswith("everything is in")
    assert table in proc.stdout
    assert f"{run['heldout_loss']:.3f}" in table and "tiny run: bits per note" in table
