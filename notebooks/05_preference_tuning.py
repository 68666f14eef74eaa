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
# # 5. Preference tuning: better music without human labels
# The third stage of the NotaGen recipe (CLaMP-DPO), with a music scorer trained here on your own corpus. For a run
# fine-tuned with conditions (03 with `init_from`), each round samples many pieces per prompt (every condition
# triple with enough real pieces), scores each by how close it sounds to the real pieces of that prompt, pairs the
# best with the worst, and trains the model to prefer the better ones (DPO-Positive, against the previous round's
# model). An independent judge that the optimisation never sees (trained on works held out in 02/03's
# `judge_fraction`) says whether the music really moved towards what was asked: a judge on the validation works
# chooses the best round, another on the test works (other seeds) gives the figures reported, each with its 95%
# interval. Rerunning continues where it
# stopped: finished rounds are kept, an interrupted one resumes.

# %% tags=["parameters"]
run_dir = ""  # a run fine-tuned with conditions and held-out works (judge_fraction); "": runs/default
seed = 0  # sampling and pair order
rounds = 3  # preference rounds (each: sample, score, select, train)
samples_per_prompt = 100  # pieces sampled per prompt and round (NotaGen: ~100)
top_fraction = 0.1  # chosen: the best this share of each prompt's pieces; rejected: the worst
beta = 0.1  # DPO temperature
dpop_lambda = 10.0  # DPO-Positive penalty on a chosen piece getting less likely (0: plain DPO)
learning_rate = 1e-5  # AdamW, constant after a short warmup
steps_per_round = 100  # optimizer steps per round
batch_size = 8  # pairs per step
num_tokens = 0  # tokens per sampled piece (0: the model's context after the prompt)
temperature = 1.2  # of the round's sampling (with top-k 9, top-p 0.9)
guidance = 1.0  # classifier-free guidance of every sampled piece (> 1 follows the conditions more strongly; 1: off)
min_pieces = 10  # prompts: condition triples with more than this many real training pieces
eval_samples = 8  # pieces per prompt that judge each round's model (same seeds every round)
scorer_steps = 600  # training steps of the music scorer (trained once per run)
max_minutes = None  # stop cleanly after this long; rerun to continue
preview_seconds = 30.0  # each player plays this many seconds
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

env.ensure(audio=True)

# %%
from IPython.display import Markdown, display as show

from tchaikovsky.notebook import params, pipeline
from tchaikovsky.preference import report, tune as pref

params.check("05_preference_tuning", globals())
run = pipeline.resolve_run_dir(run_dir)
config = pref.PreferenceConfig(rounds=rounds, samples_per_prompt=samples_per_prompt, top_fraction=top_fraction,
                               beta=beta, dpop_lambda=dpop_lambda, learning_rate=learning_rate,
                               steps_per_round=steps_per_round, batch_size=batch_size, num_tokens=num_tokens,
                               temperature=temperature, guidance=guidance, min_pieces=min_pieces,
                               eval_samples=eval_samples, scorer_steps=scorer_steps, seed=seed)
config

# %% [markdown]
# ## The rounds
# Round 0 is the fine-tuned model as it is. The scorer is trained first (once per run) on the run's real training
# pieces: a small network over a beat-quantised piano roll of the decoded notes, never the model's tokens. Each
# round's samples, scores, chosen/rejected pairs and training history are kept in `run_dir/preference/`.

# %%
result = pref.tune(run, config, max_minutes=max_minutes)
print(f"stopped: {result['stopped']}; scorer vs judge on round 1's pieces (Spearman): {result['guard']}; per prompt: "
      + ", ".join(f"{k.rsplit('__', 1)[0]} {v:.2f}" for k, v in result["guard_by_prompt"].items()))
show(Markdown(report.summary_table(result)))

# %% [markdown]
# ## How the scorer separates real music
# Nearest-centroid accuracy on the validation works' real pieces (works the scorer never saw), and the mean cosine
# between pieces of the same label against pieces of different labels.

# %%
result["scorer"]

# %% [markdown]
# ## Round by round
# The reward (scorer, per prompt) is what the optimisation pushes; the judge and OA are what it never sees. When the
# scorer rises while the validation judge falls significantly, the model is learning the scorer's blind spots, not
# music (a warning says so). The round to keep is the one the validation judge prefers; the test figures report it.

# %%
from tchaikovsky.evaluation.plots import plot_rounds  # noqa: E402

plot_rounds(result["table"], run / "preference" / "rounds.png")

# %% [markdown]
# ## Before and after
# The same prompt and seed, from the fine-tuned model (round 0) and from the last round's model.

# %%
pairs = report.show_before_after(run, result, n=2, preview_seconds=preview_seconds)

# %% [markdown]
# ## Next
# `04_sample` with `checkpoint = "tuned"` (and this `run_dir`) samples the tuned model, the last finished round's,
# with any prompt; rerun this notebook with more `rounds` to continue.
