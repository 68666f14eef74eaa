"""Prompts: from nothing, files, scores and chord symbols, through the real miditok tokenizer."""

import numpy as np
import pytest
import symusic as sm

from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.generate import scores
from tchaikovsky.generate import prompts
from tchaikovsky.generate.prompts import make_prompt


def beats_and_pitches(score: sm.Score) -> list[tuple[float, int]]:
    """Sorted (onset in quarter notes, pitch) pairs, whatever the score's ticks per quarter."""
    tpq = score.ticks_per_quarter
    return sorted((n.time / tpq, n.pitch) for t in score.tracks for n in t.notes)


def test_prompts_from_nothing_a_file_or_chords(bach):
    tok = bach.tok
    bos = tok_lib.special_ids(tok)["bos"]
    assert make_prompt(tok).tolist() == make_prompt(tok, midi="", tokens=5).tolist() == [bos]
    path = bach.pieces[0].path
    full = tok_lib.encode_file(tok, path)
    np.testing.assert_array_equal(make_prompt(tok, midi=str(path), tokens=50), full[:51])
    np.testing.assert_array_equal(make_prompt(tok, midi=path), full[:-1])  # everything but EOS
    chords = make_prompt(tok, chords="C G Am F")
    assert chords[0] == bos and len(chords) > 10
    np.testing.assert_array_equal(chords, make_prompt(tok, midi=scores.chord_progression("C G Am F")))
    notes = tok_lib.decode_ids(tok, chords).tracks[0].notes
    assert {n.pitch % 12 for n in notes} == {0, 2, 4, 5, 7, 9, 11}
    with pytest.raises(ValueError, match="not both"):
        make_prompt(tok, midi=str(path), chords="C")
    with pytest.raises(FileNotFoundError, match="no MIDI file"):
        make_prompt(tok, midi="/no/such.mid")
    with pytest.raises(ValueError, match="unknown chord symbol 'Hm'"):
        make_prompt(tok, chords="C Hm")


def test_a_score_prompt_is_bos_plus_tokens_without_eos_and_decodes_to_the_same_notes(bach):
    tok = bach.tok
    sp = tok_lib.special_ids(tok)
    score = scores.chord_progression("C G Am F")
    ids = make_prompt(tok, midi=score)
    assert ids.dtype == np.int32 and ids[0] == sp["bos"] and len(ids) > 8
    assert sp["eos"] not in ids and sp["bos"] not in ids[1:]
    np.testing.assert_array_equal(ids, tok_lib.encode_file(tok, score)[:-1])
    assert beats_and_pitches(tok_lib.decode_ids(tok, ids)) == beats_and_pitches(score)
    melody = scores.motif(["E4", "D4", "C4", "D4", "E4", "E4", "E4"], [1, 1, 1, 1, 1, 1, 2])
    assert beats_and_pitches(tok_lib.decode_ids(tok, make_prompt(tok, midi=melody))) == beats_and_pitches(melody)
    assert len(make_prompt(tok, midi=score, tokens=5)) == 6
    with pytest.raises(ValueError, match="no notes"):
        make_prompt(tok, midi=scores.motif(["C0"], [1]))  # below the tokenizer's pitch range


def test_prompts_cut_bars_seconds_tokens(bach, tmp_path):
    tok = bach.tok
    path = tmp_path / "four_bars.mid"
    scores.chord_progression("C G Am F").dump_midi(str(path))  # 4 bars of 4/4 at 100 bpm
    two = tok_lib.decode_ids(tok, make_prompt(tok, midi=path, bars=2))
    assert max(n.end for t in two.tracks for n in t.notes) / two.ticks_per_quarter <= 8
    assert {p % 12 for _, p in beats_and_pitches(two)} == {0, 4, 7, 11, 2}  # C and G only
    assert {b for b, _ in beats_and_pitches(two)} == {0, 4}
    np.testing.assert_array_equal(make_prompt(tok, midi=path, seconds=4.8),  # 2 bars = 8 beats at 100 bpm
                                  make_prompt(tok, midi=path, bars=2))
    whole = make_prompt(tok, midi=path)
    np.testing.assert_array_equal(make_prompt(tok, midi=path, bars=10), whole)
    np.testing.assert_array_equal(whole, make_prompt(tok, midi=sm.Score(str(path))))
    assert len(make_prompt(tok, midi=path, tokens=5)) == 6
    np.testing.assert_array_equal(make_prompt(tok, midi=path, bars=2, tokens=4),
                                  make_prompt(tok, midi=path, bars=2)[:5])
    np.testing.assert_array_equal(make_prompt(tok, chords="C G Am F", bars=2), make_prompt(tok, midi=path, bars=2))


def test_prompts_follow_the_time_signature(bach):
    waltz = scores.motif(["C4", "E4", "G4"] * 4, 1, time_signature=(3, 4))  # four bars of 3/4
    one = tok_lib.decode_ids(bach.tok, make_prompt(bach.tok, midi=waltz, bars=1))
    assert beats_and_pitches(one) == [(0, 60), (1, 64), (2, 67)]


def test_prompt_errors(bach, tmp_path):
    with pytest.raises(FileNotFoundError):
        make_prompt(bach.tok, midi=tmp_path / "missing.mid")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a midi file at all")
    with pytest.raises(ValueError, match="not a readable MIDI file"):
        make_prompt(bach.tok, midi=bad)
    late = scores.motif([None, "C4"], [8, 1])  # silent for two bars
    with pytest.raises(ValueError, match="no notes in the first 1 bar"):
        make_prompt(bach.tok, midi=late, bars=1)
    with pytest.raises(ValueError, match="not both"):
        make_prompt(bach.tok, midi=late, bars=1, seconds=2)
    with pytest.raises(ValueError, match="tokens"):
        make_prompt(bach.tok, midi=late, tokens=-1)


def test_bar_lines_follow_time_signature_changes_on_every_symusic():
    from symusic import Note, Score, TimeSignature, Track

    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 3, 4))
    score.time_signatures.append(TimeSignature(1440 * 2, 6, 8))  # after two bars of 3/4
    track = Track("piano", 0, False)
    track.notes.append(Note(0, 480 * 12, 60, 80))  # 12 beats long: 2 bars of 3/4, then 6/8 bars of 3 beats
    score.tracks.append(track)
    np.testing.assert_array_equal(prompts.bar_lines(score), [0, 1440, 2880, 4320])
    if hasattr(score, "get_downbeats"):  # symusic >= 0.5.x: ours agrees with its own
        np.testing.assert_array_equal(prompts.bar_lines(score), np.asarray(score.get_downbeats(), np.int64))
    assert prompts.bar_lines(Score(480)).tolist() == [0]  # no notes, no signature: 4/4 from 0
