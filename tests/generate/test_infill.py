"""Regenerating bars: the bar map of a piece, the FIM prompt, the sampler's end/ban/exact-bars controls, and the
score-level splice, with the real tokenizer, real chorales and a real (tiny, untrained, FIM-sized) model compiled by
JAX. Biased copies of the model stand in for one that wants to stop at once or never."""

import dataclasses
import itertools
import warnings

import equinox as eqx
import jax
import numpy as np
import pytest
import symusic

from tchaikovsky.config import ModelConfig, SampleConfig
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.data.fim import Fill
from tchaikovsky.generate.bars import first_kinds, parse_bars, piece_bars
from tchaikovsky.generate.grammar import Grammar
from tchaikovsky.generate.infill import fim_prompt, infill, lead_in, lead_in_bits, token_bits
from tchaikovsky.generate.rerank import candidate_seeds
from tchaikovsky.generate.sampling import generate
from tchaikovsky.model import build

CONFIG = SampleConfig(num_tokens=128, top_p=0.95)


@pytest.fixture(scope="module")
def fim_model(bach):
    """An untrained model with the 4 sentinel rows, its context wide enough for a chorale's bars (64 is not)."""
    return build(ModelConfig(vocab_size=len(bach.tok) + 4, context=256, d_model=32, n_layers=1, n_heads=2),
                 jax.random.key(0))


@pytest.fixture(scope="module")
def piece(bach):
    return bach.pieces[0].path


def biased(model, ids, by: float):
    return eqx.tree_at(lambda m: m.head.bias, model, model.head.bias.at[np.asarray(ids)].add(by))


def bar_ids(tok) -> np.ndarray:
    return np.flatnonzero(first_kinds(tok)[0] == "Bar")


def notes(score, tracks=None) -> list[tuple]:
    return sorted((i, n.time, n.duration, n.pitch, n.velocity) for i, t in enumerate(score.tracks)
                  if tracks is None or i in tracks for n in t.notes)


# ---------------------------------------------------------------------------------------------------- bars, prompt


def test_bars_are_numbered_by_bar_lines_and_cut_at_bar_tokens(bach, piece):
    pb = piece_bars(bach.tok, piece)
    assert (pb.ids == tok_lib.encode_file(bach.tok, piece)).all()
    assert pb.starts[0] == 1 and pb.n_bars == len(pb.lines) - 1 and (np.diff(pb.lines) > 0).all()
    kinds = first_kinds(bach.tok)[0]
    assert set(kinds[pb.ids[pb.starts[pb.starts >= 0]]]) <= {"Bar", "Rest"}
    i, j = pb.span(3, 4)
    assert (i, j) == (pb.starts[2], pb.starts[4]) and pb.bar_of(i) == 3 and pb.bar_of(j - 1) == 4
    assert pb.span(pb.n_bars, pb.n_bars)[1] == len(pb.ids) - 1  # the last bar runs to the EOS
    assert parse_bars("5-8") == parse_bars(" 5 - 8 ") == parse_bars((5, 8)) == (5, 8) and parse_bars("3") == (3, 3)


def test_bad_bars_raise_with_the_bar_count(bach, piece, fim_model, small_config):
    n = piece_bars(bach.tok, piece).n_bars
    with pytest.raises(ValueError, match=rf"has {n} bar\(s\).*1-{n}"):
        infill(fim_model, bach.tok, piece, (n - 1, n + 3), CONFIG)
    for bad in ("8-5", "0-2", "five", (3, 1)):
        with pytest.raises(ValueError, match="bars"):
            infill(fim_model, bach.tok, piece, bad, CONFIG)
    plain = build(dataclasses.replace(small_config, d_model=32, n_layers=1), jax.random.key(0))  # the tokenizer's ids only: trained without FIM
    with pytest.raises(ValueError, match="without fim_rate.*fine-tune"):
        infill(plain, bach.tok, piece, (3, 4), CONFIG)


