"""Training-set augmentation: transposed, louder or softer, faster or slower copies of every training piece."""

from __future__ import annotations

from dataclasses import dataclass

from miditok.data_augmentation import augment_score
from symusic import Score

PIANO_RANGE = (21, 108)  # A0..C8: transposition augmentation stays inside it


@dataclass(frozen=True)
class Augment:
    """Extra training copies of every training piece, one per listed change (validation is never augmented).

    ``transpose``: semitone shifts of every pitched track, drums untouched (a copy that would leave the piano range
    A0-C8 is dropped for that piece); ``velocity``: added to every velocity, clipped to 1-127 (both through
    ``miditok.data_augmentation.augment_score``); ``tempo``: factors on every tempo (faster/slower playback of the
    same notes). Each change costs one more tokenization of the piece (time and disk scale with 1 + the number of
    changes) and multiplies the training split's tokens by the same factor."""

    transpose: tuple[int, ...] = ()
    velocity: tuple[int, ...] = ()
    tempo: tuple[float, ...] = ()

    def variants(self) -> list[tuple[int, int, float]]:
        """One ``(semitones, velocity offset, tempo factor)`` per change, the others neutral; no-op changes left out."""
        return ([(int(t), 0, 1.0) for t in self.transpose if t] + [(0, int(v), 1.0) for v in self.velocity if v]
                + [(0, 0, float(f)) for f in self.tempo if f != 1.0])


def apply_variant(score: Score, variant: tuple[int, int, float] | None) -> Score:
    """``score`` changed by one ``Augment.variants()`` entry (a new Score; ``score`` itself is left as it is).
    Raises ``OutOfRange`` when the transposed pitched notes leave ``PIANO_RANGE``."""
    if not variant:
        return score
    transpose, velocity, tempo = variant
    if transpose:
        pitches = [t.notes.numpy()["pitch"] for t in score.tracks if not t.is_drum and len(t.notes)]
        if pitches and (min(p.min() for p in pitches) + transpose < PIANO_RANGE[0]
                        or max(p.max() for p in pitches) + transpose > PIANO_RANGE[1]):
            raise OutOfRange(f"transposing by {transpose} leaves the piano range")
    if transpose or velocity:  # miditok shifts pitched tracks only and clips velocities to velocity_range
        score = augment_score(score, pitch_offset=transpose, velocity_offset=velocity, velocity_range=(1, 127))
    if tempo != 1.0:
        score = score.copy()
        for t in score.tempos:
            t.qpm = t.qpm * tempo
    return score


class OutOfRange(ValueError):
    """A transposition would leave the piano range."""
