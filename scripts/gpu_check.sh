#!/usr/bin/env bash
# The accelerator figures in one run. See usage() or `scripts/gpu_check.sh --help`.
set -uo pipefail  # not -e: a failed measurement stage is recorded and the others still run

usage() {
  cat <<'EOF'
usage: scripts/gpu_check.sh [--dry-run] [--wheels DIR] [--python PY] [OUT]

Measures this project's accelerator figures on one NVIDIA GPU and writes everything into OUT
(default runs/gpu-check; or $OUT):
  1. installs what the Python lacks (tchaikovsky.env.REQUIRED, papermill, ipykernel): from the wheels in DIR
     (pip --no-index --find-links DIR; or $WHEELS) when given, else from PyPI; the installed jax, jaxlib, their
     CUDA plugins and numpy are held at their versions (a constraints file), never upgraded;
     then checks the settings of both modes below (option names, presets, notebook parameters);
  2. device.json: what jax.devices() reports; stops unless JAX sees an accelerator (ALLOW_CPU=1 overrides);
  3. training.{log,json}: python -m benchmarks training --preset base-100m (MFU);
  4. sampling.{log,json}: python -m benchmarks sampling --preset base-100m (batch-1 bandwidth fraction,
     batch-64 tokens/s, speedup over recomputation, flatness);
  5. run/ and notebooks.log: notebooks 02, 03, 04 with the small preset on 400 embedded Bach chorales
     (transposed +-2, vocabulary 1024; at most 2000 steps or 3 minutes of training), then 04 samples and
     evaluates (run/evaluation.json: held-out loss, bits per note); executed notebooks in run/notebooks/;
  6. summary.{md,json}: the table of the figures, printed last.
Also gpu_check.log (everything printed), stages.jsonl (seconds and exit status per stage) and cache/ (the
exported corpus; $TCHAIKOVSKY_CACHE overrides). A rerun replaces OUT's results and keeps OUT/cache.
Expected time on one H100: about 7 minutes (an estimate; the training stage of step 5 stops at 3 minutes).

--dry-run (or DRY_RUN=1): the same stages with tiny settings on the CPU (JAX_PLATFORMS=cpu unless set):
the tiny preset, a few steps and tokens, 12 chorales. One to two minutes; run it first, so a typo cannot cost
GPU time.
Environment: PYTHON (default python3), PIP_ARGS (extra pip flags, e.g. --user or --break-system-packages).
Exit status: 0 when every stage succeeded, 1 otherwise.
EOF
}

OUT="${OUT:-runs/gpu-check}"
WHEELS="${WHEELS:-}"
DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --wheels=*) WHEELS="${1#*=}" ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift ;;
    --python=*) PYTHON="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS" ] || { echo "--wheels $WHEELS: no such folder" >&2; exit 2; }
  WHEELS="$(cd "$WHEELS" && pwd)"