def test_the_prompt_keeps_whole_bars_nearest_the_span(bach, piece):
    pb, fill = piece_bars(bach.tok, piece), Fill(len(bach.tok))
    whole, note = fim_prompt(pb, (3, 4), fill, 10_000)
    i, j = pb.span(3, 4)
    assert note == "" and list(whole) == [fill.prefix, *pb.ids[:i], fill.suffix, *pb.ids[j:], fill.middle]
    room = 2 + 3 + (i - pb.starts[1]) + (pb.starts[5] - j)  # bars 2 and 5 fit exactly: nothing more
    cut, note = fim_prompt(pb, (3, 4), fill, room, front=[7, 8])
    assert list(cut) == [7, 8, fill.prefix, *pb.ids[pb.starts[1]:i], fill.suffix, *pb.ids[j:pb.starts[5]],
                         fill.middle]
    assert note == f"the prompt keeps bar 2 before the span and bar 5 after it (of {pb.name}'s {pb.n_bars})"
    first, _ = fim_prompt(pb, (1, 2), fill, 10_000)
    assert list(first[:3]) == [fill.prefix, bach.tok["BOS_None"], fill.suffix]  # bar 1's prefix is BOS alone
    last, _ = fim_prompt(pb, (pb.n_bars - 1, pb.n_bars), fill, 10_000)
    assert list(last[-3:]) == [fill.suffix, bach.tok["EOS_None"], fill.middle]  # the last bars' suffix: EOS
    spm, note = fim_prompt(pb, (3, 4), fill, room, front=[7, 8], order="spm")  # the same bars, the suffix first
    assert list(spm) == [7, 8, fill.suffix, *pb.ids[j:pb.starts[5]], fill.prefix, *pb.ids[pb.starts[1]:i],
                         fill.middle]
    with pytest.raises(ValueError, match="orders are psm, spm"):
        fim_prompt(pb, (3, 4), fill, room, order="mps")


def test_fim_windows_obey_the_grammar(bach):
    fill = Fill(len(bach.tok))
    rules = Grammar(bach.tok, fill=fill)
    assert len(rules.first) == fill.vocab_size
    for p in bach.pieces[:4]:
        pb = piece_bars(bach.tok, p.path)
        for bars, order in itertools.product([(1, 2), (3, 4), (pb.n_bars - 1, pb.n_bars)], ("psm", "spm")):
            prompt, _ = fim_prompt(pb, bars, fill, 10_000, order=order)
            i, j = pb.span(*bars)
            window = np.concatenate([prompt, pb.ids[i:j], [fill.end]])
            assert rules.invalid_share(window) == 0.0, (p.path.name, bars, order)
    assert not rules.allowed(fill.middle)[np.flatnonzero(first_kinds(bach.tok)[0] != "Bar")].any()


# ---------------------------------------------------------------------------------------------------- sampler


def test_end_ban_and_exact_bars_are_generic_sampler_controls(bach, fim_model):
    tok, fill = bach.tok, Fill(len(bach.tok))
    prompt = np.array([tok["BOS_None"]], np.int32)
    eager = biased(biased(fim_model, [tok["EOS_None"]], 8.0), bar_ids(tok), 3.0)
    for seq in generate(eager, prompt, SampleConfig(num_tokens=120), seeds=[0, 1, 2], tok=tok, exact_bars=3):
        new = seq[1:]
        assert new[-1] == tok["EOS_None"] and (first_kinds(tok)[0][new[:-1]] == "Bar").sum() == 3
        assert not Fill(len(tok)).is_sentinel(new).any()  # a FIM model's sentinels never appear left to right
    ban = np.zeros(fill.vocab_size, bool)
    ban[bar_ids(tok)[:40]] = True
    for seq in generate(fim_model, prompt, SampleConfig(num_tokens=60), seeds=[3, 4], tok=tok, ban=ban):
        assert not ban[seq[1:]].any()
    with pytest.raises(ValueError, match="exact_bars"):
        generate(fim_model, prompt, SampleConfig(num_tokens=4), tok=tok, exact_bars=0)


# ---------------------------------------------------------------------------------------------------- infill


