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
# # 4. Sample: listen to what the model wrote
# The model continues a prompt (the opening of a MIDI file) or starts from nothing, one token at a time, with a
# key/value cache so each new token costs the same however long the piece gets; past the model's context the
# window slides, so pieces can be any length. One call decodes a grid of seeds x temperatures together: lower
# temperatures play it safe, higher ones take risks. A run fine-tuned with conditions (03's `init_from`) also takes
# a `period`, `composer` and `instrumentation`; a value it does not know fails with the list of those it knows.

# %% tags=["parameters"]
# --- which model
run_dir = ""  # folder of the trained run; "": runs/default
checkpoint = ""  # "": the run's latest weights; "tuned": the preference round 05's validation judge chose; or a file
# --- what to ask for
prompt_midi = ""  # a MIDI file to continue; "": start from nothing
prompt_chords = ""  # e.g. "C G Am F": start from these chords instead
prompt_tokens = 256  # how much of prompt_midi to use, in tokens
period = ""  # conditioned runs: e.g. "Baroque" ("": any)
composer = ""  # conditioned runs: a composer the run knows, e.g. "bach" or "Johann Sebastian Bach" ("": any)
instrumentation = ""  # conditioned runs: e.g. "voices", "strings", "keyboard" ("": any)
guidance = 1.0  # > 1: follow the asked conditions more strongly (classifier-free guidance; 2x compute per token)
# --- regenerate bars of a piece (a run trained with 03's fim_rate)
infill_midi = ""  # a MIDI file whose bars to regenerate; "": off
infill_bars = "5-8"  # which bars, first-last, numbered from 1 as a DAW does
infill_rerank = 1  # keep the best of this many middles by how they lead into the next bar (N x the cost; 1: off)
# --- how the pieces are sampled: one piece per (seed, temperature)
seeds = [0, 1]
temperatures = [0.8, 0.9, 1.0]
num_tokens = 512  # new tokens per piece (any length: the window slides past the context)
min_tokens = 448  # the model may not end a piece before this many new tokens (at most num_tokens; 0: any time)
top_k = 0  # keep the k likeliest tokens (0: off)
top_p = 0.95  # nucleus: keep the likeliest tokens covering this probability (1: off)
min_p = 0.0  # drop tokens less likely than min_p x the top token (0: off)
grammar = True  # forbid tokens REMI cannot follow (no broken note descriptions)
repetition_penalty = 1.0  # > 1 discourages tokens already in the window (1: off)
max_bars = None  # stop each piece after this many new bars (None: only num_tokens and EOS)
max_seconds = None  # cut each piece at this length in seconds (None: no cut)
rerank = 1  # conditioned runs: keep the best of this many per piece by the run's scorer (N x the cost; 1: off)
# --- how they are played
preview_seconds = 30.0  # each player plays this many seconds from the start (the full .wav is linked)
soundfont = ""  # .sf2 file; "": $TCHAIKOVSKY_SOUNDFONT or a system-wide General MIDI soundfont
# --- the evaluation (fresh samples against real held-out pieces) and the judge's check
evaluate = True  # compare fresh samples with real held-out pieces and two baselines (metrics, plots)
evaluate_temperature = 0.9  # the evaluation samples' temperature (chosen on validation seeds: docs/evaluation.md)
seed = 0  # first seed of the evaluation samples and the judge's check (the pieces above use `seeds`)
judge_samples = 2  # conditioned runs with held-out works: pieces per composer for the judge's check (0: off)
# --- the interactive panel (sliders, a Generate button) and its prompt picker
interactive = True  # the sampler panel and a widget grid; False: static HTML
data_dir = ""  # where the panel's prompt picker finds pieces; "": the embedded corpus
max_files = 40  # pieces the picker lists
composers = "bach"  # the picker's embedded-corpus composers
# --- Kaggle/Colab without this repo
repo_url = ""  # a pip-installable URL of tchaikovsky

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
from tchaikovsky.config import SampleConfig
from tchaikovsky.generate.prompts import make_prompt
from tchaikovsky.notebook import params, pipeline
from tchaikovsky.render import display, samples

params.check("04_sample", globals())
run = pipeline.resolve_run_dir(run_dir)
model, tok, meta = pipeline.load_model(run, checkpoint)
prompt = make_prompt(tok, midi=prompt_midi, chords=prompt_chords, tokens=prompt_tokens)
prompt, conditions = pipeline.conditioned_prompt(run, prompt, period=period, composer=composer,
                                                 instrumentation=instrumentation)
config = SampleConfig(num_tokens=num_tokens, min_tokens=min(min_tokens, num_tokens), top_k=top_k, top_p=top_p,
                      min_p=min_p, grammar=grammar, repetition_penalty=repetition_penalty, max_bars=max_bars,
                      max_seconds=max_seconds, guidance=guidance)
print(f"model from step {meta.get('step')} ({meta.get('preset', '?')}); prompt of {len(prompt)} tokens")

# %% [markdown]
# ## Generate
# Every piece is saved to `run_dir/samples/` as `.mid`, `.wav` and a piano-roll `.png` (prompt in blue,
# continuation in orange). A piece stops at `num_tokens`, or earlier where the model ends it (never before
# `min_tokens` new tokens), after `max_bars` new bars, or at `max_seconds`. The players below play the first
# `preview_seconds` of each; the whole piece is one download link away. Under each piece of a conditioned run: what
# was asked and what the run's independent judge hears (the composer and period it finds likeliest, with its
# probability). With `rerank` > 1 each piece is the best of `rerank` drawn for it, as the run's scorer (05's, fitted
# here first if the run has none) ranks them for the request; only the judge can say whether that helped.

# %%
from tchaikovsky.evaluation import caption, reward

