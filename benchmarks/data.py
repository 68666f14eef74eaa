"""``python -m benchmarks data``: tokenization throughput of ``build_shards`` and the cost of ``Shards.batch``.

``build_shards`` (default and explicit worker pool) against a plain single-process miditok loop, on real embedded
chorales and on long pieces made by concatenating them; then ``Shards.batch`` against a compiled train step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import default_vocab, interleaved, load_avg, median, rounded, timed
from benchmarks.training import bench_training


def concat_scores(paths, out: Path) -> dict:
    """Write the pieces at ``paths`` one after another into one MIDI file ``out`` (tracks merged by program, drum
    flag and name; tempos and time signatures kept); return its ``notes`` count and duration in ``seconds``."""
    from symusic import Score

    scores = [Score(str(p)) for p in paths]
    tpq = scores[0].ticks_per_quarter
    merged = Score(tpq)
    tracks = {}  # (program, is_drum, name) -> the merged track
    offset = 0
    for s in scores:
        if s.ticks_per_quarter != tpq:
            s = s.resample(tpq)
        s = s.shift_time(offset)
        for t in s.tracks:
            key = (t.program, t.is_drum, t.name)
            if key not in tracks:
                empty = t.copy()
                empty.notes.clear()
                merged.tracks.append(empty)
                tracks[key] = merged.tracks[-1]
            tracks[key].notes.extend(t.notes)
        merged.tempos.extend(s.tempos)
        merged.time_signatures.extend(s.time_signatures)
        offset = s.end()
    merged.dump_midi(str(out))
    back = Score(str(out))
    return {"notes": back.note_num(), "seconds": float(back.to("second").end())}


def _files_rate(pieces, tok, workers_list, repeats: int, log, label: str) -> dict:
    """build_shards (fresh directory each run) for each workers setting vs a plain miditok loop, interleaved."""
    from tchaikovsky import progress
    from tchaikovsky.data.shards import _auto_workers, build_shards

    paths = [p.path for p in pieces]
    n = len(pieces)
    size = sum(os.path.getsize(p) for p in paths)
    tmp = Path(tempfile.mkdtemp(prefix="tchaikovsky-bench-shards-"))
    runs = [0]

    def baseline():
        for p in paths:
            tok.encode(Path(p))

    def shards(workers):
        def run():
            runs[0] += 1
            with progress.quiet():  # timed: no bar
                return build_shards(tok, pieces, tmp / f"run{runs[0]}", workers=workers)
        return run

    tok.encode(Path(paths[0]))  # warm the tokenizer's lazy state
    fns = {"baseline": baseline, **{f"workers={w}": shards(w) for w in workers_list}}
    t = interleaved(fns, repeats, warmup=0)
    shutil.rmtree(tmp, ignore_errors=True)
    default_workers = _auto_workers([("", str(p)) for p in paths])
    base = n / median(t["baseline"])
    out = {"n_files": n, "mb": rounded(size / 1e6, 3), "baseline_files_per_s": rounded(base),
           "default_workers": default_workers}
    for w in workers_list:
        rate = n / median(t[f"workers={w}"])
        name = "default" if w is None else "pool"
        out[f"{name}_files_per_s"] = rounded(rate)
        out[f"{name}_speedup"] = rounded(rate / base, 3)
        if w is not None:
            out["pool_workers"] = w
    log(f"  {label}: {n} files, {size / 1e6:.2f} MB: plain miditok loop {base:.1f} files/s; build_shards default "
        f"({default_workers} worker{'s' if default_workers > 1 else ''}) {out['default_files_per_s']} files/s "
        f"({out['default_speedup']}x)"
        + (f"; explicit {out['pool_workers']}-worker pool {out['pool_files_per_s']} files/s ({out['pool_speedup']}x)"
           if "pool_workers" in out else ""))
    return out


def _long_pieces(pieces, concat: int, n_long: int, folder: Path, log) -> tuple[list, list[dict]]:
    """``n_long`` pieces written into ``folder``, each ``concat`` consecutive ``pieces`` (wrapping around) played
    one after another; returns them and their ``concat_scores`` stats."""
    from tchaikovsky.data.corpus import Piece

    t0 = time.perf_counter()
    long_pieces, stats = [], []
    for i in range(n_long):
        srcs = [pieces[(i + j) % len(pieces)].path for j in range(concat)]
        rel = f"long_{i:03d}.mid"
        stats.append(concat_scores(srcs, folder / rel))
        long_pieces.append(Piece(path=folder / rel, rel_path=rel, composer="Johann Sebastian Bach"))
    log(f"  long pieces: {n_long} files of {concat} chorales each, "
        f"{sum(s['notes'] for s in stats) / n_long:.0f} notes and "
        f"{sum(s['seconds'] for s in stats) / n_long / 60:.1f} min on average "
        f"(written in {time.perf_counter() - t0:.1f} s)")
    return long_pieces, stats


def bench_data(files: int = 60, *, workers: int = 2, concat: int = 11, long_files: int | None = None,
               preset_name: str = "demo", vocab_size: int | None = None, cache_dir: str | None = None,
               repeats: int = 3, batch_repeats: int = 50, train_steps: int = 3,
               log: Callable[[str], None] = print) -> dict:
    """Tokenization throughput and batch cost on ``files`` embedded chorales; returns the result dict.

    Two sets of pieces: ``chorales`` (the files as exported) and, when ``concat`` > 1, ``long`` (``long_files``
    pieces, default 2 x ``files``, each ``concat`` consecutive chorales end to end, to stand for long piano pieces).
    For each set, run ``repeats`` times interleaved (medians), each into a fresh directory:
    ``baseline_files_per_s`` (``tok.encode(path)`` per file, one process), ``default_files_per_s``
    (``build_shards(workers=None)``, which picks its pool itself: ``default_workers``), ``pool_files_per_s``
    (an explicit ``workers``-process pool), and their speedups over the baseline. ``build_shards`` also writes the
    piece cache, the split arrays and the index, so it does strictly more than the baseline. The top-level
    ``files_per_s``, ``baseline_files_per_s`` and ``speedup`` are those of the long set (``measured_on``).

    ``batch_ms``: median ``Shards.batch`` of the preset's batch_size x seq_len over ``batch_repeats`` steps;
    ``train_step_ms``: that preset's compiled train step (``bench_training``, ``train_steps`` steps);
    ``batch_fraction`` = batch_ms / train_step_ms."""
    import numpy as np

    from tchaikovsky import progress
    from tchaikovsky.config import preset
    from tchaikovsky.data.corpus import load_corpus
    from tchaikovsky.data.shards import Shards, build_shards
    from tchaikovsky.data.tokenizer import train_tokenizer

    warnings.filterwarnings("ignore", message=".*BPE ran out of merges.*")
    vocab = vocab_size or default_vocab(preset_name)
    t0 = time.perf_counter()
    with progress.quiet():  # this benchmark reports through ``log`` only
        corpus = load_corpus("", max_files=files, cache_dir=cache_dir)
    pieces = corpus.pieces
    log(f"data: {len(pieces)} embedded chorales ready in {time.perf_counter() - t0:.1f} s (root {corpus.root})")
    t0 = time.perf_counter()
    with progress.quiet():
        tok = train_tokenizer([p.path for p in pieces], vocab)
    log(f"  BPE tokenizer: {len(tok)} ids, trained in {time.perf_counter() - t0:.1f} s")

    workers_list = [None, workers]
    result: dict = {"bench": "data", "preset": preset_name, "tokenizer_vocab": len(tok), "cpu_count": os.cpu_count(),
                    "repeats": repeats}
    chorales = _files_rate(pieces, tok, workers_list, repeats, log, "chorales")
    chorales["notes_per_file"] = rounded(float(np.mean([_note_count(p.path) for p in pieces])))
    result["chorales"] = chorales

    tmp = Path(tempfile.mkdtemp(prefix="tchaikovsky-bench-long-"))
    try:
        main_pieces, main, result["long"] = pieces, chorales, None
        if concat > 1:
            main_pieces, stats = _long_pieces(pieces, concat, long_files or 2 * len(pieces), tmp, log)
            main = result["long"] = _files_rate(main_pieces, tok, workers_list, repeats, log, "long")
            main.update(concat=concat, notes_per_file=rounded(float(np.mean([s["notes"] for s in stats]))),
                        minutes_per_file=rounded(float(np.mean([s["seconds"] for s in stats])) / 60, 3))
        result.update(files_per_s=main["default_files_per_s"], baseline_files_per_s=main["baseline_files_per_s"],
                      speedup=main["default_speedup"], default_workers=main["default_workers"],
                      pool_files_per_s=main["pool_files_per_s"], pool_speedup=main["pool_speedup"],
                      pool_workers=workers, measured_on="long" if concat > 1 else "chorales")

        tc = preset(preset_name, vocab_size=vocab).train
        with progress.quiet():
            shards = Shards(build_shards(tok, main_pieces, tmp / "shards"))
        shards.batch(0, tc.batch_size, tc.seq_len)
        times = [timed(lambda s=s: shards.batch(s, tc.batch_size, tc.seq_len)) for s in range(1, batch_repeats + 1)]
        batch_ms = median(times) * 1e3
        log(f"  Shards.batch({tc.batch_size} x {tc.seq_len}) over {shards.n_tokens():,} tokens: {batch_ms:.3f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    log(f"  train step of the {preset_name} preset for comparison ...")
    tr = bench_training(preset_name, steps=train_steps, vocab_size=vocab, roofline=False, log=lambda s: None)
    result.update(batch_ms=rounded(batch_ms), batch_size=tc.batch_size, seq_len=tc.seq_len,
                  train_step_ms=tr["step_ms"], batch_fraction=rounded(batch_ms / tr["step_ms"], 3),
                  device_kind=tr["device_kind"], load_avg=load_avg())
    log(f"  batch {batch_ms:.3f} ms vs train step {tr['step_ms']} ms: {result['batch_fraction']:.3g} of a step")
    return result


def _note_count(path) -> int:
    from symusic import Score

    return Score(str(path)).note_num()
