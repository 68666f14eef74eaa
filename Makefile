# Two commands do everything: `make demo` (hear what a model learned) and `make test` (the suite CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo
PRESET ?= demo
DEMO_FILES ?= 400
DEMO_PARAMS ?= -p transpose_range=2 -p vocab_size=1024 -p fim_rate=0.5 -p fim_spm=0.5
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-main test-main-runs test-main-units test-fast test-floor test-platforms setup system-deps corpus sync kaggle colab bench gpu-check reference reference-conditioning reference-conditioning-finetune reference-conditioning-pretrained reference-conditioning-steps reference-conditioning-lr reference-conditioning-full reference-infilling reference-infilling-rate reference-infilling-steps reference-infilling-full reference-infilling-psm reference-preference clean

# Debian and Ubuntu ship venv's pip installer (ensurepip) apart, in python3-venv: say so instead of venv's own error.
NEED_VENV = @$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "$(PYTHON) cannot make a virtual \
environment (no ensurepip): install python3-venv first, e.g. sudo apt-get install -y python3-venv" >&2; exit 1; }

$(VENV)/.installed: requirements.txt pyproject.toml
	$(NEED_VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed system-deps

# FluidSynth + a General MIDI soundfont for audio; everything else works without them.
system-deps:
	@if $(PY) -c "import ctypes.util,sys; sys.exit(ctypes.util.find_library('fluidsynth') is None)" 2>/dev/null \
	   && ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1; then echo "fluidsynth + soundfont: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfluidsynth3 timgm6mb-soundfont >/dev/null \
	  && echo "fluidsynth + soundfont: installed"; \
	else echo "NOTE: no audio until you run: sudo apt-get install -y libfluidsynth3 fluid-soundfont-gm"; fi

corpus: setup
	$(PY) -c "from tchaikovsky.data.embedded import embedded_corpus; print(embedded_corpus(max_files=$(DEMO_FILES)))"

# The four notebooks, executed with Papermill into $(RUN) (executed copies next to the artifacts).
demo: setup
	$(PY) -m tchaikovsky.notebook --run-dir $(RUN) --preset $(PRESET) --max-files $(DEMO_FILES) $(DEMO_PARAMS)
	@echo; echo "Listen: $(RUN)/samples/*.wav  (executed notebooks: $(RUN)/notebooks/*.ipynb)"

# The whole suite (test-main), the core suite again on the versions Colab and Kaggle's TPU image run
# (test-platforms) and on the oldest versions requirements.txt admits (test-floor), side by side, each printing its
# report when it ends. The whole suite runs as two processes (its notebook and benchmark runs beside the rest), so
# that a 2-core machine stays busy to the end instead of finishing on one long process; the emulated Kaggle session
# runs once, in test-platforms, on Kaggle's versions.
MAIN_RUNS := tests/notebook tests/benchmarks
test: setup system-deps
	@echo "make test: the whole suite (two processes), test-platforms and test-floor side by side; each prints its report when it ends"
	$(MAKE) --no-print-directory --output-sync=target -j4 test-main-runs test-main-units test-platforms test-floor

test-main: setup
	$(PY) -m pytest -q

test-main-runs: setup
	$(PY) -m pytest -q -m "not kaggle_session" $(MAIN_RUNS)

test-main-units: setup
	$(PY) -m pytest -q $(addprefix --ignore=,$(MAIN_RUNS))

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# $(call suite,VENV,CONSTRAINTS,PYTEST ARGUMENTS): a venv of requirements.txt held to CONSTRAINTS, then pytest in it.
define suite
	$(NEED_VENV)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q -r requirements.txt -c $(2)
	$(1)/bin/python -m pip install -q --no-deps -e .
	$(1)/bin/python -m pytest -q $(3)
endef
CORE_TESTS := tests/model tests/training tests/generate tests/data/test_tokenizer.py tests/data/test_shards.py

# The core suite on the oldest jax/equinox/optax/miditok that requirements.txt admits (what Kaggle may ship).
test-floor: system-deps
	$(call suite,.venv-floor,constraints-floor.txt,-m "not slow" $(CORE_TESTS))

# The core suite, and kernels 02-04 in an emulated Kaggle session, on what Colab and Kaggle's TPU image run
# (constraints-platforms.txt: jax 0.7.2, numpy 2.1.3, ipywidgets 7.7.1, ...), on this machine's Python.
test-platforms: system-deps
	$(call suite,.venv-platforms,constraints-platforms.txt,-m "not slow or kaggle_session" $(CORE_TESTS) \
	    tests/render tests/test_env.py tests/notebook/test_kaggle_session.py)

# Keep every .ipynb in step with its .py source (edit the .py files only); the set-up cell from its one source.
sync: setup
	$(PY) -m tchaikovsky.notebook.setup_cell --write
	$(VENV)/bin/jupytext --sync notebooks/*.py

# One folder per notebook for `kaggle kernels push -p kaggle/<name>`, plus the package as a Kaggle dataset.
kaggle: setup
	$(PY) -m tchaikovsky.notebook.kaggle --out kaggle $(if $(KAGGLE_USER),--user $(KAGGLE_USER)) \
	    $(if $(KAGGLE_DATA),--data $(KAGGLE_DATA))

# "Open in Colab" links and the repo_url to set in them, for this repo's GitHub URL (git remote, or REPO_URL=...).
colab: setup
	@$(PY) -m tchaikovsky.notebook.kaggle --colab $(REPO_URL)

bench: setup
	$(PY) -m benchmarks training --preset $(PRESET)
	$(PY) -m benchmarks sampling --preset $(PRESET)
	$(PY) -m benchmarks data

# The accelerator figures in one run on an NVIDIA GPU (docs/evaluation.md "GPU figures"); everything lands in $(GPU_OUT).
# WHEELS=dir installs what is missing from a folder of wheels (no package index); DRY_RUN=1: tiny, on the CPU.
GPU_OUT ?= runs/gpu-check
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	bash scripts/gpu_check.sh --python $(GPU_PYTHON) $(if $(WHEELS),--wheels $(WHEELS)) \
	    $(if $(filter 1,$(DRY_RUN)),--dry-run) $(GPU_OUT)

REF_RUN ?= runs/reference
REF_FILES ?= 400
REF_PRESET ?= demo
REF_PLATFORM ?= cpu
REF_PARAMS ?= -p transpose_range=2 -p vocab_size=1024 -p max_steps=2000

# docs/evaluation.md "Reference results": demo preset on the embedded Bach chorales, on CPU, then the evaluation table.
# The GPU row: make reference REF_PRESET=small REF_PLATFORM=cuda REF_RUN=runs/reference-small (see the README).
reference: setup
	JAX_PLATFORMS=$(REF_PLATFORM) $(PY) -m tchaikovsky.notebook --only 02_train_tokenizer 03_train \
	    --run-dir $(REF_RUN) --preset $(REF_PRESET) --max-files $(REF_FILES) $(REF_PARAMS)
	JAX_PLATFORMS=$(REF_PLATFORM) $(PY) -m tchaikovsky.evaluation --run-dir $(REF_RUN)

# The conditioning recipe that meets issue #21's composer and period targets, on the embedded corpus (docs/evaluation.md):
# condition tokens from the pretraining on, dropout 0.2 per token and 10% of windows asked for nothing
# (unconditional_rate: the path guidance subtracts); guidance chosen on validation; the judge's check on test, lever
# by lever; the outside check. Then its test figures against reference-conditioning-pretrained's, value by value.
reference-conditioning: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning --pretrain-conditions \
	    --unconditional-rate 0.1 --temperatures 1.0 --guidance 1.0 1.5 2.0 3.0 --rerank 1
	@if [ -f runs/conditioning-pretrained/finetune/levers.json ]; then PYTHONPATH=. $(PY) scripts/conditioning_eval.py \
	    --run runs/conditioning/finetune --markdown --against runs/conditioning-pretrained/finetune | \
	    sed -n '/ against /,$$p'; fi

# Lever 5, the fine-tune's steps: reference-conditioning's recipe with 1,200 fine-tune steps instead of 600 (~70 min
# on the CPU), guidance 1 or 2 chosen on validation; then its test figures against reference-conditioning's.
reference-conditioning-steps: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-steps --pretrain-conditions \
	    --unconditional-rate 0.1 --temperatures 1.0 --guidance 1.0 2.0 --rerank 1 --finetune-steps 1200
	@if [ -f runs/conditioning/finetune/levers.json ]; then PYTHONPATH=. $(PY) scripts/conditioning_eval.py \
	    --run runs/conditioning-steps/finetune --markdown --against runs/conditioning/finetune | \
	    sed -n '/ against /,$$p'; fi

# Lever 5, the condition rows' learning rate: reference-conditioning's recipe with the condition tokens' embedding and
# output rows fine-tuned at 4x the fine-tune's rate (the pretraining's: the fine-tune runs at a quarter of it).
reference-conditioning-lr: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-lr --pretrain-conditions \
	    --unconditional-rate 0.1 --temperatures 1.0 --guidance 1.0 2.0 --rerank 1 --condition-lr 4
	@if [ -f runs/conditioning/finetune/levers.json ]; then PYTHONPATH=. $(PY) scripts/conditioning_eval.py \
	    --run runs/conditioning-lr/finetune --markdown --against runs/conditioning/finetune | \
	    sed -n '/ against /,$$p'; fi

# Lever 3, more labelled music: the same recipe on the embedded corpus's full holdings (--corpus full, 1,537 pieces;
# the first export takes ~20 min, ~60 min in all); its test works and judge differ from reference-conditioning's,
# so the comparison it prints is unpaired.
reference-conditioning-full: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-full --corpus full \
	    --pretrain-conditions --unconditional-rate 0.1 --temperatures 1.0 --guidance 1.0 2.0 --rerank 1
	@if [ -f runs/conditioning/finetune/levers.json ]; then PYTHONPATH=. $(PY) scripts/conditioning_eval.py \
	    --run runs/conditioning-full/finetune --markdown --against runs/conditioning/finetune | \
	    sed -n '/ against /,$$p'; fi

# The first recipe, the baseline of the lever table: conditions added only at the fine-tune; temperature, guidance
# and best-of-N chosen on validation.
reference-conditioning-finetune: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-finetune

# The lever that moved recognition: the baseline with the condition tokens (and their dropout) in the pretraining
# too, at the baseline's validation-chosen temperature; then its test figures against the baseline's.
reference-conditioning-pretrained: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-pretrained --pretrain-conditions \
	    --temperatures 1.0 --guidance 1.0 --rerank 1
	@if [ -f runs/conditioning-finetune/finetune/levers.json ]; then PYTHONPATH=. $(PY) scripts/conditioning_eval.py \
	    --run runs/conditioning-pretrained/finetune --markdown --against runs/conditioning-finetune/finetune | \
	    sed -n '/ against /,$$p'; fi

# Fill-in-the-middle (docs/evaluation.md "Infilling"): the pretrained-conditions recipe with fim_rate 0.5 in the
# pretraining and the fine-tune, half of those windows in SPM order (as make demo trains), against the same recipe
# without FIM (same data, steps, seed): its cost in left-to-right loss and its infilling measures; and against the
# PSM-only run of reference-infilling-psm, when there is one.
reference-infilling: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-pretrained --pretrain-conditions \
	    --until finetune
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-fim --pretrain-conditions \
	    --fim-rate 0.5 --fim-spm 0.5 --pretrain-fim --until finetune
	PYTHONPATH=. $(PY) scripts/infill_reference.py --fim runs/conditioning-fim/finetune \
	    --plain runs/conditioning-pretrained/finetune \
	    $$([ -d runs/conditioning-fim-psm/finetune ] && echo --against runs/conditioning-fim-psm/finetune)

# The FIM rate as a lever: reference-infilling's recipe with fim_rate 0.9 (Bavarian et al.'s upper end), compared
# with reference-infilling's fim_rate 0.5 run when there is one.
reference-infilling-rate: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-pretrained --pretrain-conditions \
	    --until finetune
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-fim9 --pretrain-conditions \
	    --fim-rate 0.9 --fim-spm 0.5 --pretrain-fim --until finetune
	PYTHONPATH=. $(PY) scripts/infill_reference.py --fim runs/conditioning-fim9/finetune \
	    --plain runs/conditioning-pretrained/finetune \
	    $$([ -d runs/conditioning-fim/finetune ] && echo --against runs/conditioning-fim/finetune)

# More pretraining as a lever: reference-infilling's recipe with 2,400 pretraining steps instead of 800, with and
# without FIM (the left-to-right cost at equal steps), compared with reference-infilling's run when there is one.
reference-infilling-steps: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-pretrained-2400 \
	    --pretrain-conditions --pretrain-steps 2400 --until finetune
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-fim-2400 --pretrain-conditions \
	    --pretrain-steps 2400 --fim-rate 0.5 --fim-spm 0.5 --pretrain-fim --until finetune
	PYTHONPATH=. $(PY) scripts/infill_reference.py --fim runs/conditioning-fim-2400/finetune \
	    --plain runs/conditioning-pretrained-2400/finetune \
	    $$([ -d runs/conditioning-fim/finetune ] && echo --against runs/conditioning-fim/finetune)

# More music as a lever: reference-infilling-steps's FIM recipe (2,400 pretraining steps) on the embedded corpus's
# full holdings (--corpus full, 1,537 pieces; the first export takes ~20 min), with and without FIM (the left-to-right
# cost at equal steps; ~45 min of training each on a 2-core CPU). Its test pieces differ from the 288-piece runs', so
# no paired comparison with them is printed.
reference-infilling-full: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-full-2400 --corpus full \
	    --pretrain-conditions --pretrain-steps 2400 --until finetune
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-fim-full-2400 --corpus full \
	    --pretrain-conditions --pretrain-steps 2400 --fim-rate 0.5 --fim-spm 0.5 --pretrain-fim --until finetune
	PYTHONPATH=. $(PY) scripts/infill_reference.py --fim runs/conditioning-fim-full-2400/finetune \
	    --plain runs/conditioning-full-2400/finetune

# The same with PSM windows only (the earlier recipe), for reference-infilling's comparison.
reference-infilling-psm: setup
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-pretrained --pretrain-conditions \
	    --until finetune
	PYTHONPATH=. $(PY) scripts/conditioning_reference.py --out runs/conditioning-fim-psm --pretrain-conditions \
	    --fim-rate 0.5 --pretrain-fim --until finetune
	PYTHONPATH=. $(PY) scripts/infill_reference.py --fim runs/conditioning-fim-psm/finetune \
	    --plain runs/conditioning-pretrained/finetune

# Preference rounds (notebook 05) on reference-conditioning's fine-tuned model: #13's table (measured on the earlier
# fine-tune-only recipe's model).
reference-preference: setup
	$(PY) -m tchaikovsky.notebook --run-dir runs/conditioning/finetune --only 05_preference_tuning \
	    -p samples_per_prompt=100 -p top_fraction=0.1 -p steps_per_round=30 -p learning_rate=1e-5 -p rounds=3 \
	    -p eval_samples=32

clean:
	rm -rf runs kaggle .pytest_cache
