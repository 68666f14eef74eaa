"""The grammar taken from the tokenizer, its mask in the sampler and the sampler's other controls (repetition
penalty, bars), on real tokenizers."""

import jax
import miditok
import numpy as np
import pytest

from tchaikovsky.config import ModelConfig, SampleConfig
from tchaikovsky.data import tokenizer
from tchaikovsky.data.fim import Fill
from tchaikovsky.generate import grammar
from tchaikovsky.generate.sampling import generate
from tchaikovsky.model import build


@pytest.fixture(scope="module")
def rules(bach):
    return grammar.Grammar(bach.tok)


@pytest.fixture(scope="module")
def untrained(bach):
    cfg = ModelConfig(vocab_size=len(bach.tok), context=64, d_model=32, n_layers=1, n_heads=2)
    return build(cfg, jax.random.key(0))


def test_real_music_obeys_the_grammar(bach, rules):
    for split in bach.shards.splits:
        for i in range(len(bach.shards.pieces(split))):
            assert rules.invalid_share(bach.shards.piece_ids(split, i)) == 0.0
        assert rules.invalid_share(np.asarray(bach.shards._split(split))) == 0.0  # the joins too: EOS -> BOS
    # and so do the fill-in-the-middle training windows, under the grammar with the sentinels' rows
    fill = Fill(len(bach.tok))
    with_fill = grammar.Grammar(bach.tok, fill=fill)
    assert len(with_fill.first) == len(bach.tok) + 4
    for step in range(4):  # in both orders: PSM and SPM windows alike
        windows = bach.shards.batch(step, 16, 255, fim_rate=1.0, fim_spm=0.5, fill=fill)
        assert fill.is_sentinel(windows).any(axis=1).sum() >= 10
        assert all(with_fill.invalid_share(w) == 0.0 for w in windows)
    # what sampling relies on: the middle opens with a bar; it may end only where a bar could begin; then PAD
    mid, end = (with_fill.kinds.index(k) for k in ("Fill_middle", "Fill_end"))
    assert with_fill.allowed(fill.middle)[with_fill.first == with_fill.kinds.index("Bar")].all()
    assert with_fill.allowed(fill.middle).sum() == (with_fill.first == with_fill.kinds.index("Bar")).sum()
    pitch = next(i for i in range(len(bach.tok)) if with_fill.kinds[with_fill.last[i]] == "Pitch")
    assert not with_fill.allowed(pitch)[fill.end] and with_fill.allowed(bach.tok["BOS_None"])[fill.suffix]
    assert with_fill.allowed(fill.end)[bach.tok["PAD_None"]] and not with_fill.table[end, mid]
    with pytest.raises(ValueError, match="sentinels start at id"):
        grammar.Grammar(bach.tok, fill=Fill(len(bach.tok) + 1))


def test_every_token_has_a_kind_and_bars_are_counted(bach, rules):
    tok = bach.tok
    specials = tokenizer.special_ids(tok)
    assert rules.first[specials["bos"]] == rules.kinds.index("BOS")
    # every id has a kind the table has a row for; only BPE's word-boundary marker stands for no base token
    assert rules.first.min() >= 0 and rules.first.max() < len(rules.kinds)
    assert (rules.first == rules.kinds.index(grammar.EMPTY)).sum() <= 1
    ids = tokenizer.encode_file(tok, bach.pieces[0].path)
    remi = tokenizer.token_strings(tok, bach.pieces[0].path, n=10**6)["remi_tokens"]
    assert rules.bars[ids].sum() == remi.count("Bar_None") > 10


def test_base_tokens_of_bpe_ids_spell_the_piece(bach):
    """miditok's public decode_token_ids maps each BPE id to its run of base tokens: the runs of an encoded piece,
    joined, are the piece's base tokens (fails loudly if miditok changes what it returns)."""
    tok = bach.tok
    base = grammar.base_tokens(tok)
    assert len(base) == len(tok) and any(len(run) > 1 for run in base)
    ids = tokenizer.encode_file(tok, bach.pieces[0].path)[1:-1]
    remi = tokenizer.token_strings(tok, bach.pieces[0].path, n=10**6)["remi_tokens"]
    assert [t for i in ids for t in base[i]] == remi


