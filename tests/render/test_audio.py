"""Real FluidSynth renders of small MIDI files written with symusic (no mocks)."""

import wave
from pathlib import Path

import numpy as np
import pytest
import symusic as sm

from tchaikovsky.render import audio

pytestmark = pytest.mark.skipif(not audio.audio_available()[0], reason=audio.audio_available()[1])

TPQ = 480
SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def make_score(pitches=SCALE, *, program=0, is_drum=False, qpm=120.0, beat=1.0, pedal=None, tempos=()) -> sm.Score:
    """One track of consecutive notes, each ``beat`` quarters long."""
    score = sm.Score(TPQ)
    track = sm.Track("t", program, is_drum)
    step = int(TPQ * beat)
    for i, p in enumerate(pitches):
        track.notes.append(sm.Note(i * step, step, p, 100))
    if pedal is not None:  # (start, end) in ticks, as cc64 so it survives writing to a file
        track.controls.append(sm.ControlChange(pedal[0], 64, 127))
        track.controls.append(sm.ControlChange(pedal[1], 64, 0))
    score.tracks.append(track)
    score.tempos.append(sm.Tempo(0, qpm))
    for tick, q in tempos:
        score.tempos.append(sm.Tempo(tick, q))
    return score


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_render_scale_wav(tmp_path):
    midi = tmp_path / "scale.mid"
    make_score().dump_midi(str(midi))  # 8 quarters at 120 bpm = 4 s
    wav = audio.render(midi)
    assert wav == midi.with_suffix(".wav") and wav.is_file()
    with wave.open(str(wav)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (2, 2, 44100)
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2) / 32768.0
        seconds = f.getnframes() / f.getframerate()
    assert seconds == pytest.approx(4.0 + 1.0, abs=0.05)
    assert rms(pcm) > 0.02
    assert np.abs(pcm).max() == pytest.approx(0.9, abs=0.01)


def test_render_array_and_tail():
    x = audio.render_array(make_score(), tail_s=0.25, sample_rate=22050)
    assert x.dtype == np.float32 and x.shape == (round(4.25 * 22050), 2)
    assert np.abs(x).max() <= 1.0


def test_tempo_change_sets_length(tmp_path):
    slow = audio.render_array(make_score(qpm=60.0), tail_s=0.0)
    fast = audio.render_array(make_score(qpm=120.0), tail_s=0.0)
    assert len(slow) / 44100 == pytest.approx(8.0, abs=0.05)
    assert len(slow) == pytest.approx(2 * len(fast), abs=2)
    # 4 beats at 120 then 4 beats at 60: 2 s + 4 s; the last note must sound in the final second
    midi = tmp_path / "change.mid"
    make_score(tempos=[(4 * TPQ, 60.0)]).dump_midi(str(midi))
    x = audio.render_array(midi, tail_s=0.0)
    assert len(x) / 44100 == pytest.approx(6.0, abs=0.05)
    assert rms(x[-44100:]) > 0.02


def test_drums_are_audible(tmp_path):
    midi = tmp_path / "drums.mid"
    make_score([36, 38, 42, 38] * 2, is_drum=True).dump_midi(str(midi))
    assert sm.Score(str(midi)).tracks[0].is_drum  # written on channel 10
    assert rms(audio.render_array(midi)) > 0.02


def sustain_ratio(x: np.ndarray, start: float, sr: int = 44100) -> float:
    """RMS of the last 0.5 s of a 3 s note over its first 0.5 s: a piano decays (~0.05), a violin holds (~0.9)."""
    late = x[int((start + 2.5) * sr) : int((start + 3.0) * sr)]
    early = x[int((start + 0.1) * sr) : int((start + 0.6) * sr)]
    return rms(late) / rms(early)


def test_programs_sound_different():
    piano = audio.render_array(make_score([60], program=0, beat=3, qpm=60.0))
    violin = audio.render_array(make_score([60], program=40, beat=3, qpm=60.0))
    assert np.allclose(piano, audio.render_array(make_score([60], program=0, beat=3, qpm=60.0)), atol=1e-3)
    assert sustain_ratio(piano, 0.0) < 0.3 < 0.6 < sustain_ratio(violin, 0.0)


def test_two_tracks_get_their_own_programs(tmp_path):
    """A piano track (0-3 s) and a violin track (3-6 s) in one file each keep their own instrument."""
    score = make_score([60], program=0, beat=3, qpm=60.0)
    violin = sm.Track("violin", 40, False)
    violin.notes.append(sm.Note(3 * TPQ, 3 * TPQ, 60, 100))
    score.tracks.append(violin)
    midi = tmp_path / "duet.mid"
    score.dump_midi(str(midi))
    x = audio.render_array(midi)
    assert sustain_ratio(x, 0.0) < 0.3 and sustain_ratio(x, 3.0) > 0.6


def test_sustain_pedal_lengthens_sound():
    """One short note then 2 s of silence; the pedal held across it keeps the note ringing."""
    notes = [60]
    dry = audio.render_array(make_score(notes, beat=0.5, qpm=60.0), tail_s=2.0)
    wet = audio.render_array(make_score(notes, beat=0.5, qpm=60.0, pedal=(0, 3 * TPQ)), tail_s=0.0)
    after = slice(int(1.0 * 44100), int(2.0 * 44100))  # 0.5-1.5 s after note-off, normalised peaks equal
    assert rms(wet[after]) > 3 * rms(dry[after])


def test_pedals_built_in_memory_are_honoured():
    score = make_score([60], beat=0.5, qpm=60.0)
    score.tracks[0].pedals.append(sm.Pedal(0, 3 * TPQ))
    wet = audio.render_array(score, tail_s=0.0)
    dry = audio.render_array(make_score([60], beat=0.5, qpm=60.0), tail_s=2.0)
    after = slice(int(1.0 * 44100), int(2.0 * 44100))
    assert rms(wet[after]) > 3 * rms(dry[after])


def test_find_soundfont_order(tmp_path, monkeypatch):
    real = audio.find_soundfont()
    assert real is not None and real.suffix == ".sf2"
    copy = tmp_path / "mine.sf2"
    copy.write_bytes(b"")  # existence is all find_soundfont checks
    monkeypatch.setenv("TCHAIKOVSKY_SOUNDFONT", str(copy))
    assert audio.find_soundfont() == copy
    assert audio.find_soundfont(real) == real  # explicit argument wins
    monkeypatch.setenv("TCHAIKOVSKY_SOUNDFONT", str(tmp_path / "gone.sf2"))
    assert audio.find_soundfont() != tmp_path / "gone.sf2"  # a stale variable falls through


def test_missing_soundfont_says_what_to_install(tmp_path):
    assert audio.find_soundfont(tmp_path / "nope.sf2") is None
    ok, message = audio.audio_available(tmp_path / "nope.sf2")
    assert not ok and "apt-get install" in message and "pip install pyfluidsynth" in message
    with pytest.raises(RuntimeError, match="apt-get install -y libfluidsynth3"):
        audio.render(make_score(), tmp_path / "x.wav", soundfont=tmp_path / "nope.sf2")


def test_silent_score_is_not_normalised(tmp_path):
    empty = sm.Score(TPQ)
    empty.tracks.append(sm.Track("t", 0, False))
    x = audio.render_array(empty, tail_s=0.1)
    assert x.shape == (4410, 2) and np.abs(x).max() < 1e-3
    with pytest.raises(ValueError):
        audio.render(empty)  # an in-memory score needs an explicit wav_path
    assert Path(audio.render(empty, tmp_path / "e.wav")).is_file()
