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
# # 1. Explore the data
# Before training anything, look at and listen to the music the model will learn from. With no `data_dir` this
# uses the embedded corpus: scores bundled with `music21` (Bach chorales by default) exported to MIDI once and
# cached. Point `data_dir` at any folder of MIDI files (GiantMIDI-Piano, MAESTRO, Lakh, your own) to use those.
# Every file is checked: broken, empty or duplicate files are skipped and listed in `run_dir/data_report.json`.

# %% tags=["parameters"]
data_dir = ""  # folder of MIDI files, searched recursively; "": the embedded music21 corpus
run_dir = ""  # folder for everything this run writes; "": runs/default
seed = 0  # which pieces we listen to
max_files = None  # keep at most this many pieces (None: every file of data_dir; 40 of the embedded corpus)
composers = "bach"  # embedded corpus only: music21 composers, comma-separated ("bach,mozart,palestrina")
n_listen = 3  # pieces to play below
preview_seconds = 30.0  # each player plays this many seconds from the start (the MIDI file is linked)
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
from tchaikovsky.data.stats import corpus_stats
from tchaikovsky.notebook import params, pipeline
from tchaikovsky.render import display, samples

params.check("01_explore_data", globals())
run = pipeline.resolve_run_dir(run_dir)
corpus = pipeline.load_data(data_dir, max_files=max_files, composers=composers, run_dir=run)
display.report_table(corpus.summary(), corpus.report)

# %% [markdown]
# ## What is in it
# Pitches, loudness, note lengths and tempi across the corpus. A piano corpus spans A0-C8; chorales sit in the
# range of four voices.

# %%
stats = corpus_stats(corpus)
display.corpus_overview(stats)

# %%
display.counts_chart(stats["time_signatures"], title="time signatures")

# %% [markdown]
# ## Labels
# Composer, period and instrumentation of every piece, as far as they can be known: music21's folders, MAESTRO's
# table, GiantMIDI-Piano file names, track names and programs, or a `labels.csv` of your own at the folder's root
# (`path,composer,period,instrumentation`; it wins over guesses). The counts are in `data_report.json` too.

# %%
labels = corpus.summary()["labels"]
display.counts_chart(labels["composer"], title="pieces per composer")

# %%
display.counts_chart(labels["period"], title="pieces per period")

# %%
display.counts_chart(labels["instrumentation"], title="pieces per instrumentation")

# %% [markdown]
# ## Listen
# A few pieces chosen at random (by `seed`), each with its piano roll, a player of its first `preview_seconds`
# (a long performance would make the notebook too heavy to open) and a link to the whole MIDI file.

# %%
samples.listen_to(corpus, n=n_listen, seed=seed, preview_seconds=preview_seconds);

# %% [markdown]
# ## Next
# `02_train_tokenizer` turns these pieces into tokens. The per-file report is in `run_dir/data_report.json`.
