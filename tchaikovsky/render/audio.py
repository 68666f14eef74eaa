"""MIDI -> audio, offline, with FluidSynth.

We never start an audio driver (notebooks are headless): a ``fluidsynth.Synth`` is driven by hand. The score is
converted to seconds (symusic applies every tempo change), flattened into one time-ordered list of MIDI events
(program select, control changes incl. the sustain pedal, pitch bends, note on/off), and between consecutive events we
pull exactly as many samples as elapsed, so timing is sample-accurate and independent of any real-time clock.

FluidSynth is optional: ``import fluidsynth`` fails until the C library is installed, so everything here degrades to
a clear message from :func:`audio_available` instead of breaking the import of the package.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import symusic

from tchaikovsky import io

_SF2_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"))
_PREFERRED = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2")
_DRUM_BANK = 128  # General MIDI percussion kits live in bank 128 of a GM soundfont
_SILENCE = 16  # int16 peak below which output is only FluidSynth's +-1 LSB dither: leave it, don't amplify it
_N_CHANNELS = 256  # FluidSynth allows more than 16 channels, so tracks rarely need to share one
_INSTALL = (
    "Audio needs the FluidSynth library, a General MIDI soundfont and pyfluidsynth:\n"
    "  apt-get install -y libfluidsynth3 fluid-soundfont-gm   (or timgm6mb-soundfont, smaller)\n"
    "  pip install pyfluidsynth\n"
    "On Kaggle/Colab run them in a cell with '!':\n"
    "  !apt-get install -y libfluidsynth3 fluid-soundfont-gm\n"
    "  !pip install pyfluidsynth\n"
    "or point $TCHAIKOVSKY_SOUNDFONT at any .sf2 file."
)


def _fluidsynth():
    """The ``fluidsynth`` module, or None when pyfluidsynth or libfluidsynth is missing."""
    try:
        import fluidsynth  # optional system library: only when audio is rendered
    except (ImportError, OSError):
        return None
    return fluidsynth


def find_soundfont(soundfont: str | Path | None = None) -> Path | None:
    """Locate a General MIDI soundfont (.sf2).

    An explicit argument is taken literally (None if that file does not exist: a typo should not silently fall back
    to another sound). Otherwise: $TCHAIKOVSKY_SOUNDFONT, $SOUNDFONT, the Debian/Ubuntu soundfont packages
    (FluidR3_GM, default-GM, TimGM6mb, any other .sf2), /usr/share/soundfonts, then ~/.cache/tchaikovsky.
    """
    if soundfont is not None:
        path = Path(soundfont).expanduser()
        return path if path.is_file() else None
    for var in ("TCHAIKOVSKY_SOUNDFONT", "SOUNDFONT"):
        value = os.environ.get(var)
        if value and Path(value).expanduser().is_file():
            return Path(value).expanduser()
    candidates = [_SF2_DIRS[0] / name for name in _PREFERRED]
    for folder in (*_SF2_DIRS, Path.home() / ".cache" / "tchaikovsky"):
        if folder.is_dir():
            candidates += sorted(folder.glob("*.sf2"))
    return next((p for p in candidates if p.is_file()), None)


def audio_available(soundfont: str | Path | None = None) -> tuple[bool, str]:
    """(ok, message): whether :func:`render` can work here, and if not exactly what to install."""
    if _fluidsynth() is None:
        return False, "pyfluidsynth or libfluidsynth3 is not installed.\n" + _INSTALL
    path = find_soundfont(soundfont)
    if path is None:
        what = f"soundfont {soundfont} does not exist" if soundfont is not None else "no .sf2 soundfont found"
        return False, f"{what}.\n" + _INSTALL
    return True, f"FluidSynth ready with soundfont {path}"


def _channels(tracks) -> list[int]:
    """One channel per track: drums on 9 (then 25, 41, ...), melodic tracks on the others; wrap if we run out."""
    drum = [c for c in range(_N_CHANNELS) if c % 16 == 9]
    melodic = [c for c in range(_N_CHANNELS) if c % 16 != 9]
    out, n_drum, n_mel = [], 0, 0
    for track in tracks:
        if track.is_drum:
            out.append(drum[n_drum % len(drum)])
            n_drum += 1
        else:
            out.append(melodic[n_mel % len(melodic)])
            n_mel += 1
    return out


# Events at the same instant are applied in this order: set-up first, note-offs before note-ons (so a repeated
# pitch re-strikes instead of being cut by its own predecessor's release).
_CC, _BEND, _OFF, _ON = range(4)


def _events(score: symusic.Score, channels: list[int]) -> list[tuple[float, int, int, int, int]]:
    """Flatten all tracks into time-sorted (seconds, kind, channel, a, b) tuples."""
    events = []
    for track, ch in zip(score.tracks, channels):
        for n in track.notes:
            events.append((n.time, _ON, ch, n.pitch, n.velocity))
            # a zero-length note would sort its note-off before its note-on and hang: give it 10 ms
            events.append((n.time + max(n.duration, 0.01), _OFF, ch, n.pitch, 0))
        has_cc64 = any(c.number == 64 for c in track.controls)
        for c in track.controls:
            events.append((c.time, _CC, ch, c.number, c.value))
        if not has_cc64:  # pedals built in memory carry no cc64 controls (files have both; don't send them twice)
            for p in track.pedals:
                events.append((p.time, _CC, ch, 64, 127))
                events.append((p.time + p.duration, _CC, ch, 64, 0))
        for b in track.pitch_bends:
            events.append((b.time, _BEND, ch, b.value, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _synthesize(score, fs, soundfont: Path, sample_rate: int, n_frames: int, gain: float) -> np.ndarray:
    """Run the event list through a fresh Synth; int16 (n_frames, 2)."""
    synth = fs.Synth(gain=gain, samplerate=float(sample_rate), channels=_N_CHANNELS)
    try:
        sfid = synth.sfload(str(soundfont))
        if sfid < 0:
            raise RuntimeError(f"FluidSynth could not load soundfont {soundfont}")
        channels = _channels(score.tracks)
        for track, ch in zip(score.tracks, channels):
            bank = _DRUM_BANK if track.is_drum else 0  # drum kits: program = kit number (0 = standard)
            # Fall back to preset 0 when this soundfont lacks the program (asking first avoids FluidSynth's error log).
            known = getattr(fs, "fluid_synth_get_sfont_by_id", None) is not None
            missing = known and synth.sfpreset_name(sfid, bank, track.program) is None
            if missing or synth.program_select(ch, sfid, bank, track.program) != 0:
                synth.program_select(ch, sfid, bank, 0)
        chunks, done = [], 0
        held: dict[tuple[int, int], int] = {}  # overlapping notes of the same pitch: release on the last note-off
        for t, kind, ch, a, b in _events(score, channels):
            frame = int(round(t * sample_rate))
            if frame >= n_frames:  # the rest of the piece lies past the end we were asked for: never synthesized
                break
            if frame > done:
                chunks.append(synth.get_samples(frame - done))
                done = frame
            if kind == _ON:
                synth.noteon(ch, a, b)
                held[ch, a] = held.get((ch, a), 0) + 1
            elif kind == _OFF:
                held[ch, a] = held.get((ch, a), 1) - 1
                if held[ch, a] <= 0:
                    synth.noteoff(ch, a)
            elif kind == _CC:
                synth.cc(ch, a, b)
            else:
                synth.pitch_bend(ch, a)
        if n_frames > done:
            chunks.append(synth.get_samples(n_frames - done))
    finally:
        synth.delete()
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return audio.astype(np.int16).reshape(-1, 2)


def render_array(
    midi: str | Path | symusic.Score,
    *,
    soundfont: str | Path | None = None,
    sample_rate: int = 44100,
    tail_s: float = 1.0,
    gain: float = 0.5,
    seconds: float | None = None,
) -> np.ndarray:
    """Synthesize ``midi`` to float32 stereo samples of shape (n, 2), peak-normalised to 0.9 unless silent
    (only dither noise, which normalising would blow up to full scale).

    The length is the score's end time plus ``tail_s`` of release/reverb, or at most ``seconds``: then only the
    first ``seconds`` are synthesized (events after them are never sent, so a 30-minute piece costs what its opening
    costs). ``gain`` is FluidSynth's master gain; the synth writes int16, so if a dense passage clips we re-render
    quieter (normalisation restores the level).
    """
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be > 0 (or None for the whole piece), got {seconds!r}")
    ok, message = audio_available(soundfont)
    if not ok:
        raise RuntimeError(message)
    fs, path = _fluidsynth(), find_soundfont(soundfont)
    score = io.load_score(midi, "second")
    length = max(score.end(), 0.0) + tail_s
    n_frames = int(round((length if seconds is None else min(length, seconds)) * sample_rate))
    for _ in range(4):
        pcm = _synthesize(score, fs, path, sample_rate, n_frames, gain)
        peak = int(np.abs(pcm.astype(np.int32)).max(initial=0))
        if peak < 32767:
            break
        gain /= 4
    audio = pcm.astype(np.float32) / 32768.0
    if peak > _SILENCE:
        audio *= 0.9 / (peak / 32768.0)
    return audio


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 44100) -> Path:
    """Write float samples in [-1, 1], shape (n, 2) or (n,), as a 16-bit stereo WAV (stdlib ``wave``)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = np.stack([audio, audio], axis=1)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path


def render(
    midi: str | Path | symusic.Score,
    wav_path: str | Path | None = None,
    *,
    soundfont: str | Path | None = None,
    sample_rate: int = 44100,
    tail_s: float = 1.0,
    gain: float = 0.5,
) -> Path:
    """Render ``midi`` to a 16-bit stereo WAV (default: next to the MIDI, same name, ``.wav``); returns its path.

    Raises RuntimeError, with the install instructions, when FluidSynth or a soundfont is missing.
    """
    if wav_path is None:
        if isinstance(midi, symusic.Score):
            raise ValueError("render(score) needs wav_path: an in-memory Score has no file name to derive it from")
        wav_path = Path(midi).with_suffix(".wav")
    audio = render_array(midi, soundfont=soundfont, sample_rate=sample_rate, tail_s=tail_s, gain=gain)
    return write_wav(wav_path, audio, sample_rate)