def test_the_table_is_miditoks_graph_plus_our_framing():
    tok = tokenizer.make_tokenizer()
    rows = grammar.successions(tok)
    graph = tok.tokens_types_graph
    for k in ("Bar", "Position", "Program", "Pitch", "Velocity", "Duration", "Rest", "Tempo", "TimeSig"):
        assert rows[k] - {"EOS", grammar.EMPTY} == graph[k] - {"PAD", "EOS"}, k  # musical successions: miditok's
    assert rows["BOS"] == {"Bar", grammar.EMPTY} and rows["EOS"] == {"PAD", "BOS"} and rows["PAD"] == {"PAD"}
    ends = {"Duration", "Rest", "Tempo", "TimeSig"}  # the kinds a Bar may follow
    assert {k for k, nexts in rows.items() if "EOS" in nexts} == ends
    assert {k for k, nexts in rows.items() if grammar.EMPTY in nexts} == ends | {"BOS"}
    assert rows[grammar.EMPTY] == {"Bar", "Position", "Program", "Rest", "Tempo", "TimeSig"}
    assert "EOS" not in rows["Pitch"] | rows["Velocity"]  # a piece never ends inside a note


def test_every_kind_of_the_vocabulary_needs_a_row():
    """A new kind of token (here a condition token added as a special token) is an explicit decision, never a
    silent "anything goes"."""
    base = tokenizer.make_tokenizer()
    specials = [*tokenizer.SPECIAL_TOKENS, "Composer_bach"]
    tok = miditok.REMI(miditok.TokenizerConfig(**{**base.config.to_dict(), "special_tokens": specials}))
    assert "Composer_bach" in tok.vocab
    with pytest.raises(ValueError, match=r"\['Composer'\].*no row"):
        grammar.Grammar(tok)


def test_broken_successions_are_found():
    tok = tokenizer.make_tokenizer()
    rules = grammar.Grammar(tok)
    ok = [tok[t] for t in ("BOS_None", "Bar_None", "TimeSig_4/4", "Position_0", "Program_0", "Pitch_60",
                           "Velocity_63", "Duration_1.0.8", "EOS_None")]
    assert rules.invalid_share(ok) == 0.0
    bad = [tok[t] for t in ("Pitch_60", "Pitch_62", "Velocity_63")]  # a pitch must be followed by its velocity
    assert rules.invalid_share(bad) == 0.5
    assert rules.invalid_share([tok["Pitch_60"], tok["EOS_None"]]) == 1.0  # no ending inside a note


def test_mask_removes_invalid_successions(bach, rules, untrained):
    bos = tokenizer.special_ids(bach.tok)["bos"]
    cfg = SampleConfig(num_tokens=200, grammar=False)
    free = generate(untrained, [bos], cfg, seeds=[0, 1, 2], tok=bach.tok)
    masked = generate(untrained, [bos], SampleConfig(num_tokens=200), seeds=[0, 1, 2], tok=bach.tok)
    share_free = np.mean([rules.invalid_share(s) for s in free])
    share_masked = np.mean([rules.invalid_share(s) for s in masked])
    assert share_free > 0.2 and share_masked == 0.0
    for seq in masked:
        assert tokenizer.decode_ids(bach.tok, seq).note_num() > 0  # every note description is complete


