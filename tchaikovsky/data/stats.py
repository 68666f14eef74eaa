"""Statistics of pieces and corpora for the exploration notebook (and anything else that wants them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import symusic

from tchaikovsky import io
from tchaikovsky.data.corpus import Corpus, Piece


def piece_stats(path_or_score: str | Path | Piece | symusic.Score) -> dict:
    """Facts about one piece (a path, Piece or symusic Score): note count, duration in seconds, tracks with notes
    and their programs, whether any is drums, per-note pitch / velocity / duration-in-beats arrays, tempos in
    quarter notes per minute ([120.0], the MIDI default, when the file sets none) and time signatures as "n/d"."""
    score = io.load_score(path_or_score, "tick")
    tracks = [t for t in score.tracks if t.note_num() > 0]
    notes = [t.notes.numpy() for t in tracks]

    def cat(key: str) -> np.ndarray:
        return np.concatenate([n[key] for n in notes]).astype(np.int64) if notes else np.zeros(0, np.int64)

    return {
        "n_notes": int(sum(len(n["pitch"]) for n in notes)),
        "duration_s": float(score.to("second").end()) if notes else 0.0,
        "n_tracks": len(tracks),
        "programs": [int(t.program) for t in tracks],
        "is_drum": any(t.is_drum for t in tracks),
        "pitches": cat("pitch"),
        "velocities": cat("velocity"),
        "durations_beats": cat("duration") / score.tpq,
        "tempos": [float(t.qpm) for t in score.tempos] or [120.0],
        "time_signatures": [f"{ts.numerator}/{ts.denominator}" for ts in score.time_signatures],
    }


def corpus_stats(corpus: Corpus, max_pieces: int | None = None) -> dict:
    """piece_stats aggregated over the first ``max_pieces`` pieces (all if None): piece and note counts, total
    duration, per-piece note counts and durations, every note's pitch / velocity / duration in beats, all tempos,
    and counts of time signatures and programs (label counts: ``Corpus.summary()["labels"]``)."""
    pieces = corpus.pieces[:max_pieces]
    stats = [piece_stats(p.path) for p in pieces]

    def cat(key: str, dtype) -> np.ndarray:
        return np.concatenate([s[key] for s in stats]).astype(dtype) if stats else np.zeros(0, dtype)

    return {
        "n_pieces": len(stats),
        "n_notes": int(sum(s["n_notes"] for s in stats)),
        "total_duration_s": float(sum(s["duration_s"] for s in stats)),
        "notes_per_piece": np.array([s["n_notes"] for s in stats], np.int64),
        "duration_s": np.array([s["duration_s"] for s in stats], np.float64),
        "pitches": cat("pitches", np.int64),
        "velocities": cat("velocities", np.int64),
        "durations_beats": cat("durations_beats", np.float64),
        "tempos": [t for s in stats for t in s["tempos"]],
        "time_signatures": dict(Counter(ts for s in stats for ts in s["time_signatures"]).most_common()),
        "programs": dict(Counter(prog for s in stats for prog in s["programs"]).most_common()),
    }