@pytest.mark.filterwarnings("ignore:bars 3-4")
def test_notes_outside_the_bars_are_unchanged(bach, piece, fim_model):
    score = symusic.Score(str(piece))
    pb = piece_bars(bach.tok, score)
    lo, hi = pb.lines[2], pb.lines[4]  # bars 3-4
    tpq = score.ticks_per_quarter
    held = symusic.Note(int(lo - tpq), 3 * tpq, 40, 77)  # starts a beat before bar 3 and sounds into it
    score.tracks[0].notes.append(held)
    results = infill(fim_model, bach.tok, score, (3, 4), CONFIG, seeds=[0, 1], temperatures=[1.0])
    results += infill(fim_model, bach.tok, score, (3, 4), CONFIG, seeds=[0, 1], order="spm")  # the suffix first
    assert [r.prompt[0] for r in results] == [Fill(len(bach.tok)).prefix] * 2 + [Fill(len(bach.tok)).suffix] * 2
    original = list(range(len(score.tracks)))
    inside = lambda n: lo - pb.grid / 2 <= n[1] < hi - pb.grid / 2  # noqa: E731
    for r in results:
        assert r.ticks == (lo, hi) and r.bars == (3, 4) and r.original is not None
        # every note starting outside the span, exactly as it was: the held note too, whole
        assert notes(r.score, original) == [n for n in notes(score) if not inside(n)]
        assert (0, held.time, held.duration, 40, 77) in notes(r.score, original)
        new = [n for n in notes(r.score) if n[0] >= len(score.tracks)]
        assert len(new) == r.notes and all(lo <= t < hi - pb.grid / 2 for _, t, *_ in new)
        assert {t.name for t in r.score.tracks[len(score.tracks):]} <= {"bars 3-4 regenerated"}  # one per program
        assert r.score.tempos == score.tempos and r.score.time_signatures == score.time_signatures
        start, end = r.seconds()
        assert 0 < start < end


@pytest.mark.filterwarnings("ignore:bars 3-")
def test_the_middle_holds_exactly_the_bars_asked_and_cannot_overrun(bach, piece, fim_model):
    tok, fill = bach.tok, Fill(len(bach.tok))
    kinds = first_kinds(tok)[0]
    cases = {  # the model would end at once (held back until the last bar) / never (ended at the next bar)
        "eager": biased(biased(fim_model, [fill.end], 8.0), bar_ids(tok), 3.0),
        "never": biased(biased(fim_model, [fill.end], -30.0), bar_ids(tok), 3.0),
    }
    configs = [CONFIG, SampleConfig(num_tokens=128, grammar=False, top_k=50, top_p=0.9, min_p=0.01,
                                    repetition_penalty=1.2, min_tokens=100, max_bars=1)]
    for name, model in cases.items():
        for config in configs:
            for r in infill(model, tok, piece, (3, 5), config, seeds=[0, 1, 2]):
                assert r.ended and r.n_bars == 3, (name, config)
                assert (kinds[r.middle] == "Bar").sum() == 3 and fill.end not in r.middle
                assert not fill.is_sentinel(r.middle).any() and tok["EOS_None"] not in r.middle
    for r in infill(fim_model, tok, piece, (3, 5), CONFIG, seeds=[3, 4, 5]):  # untrained: never past the bars
        assert r.n_bars <= 3 and (r.n_bars == 3 or not r.ended)


@pytest.mark.filterwarnings("ignore:bars 3-4. the prompt keeps")
def test_a_small_budget_warns_and_cuts_the_middle(bach, piece, fim_model):
    never = biased(fim_model, [Fill(len(bach.tok)).end], -30.0)
    with pytest.warns(UserWarning, match=r"bars 3-4: the middle ran out of its 8-token budget.*seed 0"):
        (r,) = infill(never, bach.tok, piece, (3, 4), dataclasses.replace(CONFIG, num_tokens=8))
    assert not r.ended and len(r.middle) == 8 and r.n_bars < 2


