"""Short scores written in code: chord progressions, scales, motifs.

The builders return a ``symusic.Score`` in tick time (480 ticks per quarter note) with one tempo and one time
signature, so they can be listened to (``audio.render``), drawn (``display.piano_roll``), saved (``dump_midi``) or
continued (``prompts.make_prompt(tok, midi=score)``). Durations are in beats, and a beat is a quarter note whatever
the time signature (``tempo`` is quarter notes per minute, as in MIDI).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from symusic import Note, Score, Tempo, TimeSignature, Track

TPQ = 480
_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACC = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1, "##": 2, "x": 2, "bb": -2}

# Chord qualities: intervals above the root, in semitones. Keys are matched exactly (case-sensitive: "M7" is a
# major seventh, "m7" a minor one).
_QUALITIES: dict[str, tuple[int, ...]] = {
    "": (0, 4, 7), "maj": (0, 4, 7), "M": (0, 4, 7),
    "m": (0, 3, 7), "min": (0, 3, 7), "-": (0, 3, 7),
    "dim": (0, 3, 6), "o": (0, 3, 6), "°": (0, 3, 6),
    "aug": (0, 4, 8), "+": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "sus": (0, 5, 7),
    "5": (0, 7),
    "6": (0, 4, 7, 9), "m6": (0, 3, 7, 9),
    "7": (0, 4, 7, 10), "7sus4": (0, 5, 7, 10),
    "maj7": (0, 4, 7, 11), "M7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10), "min7": (0, 3, 7, 10), "-7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10), "ø": (0, 3, 6, 10), "ø7": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9), "o7": (0, 3, 6, 9), "°7": (0, 3, 6, 9),
    "9": (0, 4, 7, 10, 14), "maj9": (0, 4, 7, 11, 14), "m9": (0, 3, 7, 10, 14), "add9": (0, 4, 7, 14),
}
CHORD_FORMS = (
    "a root A-G with an optional # or b, then a quality: (none) for major, m/min, maj, dim, aug, sus2, sus4, 5, 6, "
    "m6, 7, 7sus4, maj7, m7, m7b5, dim7, 9, maj9, m9, add9; then optionally /bass (e.g. C, F#m, Bb/D, Dm7, E7sus4, "
    "Cdim, Caug, C5); chords are separated by spaces (| and , are ignored)"
)
_CHORD_RE = re.compile(r"^([A-G])([#b♯♭]?)(.*?)(?:/([A-G][#b♯♭]?))?$")
_NOTE_RE = re.compile(r"^([A-Ga-g])(##|bb|[#b♯♭x]?)(-?\d+)$")

# Scales: semitones above the tonic within one octave.
_SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "natural minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "melodic minor": (0, 2, 3, 5, 7, 9, 11),  # ascending form; it descends as the natural minor
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "chromatic": tuple(range(12)),
}
_SCALE_ALIASES = {
    "": "major", "ionian": "major", "minor": "natural minor", "aeolian": "natural minor",
    "pentatonic": "major pentatonic", "pentatonic major": "major pentatonic",
    "pentatonic minor": "minor pentatonic", "minor blues": "blues",
}


# ---------------------------------------------------------------------------------------------------- helpers


def note_number(name: int | str) -> int:
    """A MIDI note number from a number or a scientific pitch name: "C4" -> 60, "F#3" -> 54, "Bb2" -> 46.

    Octave numbers follow the MIDI convention in which middle C is C4 (and "C-1" is 0)."""
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        pitch = int(name)
    elif isinstance(name, str) and (m := _NOTE_RE.match(name.strip())):
        letter, acc, octave = m.groups()
        pitch = 12 * (int(octave) + 1) + _PC[letter.upper()] + _ACC[acc]
    else:
        raise ValueError(f"{name!r} is not a pitch: use a MIDI number (60) or a name like 'C4', 'F#3', 'Bb2'")
    if not 0 <= pitch <= 127:
        raise ValueError(f"pitch {name!r} = {pitch} is outside MIDI's 0..127")
    return pitch


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _ticks(beats: float) -> int:
    return int(round(beats * TPQ))


def _empty_score(tempo: float, time_signature: tuple[int, int]) -> Score:
    _check(isinstance(tempo, (int, float)) and 10 <= tempo <= 400, f"tempo={tempo!r} must be 10..400 quarter notes/min")
    num, den = time_signature
    _check(isinstance(num, int) and num >= 1 and isinstance(den, int) and den >= 1 and den & (den - 1) == 0,
           f"time_signature={time_signature!r} must be (numerator >= 1, power-of-two denominator), e.g. (3, 4)")
    score = Score(TPQ)
    score.tempos.append(Tempo(0, float(tempo)))
    score.time_signatures.append(TimeSignature(0, num, den))
    return score


def _add_track(score: Score, name: str, program: int, notes: list[tuple[int, int, int, int]]) -> Score:
    """Append one track of (time, duration, pitch, velocity) notes."""
    _check(isinstance(program, int) and 0 <= program <= 127,
           f"program={program!r} must be a General MIDI program 0..127")
    track = Track(name, program, False)
    for time, duration, pitch, velocity in notes:
        track.notes.append(Note(time, duration, pitch, velocity))
    track.notes.sort(key=lambda n: (n.time, n.pitch))
    score.tracks.append(track)
    return score


def _velocity(velocity: int) -> int:
    _check(isinstance(velocity, int) and 1 <= velocity <= 127, f"velocity={velocity!r} must be 1..127")
    return velocity


# ----------------------------------------------------------------------------------------------------- chords


def parse_chord(symbol: str) -> tuple[list[int], int]:
    """A chord symbol -> (pitch classes above the root, root first, with 9ths as 14 etc.; bass pitch class).

    ``parse_chord("Bb/D") == ([10, 14, 17], 2)``: intervals are added to the root's pitch class; the bass is the
    root unless a slash names another note."""
    m = _CHORD_RE.match(symbol)
    if m is None or m.group(3) not in _QUALITIES:
        raise ValueError(f"unknown chord symbol {symbol!r}: expected {CHORD_FORMS}")
    letter, acc, quality, bass = m.groups()
    root = (_PC[letter] + _ACC[acc]) % 12
    bass_pc = root if bass is None else (_PC[bass[0]] + _ACC[bass[1:]]) % 12
    return [root + i for i in _QUALITIES[quality]], bass_pc


def _close_voicing(tones: list[int], center: float) -> list[int]:
    """Chord tones in close position (all within an octave), the inversion whose mean pitch is nearest ``center``
    (ties: the inversion closest to root position)."""
    pcs = sorted({t % 12 for t in tones}, key=lambda pc: (pc - tones[0]) % 12)  # ascending from the root
    best, best_cost = None, math.inf
    for r in range(len(pcs)):
        rot = pcs[r:] + pcs[:r]
        stack = [rot[0]]
        for pc in rot[1:]:
            stack.append(stack[-1] + (pc - stack[-1]) % 12)
        shift = 12 * round((center - float(np.mean(stack))) / 12)
        stack = [p + shift for p in stack]
        cost = abs(float(np.mean(stack)) - center)
        if cost < best_cost - 1e-9:
            best, best_cost = stack, cost
    return best


def chord_progression(
    text: str,
    *,
    tempo: float = 100,
    beats_per_chord: float = 4,
    time_signature: tuple[int, int] = (4, 4),
    octave: int = 4,
    program: int = 0,
    velocity: int = 80,
) -> Score:
    """A block-chord progression from text like "C G Am F", "Dm7 G7 Cmaj7" or "F#m Bb/D E7sus4".

    One chord every ``beats_per_chord`` beats (quarter notes), each held for its full length. The upper voices are
    in close position (within an octave), in the inversion nearest the middle of ``octave`` (4: around F#4), so
    successive chords move little; the bass (the root, or the note after a slash) sounds an octave lower, below all
    of them. Everything is one track of ``program``. Unknown symbols raise ValueError naming the symbol and the
    accepted forms (:data:`CHORD_FORMS`).
    """
    _check(isinstance(text, str), f"chord text must be a string, not {type(text).__name__}")
    symbols = [s for s in re.split(r"[\s|,]+", text.strip()) if s]
    _check(bool(symbols), f"no chords in {text!r}: write e.g. 'C G Am F' ({CHORD_FORMS})")
    _check(isinstance(beats_per_chord, (int, float)) and beats_per_chord > 0,
           f"beats_per_chord={beats_per_chord!r} must be > 0")
    _check(isinstance(octave, int) and 1 <= octave <= 7, f"octave={octave!r} must be 1..7")
    velocity = _velocity(velocity)
    chords = [parse_chord(s) for s in symbols]  # all symbols checked before anything is built
    score = _empty_score(tempo, time_signature)
    center = 12 * (octave + 1) + 6
    notes = []
    for i, (tones, bass_pc) in enumerate(chords):
        start, end = _ticks(i * beats_per_chord), _ticks((i + 1) * beats_per_chord)
        upper = _close_voicing(tones, center)
        bass = 12 * octave + bass_pc  # the octave below `octave`
        while bass >= min(upper):
            bass -= 12
        for pitch in [bass, *upper]:
            notes.append((start, end - start, pitch, velocity))
    return _add_track(score, "chords", program, notes)


# ----------------------------------------------------------------------------------------------------- scales


def _scale_steps(name: str) -> tuple[int | None, int, tuple[int, ...], tuple[int, ...]]:
    """"A3 harmonic minor" -> (tonic pitch if the name gives its octave else None, tonic pitch class, ascending
    steps, descending steps)."""
    words = name.replace("-", " ").replace("_", " ").split()
    _check(bool(words), f"empty scale name: write e.g. 'C major' (kinds: {', '.join(_SCALES)})")
    tonic = words[0]
    kind = " ".join(w.lower() for w in words[1:] if w.lower() != "scale")
    kind = _SCALE_ALIASES.get(kind, kind)
    if kind not in _SCALES:
        raise ValueError(f"unknown scale {name!r}: write a tonic and a kind, e.g. 'C major', 'A harmonic minor', "
                         f"'D dorian', 'E minor pentatonic' (kinds: {', '.join(_SCALES)}; also minor, ionian, "
                         "aeolian, pentatonic)")
    if re.fullmatch(r"[A-Ga-g](##|bb|[#b♯♭x]?)", tonic):
        pitch = _PC[tonic[0].upper()] + _ACC[tonic[1:]]  # a pitch class: the octave comes from `octave`
        has_octave = False
    else:
        try:
            pitch, has_octave = note_number(tonic), True
        except ValueError:
            raise ValueError(f"scale {name!r}: {tonic!r} is not a tonic (write e.g. 'C', 'F#', 'Bb' or 'C3')") from None
    up = _SCALES[kind]
    down = _SCALES["natural minor"] if kind == "melodic minor" else up
    return (pitch if has_octave else None), pitch % 12, up, down


def scale(
    name: str = "C major",
    *,
    octaves: int = 1,
    note_beats: float = 0.5,
    tempo: float = 100,
    direction: str = "up",
    octave: int = 4,
    program: int = 0,
    velocity: int = 80,
    time_signature: tuple[int, int] = (4, 4),
) -> Score:
    """A scale as a melody of equal notes, ``note_beats`` beats each, over ``octaves`` octaves (top tonic included).

    ``name`` is a tonic and a kind: major (ionian), minor (natural, aeolian), harmonic minor, melodic minor
    (descends as the natural minor, as classical theory has it), dorian, phrygian, lydian, mixolydian, locrian,
    major/minor pentatonic ("pentatonic" alone is major), blues (the minor blues scale) or chromatic. The tonic
    starts in ``octave`` ("A minor" from A4) unless it carries its own ("A3 minor"). ``direction``: "up", "down"
    (from the top tonic) or "updown" (up and back, the top note once).
    """
    fixed, tonic_pc, up_steps, down_steps = _scale_steps(name)
    _check(isinstance(octaves, int) and 1 <= octaves <= 4, f"octaves={octaves!r} must be 1..4")
    _check(isinstance(note_beats, (int, float)) and note_beats > 0, f"note_beats={note_beats!r} must be > 0")
    _check(direction in ("up", "down", "updown"), f"direction={direction!r} must be 'up', 'down' or 'updown'")
    _check(isinstance(octave, int) and 0 <= octave <= 8, f"octave={octave!r} must be 0..8")
    velocity = _velocity(velocity)
    tonic = fixed if fixed is not None else 12 * (octave + 1) + tonic_pc

    def run(steps):
        return [tonic + 12 * o + s for o in range(octaves) for s in steps] + [tonic + 12 * octaves]

    up, down = run(up_steps), run(down_steps)[::-1]
    pitches = up if direction == "up" else down if direction == "down" else up + down[1:]
    _check(all(0 <= p <= 127 for p in pitches), f"scale {name!r} over {octaves} octave(s) leaves MIDI's 0..127")
    score = _empty_score(tempo, time_signature)
    step = _ticks(note_beats)
    _check(step >= 1, f"note_beats={note_beats!r} is shorter than one tick")
    return _add_track(score, name, program, [(i * step, step, p, velocity) for i, p in enumerate(pitches)])


# ----------------------------------------------------------------------------------------------------- motifs


def motif(
    pitches: Sequence[int | str | None],
    durations: Sequence[float] | float,
    *,
    tempo: float = 100,
    repeat: int = 1,
    program: int = 0,
    velocity: int = 80,
    time_signature: tuple[int, int] = (4, 4),
) -> Score:
    """A melody: ``pitches`` (MIDI numbers or names like "C4", "F#3", "Bb2"; ``None`` or "r" is a rest) played one
    after another for ``durations`` beats each (one number: the same for all), the whole motif ``repeat`` times."""
    pitches = list(pitches)
    _check(bool(pitches), "motif needs at least one pitch")
    if isinstance(durations, (int, float)):
        durations = [durations] * len(pitches)
    durations = list(durations)
    _check(len(durations) == len(pitches),
           f"motif has {len(pitches)} pitches but {len(durations)} durations: give one duration per pitch")
    _check(all(isinstance(d, (int, float)) and d > 0 for d in durations), f"durations must all be > 0: {durations}")
    _check(isinstance(repeat, int) and repeat >= 1, f"repeat={repeat!r} must be an integer >= 1")
    velocity = _velocity(velocity)
    rest = lambda p: p is None or (isinstance(p, str) and p.strip().lower() in ("r", "rest"))  # noqa: E731
    numbers = [None if rest(p) else note_number(p) for p in pitches]
    _check(any(n is not None for n in numbers), "motif is all rests: give at least one pitch")
    score = _empty_score(tempo, time_signature)
    notes, beat = [], 0.0
    for _ in range(repeat):
        for pitch, d in zip(numbers, durations):
            if pitch is not None:
                start = _ticks(beat)
                notes.append((start, max(1, _ticks(beat + d) - start), pitch, velocity))
            beat += d
    return _add_track(score, "motif", program, notes)