asked = {"period": period, "composer": composer, "instrumentation": instrumentation}
scorer = reward.run_scorer(run) if rerank > 1 else None
cells = samples.write_samples(run, model, tok, prompt, config, seeds=seeds, temperatures=temperatures,
                              soundfont=soundfont, conditions=conditions, rerank=rerank, scorer=scorer, asked=asked)
for c in cells:
    display.show_sample(c["midi_path"], wav_path=c["wav_path"], png_path=c["png_path"], prompt_end=c["prompt_end"],
                        title=f"seed {c['seed']}, temperature {c['temperature']:g}",
                        preview_seconds=preview_seconds, soundfont=soundfont or None)
    if text := caption.describe(run, asked, c):
        print(text)

# %% [markdown]
# ## Side by side
# The showcase grid: rows are seeds, columns temperatures.

# %%
display.sample_grid(cells, widgets=interactive, preview_seconds=preview_seconds, soundfont=soundfont or None)

# %% [markdown]
# ## Sheet music
# The first piece as MusicXML for MuseScore or other notation software. Timings are quantised to sixteenths and
# triplets for readability; the `.mid` stays the exact record.

# %%
xml = samples.to_musicxml(cells[0]["midi_path"])
display.download_links(xml)

# %% [markdown]
# ## Regenerate bars
# With `infill_midi`, a run trained with fill-in-the-middle (03's `fim_rate`) rewrites bars `infill_bars` of that
# piece knowing the music on both sides, once per seed x temperature, with the conditions and controls above.
# Everything outside those bars stays note for note; the new bars end where the old ones did. Each piece is saved
# to `run_dir/samples/` (`.mid`, `.wav`, and a `.png` of before and after with the bars shaded); the players play
# `preview_seconds` around the bars, before and after. With `infill_rerank` > 1 each is the best of that many middles
# by how likely the model finds the bar after them once they are in place (the suffix read left to right).

# %%
if infill_midi:
    from tchaikovsky.data.fim import order_of
    from tchaikovsky.render import infill_view

    infill_cells = infill_view.regenerate(run, model, tok, infill_midi, infill_bars, config, seeds=seeds,
                                          temperatures=temperatures, conditions=conditions, soundfont=soundfont,
                                          order=order_of(meta), rerank=infill_rerank, **asked)
    infill_view.show_infilled(infill_midi, infill_cells, preview_seconds=preview_seconds,
                              soundfont=soundfont or None)

# %% [markdown]
# ## How close to real music?
# Objective measures (pitch-class entropy, scale consistency, polyphony, groove, ...) of fresh samples, compared
# with held-out real pieces and two baselines (uniformly random tokens; a bigram model of the training tokens),
# sampled at `evaluate_temperature` with top-p 0.95 and no `min_tokens`.
# Higher mean overlapped area (OA) is closer to real music; "copies" flags samples that repeat the training data.

# %%
if evaluate:
    from IPython.display import Image, Markdown, display as show

    from tchaikovsky.evaluation import report as evaluation

    ev = evaluation.evaluate_run(run, n_samples=max(2, len(cells)), num_tokens=num_tokens, seed=seed,
                                 temperature=evaluate_temperature)
    show(Markdown(evaluation.summary_table(ev)))
    for png in ev["plots"]:
        show(Image(filename=png))

# %% [markdown]
# ## Does it obey?
# For a run fine-tuned with conditions whose data held works out (`judge_fraction` in 02/03): an independent judge,
# trained on real pieces of the test works the model never saw and looking only at the notes, says which composer
# it hears in `judge_samples` pieces asked for each composer (test seeds), and in as many asked for none: the
# measured chance. Every rate shows its 95% interval and n; a piece that fails to decode counts as a miss. Its
# cross-validated accuracy on real held-out works is the ceiling.

# %%
if evaluate and judge_samples:
    from tchaikovsky.notebook import show as show_report

    show_report.show_controllability(run, n_per_value=judge_samples, num_tokens=num_tokens,
                                     min_tokens=config.min_tokens, seed=seed, guidance=guidance)

# %% [markdown]
# ## Try it yourself
# The sampler panel (Jupyter, Kaggle or Colab; `interactive=False` leaves it out): pick a prompt (nothing, a chord
# progression such as `Dm7 G7 Cmaj7`, the opening bars of a corpus piece, or a MIDI file you upload), set
# temperature, top-p, length and the least length before the piece may end (and, for a conditioned run, the
# conditions and their guidance), and press **Generate**. Each piece appears below the panel with its piano roll and
# player, and is saved to `run_dir/samples/`. A run trained with fill-in-the-middle also has a **regenerate bars**
# mode: the bars you type ("5-8") of the picked or uploaded piece, or of the last piece generated, are written anew.
# A headless run (Papermill) saves the panel as a static picture of its controls.

# %%
if interactive:
    from IPython.display import display as show

    from tchaikovsky import progress
    from tchaikovsky.data.fim import order_of
    from tchaikovsky.render import widgets

    with progress.quiet():  # the pieces to pick a prompt from: loaded without a bar
        picker = pipeline.load_data(data_dir, max_files=max_files, composers=composers)
    show(widgets.sampler_panel(model, tok, run, pieces=[p.path for p in picker.pieces], soundfont=soundfont or None,
                               config=config, preview_seconds=preview_seconds, conditions=conditions,
                               period=period, composer=composer, instrumentation=instrumentation,
                               fim_order=order_of(meta)))

# %% [markdown]
# ## Next
# Try a `prompt_midi` of your own, longer `num_tokens`, or other temperatures; regenerate the bars of a piece
# you like with `infill_midi`; rerun `03_train` with `resume=True` to train further and come back.