def test_max_bars_stops_each_sequence(bach, rules, untrained):
    bos = tokenizer.special_ids(bach.tok)["bos"]
    for grammar_on in (True, False):  # the bar counts come from the tokenizer, with or without the mask
        # an untrained model writes few bar lines (4 of 600 ids hold one): one bar and eight sequences make it
        # certain, whatever the platform's random streams, that some sequence reaches a second bar line and stops
        cfg = SampleConfig(num_tokens=300, max_bars=1, grammar=grammar_on)
        seqs = generate(untrained, [bos], cfg, seeds=list(range(8)), tok=bach.tok)
        for seq in seqs:
            assert rules.bars[seq[1:]].sum() <= 1
        assert any(len(seq) < 301 for seq in seqs)


def test_repetition_penalty_avoids_tokens_in_the_window(bach, untrained):
    bos = tokenizer.special_ids(bach.tok)["bos"]
    plain = generate(untrained, [bos], SampleConfig(num_tokens=40, grammar=False), temperatures=0.0)[0][1:]
    cfg = SampleConfig(num_tokens=40, grammar=False, repetition_penalty=1e6)
    penalised = generate(untrained, [bos], cfg, temperatures=0.0)[0][1:]
    assert len(set(plain.tolist())) < len(plain)  # greedy decoding of an untrained model repeats itself
    assert len(set(penalised.tolist())) == len(penalised)


def test_conditioned_pieces_obey_the_grammar_and_sampling_follows_the_prefix(bach):
    from dataclasses import replace

    from tchaikovsky.data import shards as shards_lib
    from tchaikovsky.data.conditions import Conditions

    pieces = [replace(p, composer=["Johann Sebastian Bach", None][i % 2], period="Baroque")
              for i, p in enumerate(bach.pieces[:6])]
    cond = Conditions.build(len(bach.tok), pieces)
    rules = grammar.Grammar(bach.tok, cond)
    assert len(rules.first) == cond.vocab_size
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        sh = shards_lib.Shards(shards_lib.build_shards(bach.tok, pieces, d, conditions=cond))
        for split in sh.splits:  # every piece, and the joins between pieces (EOS -> the next piece's conditions)
            assert rules.invalid_share(np.asarray(sh._split(split))) == 0.0
        fill = Fill(cond.vocab_size)  # fill-in-the-middle windows too, their conditions first
        windows = sh.batch(0, 32, 255, fim_rate=1.0, fim_spm=0.5, fill=fill)
        reordered = windows[np.isin(windows[:, 3], [fill.prefix, fill.suffix])]  # (a row left as it was may
        assert len(reordered) >= 20 and 0 < (reordered[:, 3] == fill.suffix).sum() < len(reordered)  # open mid-piece)
        rules_fill = grammar.Grammar(bach.tok, cond, fill)
        assert all(rules_fill.invalid_share(w) == 0.0 for w in reordered)  # each window on its own
    ids = cond.ids()
    assert rules.allowed(ids["Period_Baroque"])[ids["Composer_unknown"]]
    assert not rules.allowed(ids["Period_Baroque"])[bach.tok["BOS_None"]]  # the composer comes first
    assert rules.allowed(ids["Instrumentation_unknown"])[bach.tok["BOS_None"]]
    assert not rules.allowed(bach.tok["BOS_None"])[cond.is_condition(np.arange(cond.vocab_size))].any()
    # a model with the conditions' ids samples music after the prefix, never a condition token
    cfg = ModelConfig(vocab_size=cond.vocab_size, context=64, d_model=32, n_layers=1, n_heads=2)
    model = build(cfg, jax.random.key(1))
    prompt = np.asarray(cond.prefix(composer="bach") + [bach.tok["BOS_None"]], np.int32)
    out = generate(model, prompt, SampleConfig(num_tokens=150, min_tokens=150), seeds=[0, 1, 2], tok=bach.tok,
                   conditions=cond)  # past the context of 64: the window slides with the conditions pinned
    for seq in out:
        assert list(seq[:4]) == list(prompt) and not cond.is_condition(seq[4:]).any()
        assert rules.invalid_share(seq) == 0.0
    with pytest.raises(ValueError, match="pass the run's conditions"):
        generate(model, prompt, SampleConfig(num_tokens=4), tok=bach.tok)