def test_a_prompt_too_long_for_the_context_warns_and_conditions_go_first(bach, piece):
    pieces = [dataclasses.replace(p, composer="Johann Sebastian Bach", period="Baroque") for p in bach.pieces[:4]]
    cond = Conditions.build(len(bach.tok), pieces)
    model = build(ModelConfig(vocab_size=cond.vocab_size + 4, context=128, d_model=32, n_layers=1, n_heads=2),
                  jax.random.key(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (r,) = infill(model, bach.tok, piece, (5, 6), SampleConfig(num_tokens=64), conditions=cond,
                      asked={"composer": "bach"})
    assert any("the prompt keeps" in str(w.message) and "context of 128 tokens" in str(w.message) for w in caught)
    fill = Fill(cond.vocab_size)
    assert list(r.prompt[:4]) == cond.prefix(composer="bach") + [fill.prefix] and r.prompt[-1] == fill.middle
    assert len(r.prompt) <= 64 and not cond.is_condition(r.middle).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (s,) = infill(model, bach.tok, piece, (5, 6), SampleConfig(num_tokens=64), conditions=cond,
                      asked={"composer": "bach"}, order="spm")
    assert list(s.prompt[:4]) == cond.prefix(composer="bach") + [fill.suffix] and sorted(s.prompt) == sorted(r.prompt)


@pytest.mark.filterwarnings("ignore:bars 3-4")
def test_guidance_over_the_conditions_applies_to_the_middle(bach, piece):
    pieces = [dataclasses.replace(p, composer=["Johann Sebastian Bach", "Claudio Monteverdi"][i % 2])
              for i, p in enumerate(bach.pieces[:4])]
    cond = Conditions.build(len(bach.tok), pieces)
    fill = Fill(cond.vocab_size)
    model = build(ModelConfig(vocab_size=fill.vocab_size, context=256, d_model=32, n_layers=1, n_heads=2),
                  jax.random.key(2))
    never = biased(biased(model, [fill.end], -30.0), bar_ids(bach.tok), 3.0)
    config = SampleConfig(num_tokens=128, guidance=2.0)  # a batch twice as wide: with and without the conditions
    for r in infill(never, bach.tok, piece, (3, 4), config, seeds=[0, 1], conditions=cond, asked={"composer": "bach"}):
        assert r.ended and r.n_bars == 2 and list(r.prompt[:3]) == cond.prefix(composer="bach")
    plain = build(ModelConfig(vocab_size=len(bach.tok) + 4, context=256, d_model=32, n_layers=1, n_heads=2),
                  jax.random.key(2))
    with pytest.raises(ValueError, match="guidance"):  # as left to right: guidance needs a conditioned run
        infill(plain, bach.tok, piece, (3, 4), config)


@pytest.mark.filterwarnings("ignore:bars 3-4")
def test_best_of_n_keeps_the_middle_that_leads_best_into_the_next_bar(bach, piece, fim_model):
    tok, pad = bach.tok, tok_lib.special_ids(bach.tok)["pad"]
    model = biased(biased(fim_model, [Fill(len(tok)).end], 8.0), bar_ids(tok), 3.0)  # closes its middles
    pb, kinds = piece_bars(tok, piece), first_kinds(tok)[0]
    i, j = pb.span(3, 4)
    head = lead_in(pb, (3, 4))  # bar 5, whole
    assert (head == pb.ids[j: pb.starts[5]]).all() and (kinds[head] == "Bar").sum() == 1
    assert (kinds[lead_in(pb, (3, 4), lead_bars=2)] == "Bar").sum() == 2
    assert lead_in(pb, (pb.n_bars - 1, pb.n_bars)).tolist() == [tok["EOS_None"]]  # the span ends the piece
    seeds, n = [5], 4  # one request: its 4 candidates decode in the shape the check below draws them in
    ranked = infill(model, tok, piece, (3, 4), CONFIG, seeds=seeds, temperatures=0.9, rerank=n)
    for s, r in zip(seeds, ranked):
        cands = infill(model, tok, piece, (3, 4), CONFIG, seeds=candidate_seeds(s, n), temperatures=0.9)
        assert cands[0].seed == s  # candidate 0 is the plain draw
        bits = lead_in_bits(model, pb, (3, 4), [c.middle for c in cands], pad)
        seq = np.concatenate([pb.ids[:i], cands[0].middle, head])[-model.config.context - 1:]  # what fits
        by_hand = token_bits(model, seq, pad)[-len(head):].sum()
        assert bits[0] == pytest.approx(by_hand, rel=1e-4)  # the bar after, given as much before it as fits
        bits = np.where([c.ended for c in cands], bits, np.inf)
        assert r.seed == s and r.rank == int(np.argmin(bits)) and len(set(np.round(bits, 3))) > 1
        assert np.isfinite(bits).all() and r.ended
        assert (r.middle == cands[r.rank].middle).all() and r.lead_bits == pytest.approx(bits[r.rank], rel=1e-4)
        assert notes(r.score, range(len(r.original.tracks))) == notes(cands[r.rank].score,
                                                                      range(len(r.original.tracks)))
    plain = infill(model, tok, piece, (3, 4), CONFIG, seeds=seeds, temperatures=0.9)
    assert [r.rank for r in plain] == [0] and all(np.isnan(r.lead_bits) for r in plain)
    with pytest.raises(ValueError, match="rerank n=0"):
        infill(model, tok, piece, (3, 4), CONFIG, rerank=0)