fi
cd "$ROOT" || exit 2
rm -rf "$OUT/run"
rm -f "$OUT"/*.log "$OUT"/*.json "$OUT"/stages.jsonl "$OUT"/summary.md "$OUT"/requirements-missing.txt \
  "$OUT"/constraints.txt
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export TCHAIKOVSKY_CACHE="${TCHAIKOVSKY_CACHE:-$OUT/cache}"

# The settings of both modes (the plan stage checks both, whichever runs).
FULL_TRAIN=(--preset base-100m --steps 10)
# the recomputation's cost per token does not depend on the position (the window is always the full context)
FULL_SAMPLE=(--preset base-100m --recompute-tokens 256)
FULL_NB=(--preset small --max-files 400 -p transpose_range=2 -p vocab_size=1024 -p max_steps=2000 -p max_minutes=3
         -p num_tokens=512)
DRY_TRAIN=(--preset tiny --steps 2 --batch-size 8 --seq-len 32)
DRY_SAMPLE=(--preset tiny --tokens 101 --recompute-tokens 16 --repeats 1)
DRY_NB=(--preset tiny --max-files 12 -p vocab_size=600 -p max_steps=10 -p max_minutes=2 -p num_tokens=64)
NOTEBOOKS=(--only 02_train_tokenizer 03_train 04_sample)
if [ "$DRY_RUN" = 1 ]; then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
  NB_PRESET=tiny
  TRAIN_ARGS=("${DRY_TRAIN[@]}")
  SAMPLE_ARGS=("${DRY_SAMPLE[@]}")
  NB_ARGS=("${NOTEBOOKS[@]}" --run-dir "$OUT/run" "${DRY_NB[@]}")
else
  NB_PRESET=small
  TRAIN_ARGS=("${FULL_TRAIN[@]}")
  SAMPLE_ARGS=("${FULL_SAMPLE[@]}")
  NB_ARGS=("${NOTEBOOKS[@]}" --run-dir "$OUT/run" "${FULL_NB[@]}")
fi

FAILED=0
stage() {  # stage NAME CMD...: run CMD, output to the console and OUT/NAME.log; record its seconds and status
  local name=$1; shift
  echo; echo "== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '{"stage": "%s", "seconds": %d, "rc": %d}\n' "$name" $((SECONDS - t0)) "$rc" >> "$OUT/stages.jsonl"
  if [ "$rc" != 0 ]; then echo "== $name FAILED (exit $rc): see $OUT/$name.log"; FAILED=$((FAILED + 1)); fi
  return "$rc"
}

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ): repo $ROOT ($COMMIT), python $PYTHON, out $OUT," \
  "dry run: $DRY_RUN, wheels: ${WHEELS:-none (PyPI)}"

# 1. what is missing, and the versions to hold (tchaikovsky.env imports nothing heavy, so it runs before installing)
install() {
  "$PYTHON" - "$OUT" "$DRY_RUN" <<'PY' || return 1
import importlib.util, shutil, sys
from pathlib import Path
from tchaikovsky import env

out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
reqs = env.missing_packages()
reqs += [r for m, r in {"papermill": "papermill>=2.6", "ipykernel": "ipykernel>=6.29"}.items()
         if importlib.util.find_spec(m) is None]
if not dry and shutil.which("nvidia-smi"):  # no JAX yet on a GPU machine: its CUDA build
    reqs = [r.replace("jax>=", "jax[cuda12]>=") for r in reqs]
(out / "requirements-missing.txt").write_text("".join(r + "\n" for r in reqs))
(out / "constraints.txt").write_text("".join(h + "\n" for h in env._held_versions()))
print("held at their versions:", ", ".join(env._held_versions()) or "nothing installed yet")
print("missing:", ", ".join(reqs) or "nothing")
if not env.fluidsynth_present():
    print("note: no FluidSynth library: the notebooks try apt-get (root and a network needed), else skip audio")
PY
  if [ -s "$OUT/requirements-missing.txt" ]; then
    local src=()
    [ -n "$WHEELS" ] && src=(--no-index --find-links "$WHEELS")
    # shellcheck disable=SC2086  # PIP_ARGS holds several flags
    "$PYTHON" -m pip install ${PIP_ARGS:-} "${src[@]}" -c "$OUT/constraints.txt" \
      -r "$OUT/requirements-missing.txt" || return 1
  fi
  "$PYTHON" -c "from tchaikovsky import env; import sys; m = env.missing_packages(); \
print('still missing:', m) if m else print('all packages present'); sys.exit(bool(m))"
}
stage install install || { echo "cannot continue without the packages above"; exit 1; }

plan() {
  "$PYTHON" -m benchmarks.gpu_check check --training "${FULL_TRAIN[*]}" --sampling "${FULL_SAMPLE[*]}" \
    --notebooks "${NOTEBOOKS[*]} --run-dir run ${FULL_NB[*]}" &&
  "$PYTHON" -m benchmarks.gpu_check check --training "${DRY_TRAIN[*]}" --sampling "${DRY_SAMPLE[*]}" \
    --notebooks "${NOTEBOOKS[*]} --run-dir run ${DRY_NB[*]}" &&
  "$PYTHON" - "$OUT/settings.json" "$DRY_RUN" "$NB_PRESET" "${TRAIN_ARGS[*]}" "${SAMPLE_ARGS[*]}" "${NB_ARGS[*]}" <<'PY'
import json, sys

path, dry, nb_preset, *args = sys.argv[1:]
settings = {"dry_run": dry == "1", "notebook_preset": nb_preset}
settings.update(zip(("training", "sampling", "notebooks"), args))
with open(path, "w") as f:
    json.dump(settings, f)
PY
}
stage plan plan || { echo "fix the settings above first"; exit 1; }

# 2. the machine
device() {
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
  "$PYTHON" - "$OUT/device.json" "$DRY_RUN" <<'PY'
import json, os, platform, sys

import jax

devs = jax.devices()
print("jax.devices():", devs)
info = {"devices": len(devs), "device_kind": devs[0].device_kind, "platform": devs[0].platform,
        "jax": jax.__version__, "host": platform.node(), "dry_run": sys.argv[2] == "1"}
with open(sys.argv[1], "w") as f:
    json.dump(info, f)
print(json.dumps(info))
if info["platform"] == "cpu" and not info["dry_run"] and os.environ.get("ALLOW_CPU") != "1":
    sys.exit("JAX sees no accelerator: install a CUDA build of JAX (pip install 'jax[cuda12]'), or pass --python "
             "the interpreter that has one; --dry-run (or ALLOW_CPU=1) runs on the CPU")
PY
}
stage device device || { echo "no accelerator: stopping"; exit 1; }

# 3.-5. the measurements; each benchmark's last line is its JSON result
stage training "$PYTHON" -m benchmarks training "${TRAIN_ARGS[@]}"
grep '^{"bench"' "$OUT/training.log" | tail -n 1 > "$OUT/training.json"
stage sampling "$PYTHON" -m benchmarks sampling "${SAMPLE_ARGS[@]}"
grep '^{"bench"' "$OUT/sampling.log" | tail -n 1 > "$OUT/sampling.json"
stage notebooks "$PYTHON" -m tchaikovsky.notebook "${NB_ARGS[@]}"

# 6. the table
echo
"$PYTHON" -m benchmarks.gpu_check summary "$OUT" || FAILED=$((FAILED + 1))
echo
echo "everything is in $OUT ($FAILED failed stage(s))"
[ "$FAILED" = 0 ]
