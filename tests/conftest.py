"""Shared test set-up.

Sharding tests need several devices; on CPU we simulate 8 host devices. The flag must be set before JAX
initialises its backend, i.e. before the first ``import jax`` anywhere in the test session.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")  # tests only: notebooks keep the inline backend


import atexit  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402  (after XLA_FLAGS)

# The suite builds the same small models and steps in many modules, and ``free_compiled_programs`` below drops every
# compiled program after each module: JAX's persistent compilation cache lets a later identical program load its
# executable from disk instead of compiling it again. The subprocesses the suite starts (Papermill kernels, the
# benchmark CLI, gpu_check's stages) share it through the environment: a tiny notebook compiles the same programs in
# one test as in the next (measured: 03 from 19 s to 8 s, 04 from 30 s to 15 s). A size bound turns on JAX's file
# lock around every read and write, so that two processes never read an entry half written. The cache lives as long
# as this test process and is removed at exit; set JAX_COMPILATION_CACHE_DIR to keep one across sessions instead.
# (Two SIGSEGVs on 2026-12-02, first blamed on the cache, came from running out of memory mappings: see
# free_compiled_programs.)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="tchaikovsky-jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    _cache_settings = {"jax_compilation_cache_dir": _jax_cache, "jax_persistent_cache_min_compile_time_secs": 0,
                       "jax_persistent_cache_min_entry_size_bytes": 0, "jax_compilation_cache_max_size": 16 << 30}
    for _name, _value in _cache_settings.items():
        jax.config.update(_name, _value)
        os.environ[_name.upper()] = str(_value)

from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def free_compiled_programs():
    """Drop JAX's compiled programs after each test module. Every XLA:CPU executable keeps memory mappings of its
    own code until it is freed; kept for the whole session, the suite's thousands of programs reached Linux's
    65,530 mappings per process (``vm.max_map_count``), after which the next compilation crashed with SIGSEGV
    (observed: 46,000 mappings at 60% of the suite). Programs shared across modules are compiled again."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
def quiet_session():
    """Every test runs quiet: no progress bar or line of the package (``tchaikovsky.progress``). Session-scoped and
    autouse, so pytest sets it up before any other fixture, and the session-scoped fixtures that build data (``bach``,
    ``trained``, ...) are quiet too, whichever test first asks for them. A test that checks a bar or a line asks for
    it around the call, ``with progress.quiet(False): ...``. Subprocesses (Papermill kernels, ``python -m
    benchmarks``) start with their own context and print as a user would see them."""
    from tchaikovsky import progress

    with progress.quiet():
        yield


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """A per-session cache directory for the embedded music21 corpus export."""
    env = os.environ.get("TCHAIKOVSKY_TEST_CACHE")
    if env:
        return Path(env)
    return tmp_path_factory.mktemp("corpus_cache")


@pytest.fixture(scope="session")
def bach(corpus_cache, tmp_path_factory) -> SimpleNamespace:
    """Real data for the model tests: 12 Bach chorales exported from music21, a 600-token BPE tokenizer trained on
    them, and token shards (train/val split by piece). Fields: pieces, tok, tokenizer_path, shards_dir, shards."""
    from tchaikovsky.data import corpus
    from tchaikovsky.data import shards
    from tchaikovsky.data import tokenizer

    pieces = corpus.load_corpus("", max_files=12, cache_dir=corpus_cache).pieces
    assert len(pieces) == 12
    tok = tokenizer.train_tokenizer([p.path for p in pieces], 600)
    root = tmp_path_factory.mktemp("bach")
    tok_path = tokenizer.save_tokenizer(tok, root / "tokenizer.json")
    out = shards.build_shards(tok, pieces, root / "shards")
    return SimpleNamespace(pieces=pieces, tok=tok, tokenizer_path=tok_path, shards_dir=out, shards=shards.Shards(out))


@pytest.fixture(scope="session")
def small_config(bach):
    """The model the tests build and train: the "tiny" preset (2 layers, d_model 64, context 64) with the fixture
    tokenizer's vocabulary. One configuration for all, so the session initialises and compiles it once."""
    from tchaikovsky.config import preset

    return preset("tiny", vocab_size=len(bach.tok)).model


@pytest.fixture(scope="session")
def trained(bach, tmp_path_factory) -> SimpleNamespace:
    """The "tiny" preset trained for 60 steps on the fixture shards (loss well below uniform): model, run, preset."""
    from tchaikovsky.config import preset
    from tchaikovsky.training.loop import train

    p = preset("tiny", vocab_size=len(bach.tok), max_steps=60, eval_every=60, log_every=20, checkpoint_every=60)
    run_dir = tmp_path_factory.mktemp("trained")
    result = train(run_dir, p.model, p.train, bach.shards, seed=0)
    return SimpleNamespace(model=result.state.model, result=result, run_dir=run_dir, preset=p)


@pytest.fixture(scope="session")
def work_names():
    """``work_names(roles, fraction, prefix)``: one work key per entry of ``roles`` that hashes into that held-out
    split under ``held_out_roles(fraction)`` (None: not held out), so small test corpora have every role."""
    from tchaikovsky.data.splits import held_out_role, held_out_roles

    def make(roles, fraction=0.5, prefix="work "):
        names, k = [], 0
        for want in roles:
            while held_out_role(f"{prefix}{k}", held_out_roles(fraction)) != want:
                k += 1
            names.append(f"{prefix}{k}")
            k += 1
        return names

    return make


@pytest.fixture(scope="session")
def conditioned_run(bach, tmp_path_factory, work_names):
    """The fixture chorales as two composers' works, conditioned shards with held-out works (each composer has one
    validation and one test work), the tiny preset trained a few steps: the smallest run preference tuning
    accepts."""
    from dataclasses import replace

    names = ["Johann Sebastian Bach", "Claudio Monteverdi"]
    works = work_names(["judge", "judge", "judge_test", "judge_test"] + [None] * 8)
    pieces = [replace(p, composer=names[i % 2], period=["Baroque", "Renaissance"][i % 2], instrumentation="voices",
                      work=works[i]) for i, p in enumerate(bach.pieces)]
    from tchaikovsky.config import preset
    from tchaikovsky.data import shards as shards_lib
    from tchaikovsky.data import tokenizer as tok_lib
    from tchaikovsky.data.conditions import Conditions
    from tchaikovsky.data.splits import held_out_roles
    from tchaikovsky.training.loop import train

    run = tmp_path_factory.mktemp("pref") / "run"
    cond = Conditions.build(len(bach.tok), pieces)
    tok_lib.save_tokenizer(bach.tok, run / "tokenizer.json")
    cond.save(run)
    sh = shards_lib.Shards(shards_lib.build_shards(bach.tok, pieces, run / "shards", conditions=cond,
                                                   held_out=held_out_roles(0.5)))
    p = preset("tiny", vocab_size=cond.vocab_size, max_steps=10, eval_every=10, checkpoint_every=10)
    train(run, p.model, p.train, sh)
    return run
