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
# # 2. Train the tokenizer
# Music becomes a sequence of tokens with miditok's REMI scheme (bars, positions, pitches, velocities, durations,
# tempi and instruments, all parts in one stream), then byte-pair encoding (BPE) merges frequent successions into
# single tokens so the model sees more music per context window. Everything is saved in `run_dir`: the tokenizer
# (`tokenizer.json`, loadable by plain miditok) and the pieces as token ids, split into train and validation by
# piece. With `conditions=True` each piece starts with what is known of it, `[period, composer, instrumentation,
# BOS, ...]` (an "unknown" token where a label is not known), so a model can be asked for a composer; the condition
# vocabulary is `conditions.json`, beside the tokenizer.

# %% tags=["parameters"]
data_dir = ""  # folder of MIDI files; "": the embedded music21 corpus
run_dir = ""  # folder for everything this run writes; "": runs/default
seed = 0  # decides the train/validation split
max_files = None  # keep at most this many pieces (None: every file of data_dir; 40 of the embedded corpus)
composers = "bach"  # embedded corpus only: music21 composers, comma-separated
vocab_size = 2048  # BPE vocabulary (the base REMI vocabulary is ~550)
val_fraction = 0.1  # share of pieces held out for validation
transpose_range = 0  # augmentation: N adds training copies transposed by 1..N semitones up and down (0: off)
conditions = False  # start every piece with its period, composer and instrumentation tokens (see 03's init_from)
judge_fraction = 0.0  # share of works held out (by a hash of each work: the same works in every run), never trained
# on: half validates choices, half tests what 04 and 05 report (0: none)
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
from tchaikovsky.data import tokenizer
from tchaikovsky.notebook import params, pipeline
from tchaikovsky.render import display

params.check("02_train_tokenizer", globals())
run = pipeline.resolve_run_dir(run_dir)
spec = pipeline.DataSpec.of(globals())  # how this run's data is made: kept in the shards' index
corpus = pipeline.load_data(data_dir, max_files=max_files, composers=composers, run_dir=run)
summary = pipeline.prepare_data(run, corpus, spec)
summary

# %% [markdown]
# ## Round trip
# Encode a piece and decode it back: the notes should survive (up to the tokenizer's time grid). BPE shortens the
# sequence: fewer tokens per note means more music fits in the model's context.

# %%
tok = tokenizer.load_tokenizer(run / "tokenizer.json")
piece = corpus.pieces[0].path
tokenizer.round_trip(tok, piece)

# %%
decoded = tokenizer.save_midi(tok, tokenizer.encode_file(tok, piece), run / "round_trip.mid")
display.piano_roll(piece, title=f"original: {piece.name}")

# %%
display.piano_roll(decoded, title="after encode -> decode")

# %%
tokenizer.token_strings(tok, piece, 32)

# %% [markdown]
# ## Sequence lengths
# How long the pieces are in tokens. Pieces longer than a preset's context (256 for `demo`, 1024 for `base-100m`)
# are learned through windows at random offsets.

# %%
from tchaikovsky.data import shards as shards_lib  # noqa: E402

display.sequence_lengths(shards_lib.Shards(run / "shards"), context=256)

# %% [markdown]
# ## Next
# `03_train` trains the model on `run_dir/shards`.
