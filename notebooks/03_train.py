# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Train the model
# A GPT-style decoder (parallel attention + MLP blocks, learned positions) learns to predict the next token of
# the pieces prepared by `02_train_tokenizer` (if that has not run for this `run_dir`, it runs here first). It
# trains on every device JAX sees (8 TPU cores on Kaggle, a GPU, or the CPU), saves checkpoints often, and
# continues exactly where it stopped when rerun with `resume=True`, so a Kaggle session that ends loses nothing.
# With `init_from` it fine-tunes another run's model instead of starting from scratch (see the end).

# %% tags=["parameters"]
data_dir = ""  # used only if this run has no shards yet; "": the embedded music21 corpus
run_dir = ""  # folder for everything this run writes; "": runs/default
seed = 0  # initialisation and batch order
max_files = None  # (only when building shards here) at most this many pieces (None: all of data_dir; 40 embedded)
composers = "bach"  # (only when building shards here) embedded corpus composers
vocab_size = 2048  # (only when building shards here) BPE vocabulary
preset = "demo"  # tiny (seconds, tests) | demo (a few CPU minutes) | small | base-100m (d768, 12 layers, context 1024)
max_steps = None  # optimizer steps (None: preset default)
max_minutes = None  # stop cleanly with a checkpoint after this long (e.g. 500 on a 9-hour Kaggle session)
batch_size = None  # sequences per step, all devices together (None: preset default)
learning_rate = None  # peak learning rate (None: preset default)
resume = True  # continue from the latest checkpoint in run_dir if there is one
wandb_mode = "disabled"  # disabled | offline | online (reads WANDB_API_KEY from the environment or Kaggle secrets)
sample_every = 0  # render and play a short sample every N steps (0: off)
init_from = ""  # fine-tune: another run (or checkpoint) to start from; this run's data gets its tokenizer + conditions
conditions = False  # (only when building shards here) condition tokens in front of pieces (always on with init_from)
condition_dropout = None  # share of condition tokens replaced by "unknown" in training (None: 0)
unconditional_rate = None  # share of windows with every condition "unknown", for 04's guidance (None: 0; e.g. 0.1)
fim_rate = 0.0  # share of training windows reordered as prefix/suffix/middle so the model can regenerate chosen bars (04's infill_midi); 0.5 costs left-to-right quality almost nothing (Bavarian et al. 2022)
fim_spm = 0.5  # share of those windows in suffix-prefix-middle order (the rest prefix-suffix-middle): the middle then follows the prefix as it would left to right; measured better than PSM alone (docs/evaluation.md)
judge_fraction = 0.0  # (only when building shards here) works set aside for the judge (see 02)
allow_overlap = False  # init_from: fine-tune even if the parent trained on this run's held-out works (recorded)
repo_url = ""  # Kaggle/Colab without this repo: a pip-installable URL of tchaikovsky

# %% [markdown]
# ## Set-up
# Finds the `tchaikovsky` package (this repository, a Kaggle dataset holding it, or `repo_url`) and installs only
# what is missing, without upgrading the JAX that Kaggle or Colab ships. After `make demo` this does nothing.

# %%
import glob, importlib.util, os, subprocess, sys  # noqa: E401

_kaggle = os.environ.get("TCHAIKOVSKY_KAGGLE_ROOT") or "/kaggle"  # the tests point this at an emulated Kaggle
_found = glob.glob(f"{_kaggle}/input/**/tchaikovsky/__init__.py", recursive=True)  # the tchaikovsky-src dataset
if not _found and importlib.util.find_spec("tchaikovsky") is None:
    _found = glob.glob("../tchaikovsky/__init__.py")  # run from this repository's notebooks/ folder
if _found:  # on Kaggle the attached dataset wins over anything installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(_found[0]))))
elif importlib.util.find_spec("tchaikovsky") is None:
    if not repo_url:
        raise ImportError("tchaikovsky not found: attach the tchaikovsky-src dataset or set repo_url (see README)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", repo_url], check=True)
from tchaikovsky import env  # noqa: E402

env.ensure(audio=True, wandb=wandb_mode != "disabled")  # wandb only when logging to it

# %%
import jax  # noqa: E402

from tchaikovsky.notebook import params, pipeline
from tchaikovsky.render import display

params.check("03_train", globals())
run = pipeline.resolve_run_dir(run_dir)
shards = pipeline.ensure_data(run, pipeline.DataSpec.of(globals(), tokenizer_from=init_from))
p = pipeline.run_preset(run, shards, preset, init_from=init_from, max_steps=max_steps, batch_size=batch_size,
                        learning_rate=learning_rate, condition_dropout=condition_dropout, fim_rate=fim_rate,
                        unconditional_rate=unconditional_rate, fim_spm=fim_spm)
print(f"{jax.device_count()} x {jax.devices()[0].device_kind}; {p.model.n_params / 1e6:.1f}M parameters; "
      f"{shards.n_tokens('train'):,} training tokens")
p

# %% [markdown]
# ## Train
# The bar shows the loss and tokens per second; `history.jsonl` gets one line per logged step and the held-out
# loss (also as bits per note, which stays comparable across tokenizers) every `eval_every` steps.

# %%
result = pipeline.train_run(run, shards, preset=preset, seed=seed, max_steps=max_steps, max_minutes=max_minutes,
                            batch_size=batch_size, learning_rate=learning_rate, resume=resume,
                            wandb_mode=wandb_mode, sample_every=sample_every, init_from=init_from,
                            condition_dropout=condition_dropout, fim_rate=fim_rate, allow_overlap=allow_overlap,
                            unconditional_rate=unconditional_rate, fim_spm=fim_spm)
print(f"stopped: {result.stopped} at step {int(result.state.step)}; checkpoint: {result.checkpoint}")

# %%
display.loss_curve(run / "history.jsonl")

# %% [markdown]
# ## Next
# `04_sample` writes, renders and plays new pieces from `run_dir/checkpoints/model.eqx`. To train longer, rerun
# this notebook with a larger `max_steps` and `resume=True`: training continues from the latest checkpoint, and the
# learning rate moves from its current value to the longer plan within `warmup_steps` steps, without a jump.
# Another run can start from these weights: run this notebook with a new `run_dir`, `init_from` set to this one
# and a `data_dir` of labelled music. It tokenizes that data with this run's tokenizer, adds the period, composer and
# instrumentation tokens (the embedding and output layer grow by them), and trains with a fresh optimizer at a
# quarter of the learning rate; `04_sample` can then ask for a composer.
