"""Sampling: prefill once, then decode token by token against a KV cache, all inside one compiled loop.

A batch of sequences (the broadcast of seeds x temperatures) decodes together from one prompt: one
(batch, heads, context, head_dim) cache buffer per layer, updated in place, and every matmul over the whole batch.
Generation runs for any length: when the window of ``context`` positions is full, its most recent ``keep`` tokens
(after the condition tokens, which always stay first) are re-prefilled at positions ``0..keep-1`` (learned absolute positions stay in the range the model was trained on)
and decoding continues. Prompt lengths are padded to power-of-two buckets, so a new prompt length rarely compiles.

Classifier-free guidance (``SampleConfig.guidance`` != 1) decodes every sequence twice in the same batch: rows
``0..B-1`` with the prompt's conditions, rows ``B..2B-1`` with them swapped for their kind's "unknown" (the path
``condition_dropout`` trained). Each step mixes the two rows' logits, samples one token and writes it to both.
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tchaikovsky.config import SampleConfig, compute_dtype
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.fim import SENTINELS, Fill, vocab_base
from tchaikovsky.generate.grammar import Grammar
from tchaikovsky.model import GPT, cast

NEG_INF = -1e30
NO_LIMIT = np.iinfo(np.int32).max  # max_bars=None


def filter_logits(logits: jax.Array, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """Temperature-scaled logits (V,) with the tokens outside top-k / top-p / min-p set to ``NEG_INF``.

    top_k=0, top_p=1 and min_p=0 switch each filter off. Ties at a threshold are kept. All controls may be traced
    values, so changing them never recompiles."""
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    V = logits.shape[-1]

    def min_p_filter(logits):
        # min-p, p_i >= min_p * p_max, compared in log space: both sides then share the same normalisation, so the
        # top token (and its ties) always survive, even at min_p = 1; min_p = 0 gives log 0 = -inf: keeps everything
        return logits >= jnp.max(logits) + jnp.log(min_p)

    def sorted_filters(logits):
        desc = jnp.sort(logits)[::-1]
        k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
        keep = logits >= desc[k - 1]
        probs_desc = jax.nn.softmax(desc)
        # top-p: the smallest prefix of the sorted tokens whose mass reaches top_p
        before = jnp.cumsum(probs_desc) - probs_desc  # mass strictly before each sorted token
        n_p = jnp.maximum(jnp.sum(before < top_p), 1)
        # top_p >= 1 is off: the cumulative sum can reach 1.0 in float32 before the tail of a peaked distribution
        keep &= (top_p >= 1.0) | (logits >= desc[n_p - 1])
        return keep & min_p_filter(logits)

    # only top-k and top-p need the (costly) sort; a traced predicate, so switching them never recompiles
    keep = jax.lax.cond((top_k > 0) | (top_p < 1.0), sorted_filters, min_p_filter, logits)
    return jnp.where(keep, logits, NEG_INF)


def _first_max(x: jax.Array) -> jax.Array:
    """``jnp.argmax`` of a NaN-free (V,) array (the first index of the maximum) from two plain reductions, which
    XLA:CPU vectorises (its (value, index) pair reduction it does not)."""
    return jnp.min(jnp.where(x == jnp.max(x), jnp.arange(x.shape[-1]), x.shape[-1]))


def sample_uniform(logits, u, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """One token id from logits (V,) and a uniform ``u`` in [0, 1); temperature 0 is greedy (the first top logit).

    Inverse-CDF sampling of the filtered softmax: the first token whose cumulative (unnormalised) probability reaches
    ``(1 - u) * total``, so one random number per token (Gumbel-max needs V). Filtered tokens have probability
    exactly 0 and are never drawn (should rounding in the cumulative sum land on one, the top token is taken)."""
    filtered = filter_logits(logits, temperature, top_k, top_p, min_p)
    p = jnp.exp(filtered - jnp.max(filtered))  # the top token has 1, filtered ones exactly 0
    cdf = jnp.cumsum(p)
    tok = jnp.minimum(jnp.sum(cdf < (1.0 - u) * cdf[-1]), logits.shape[-1] - 1)
    top = _first_max(logits)
    return jnp.where((temperature <= 0) | (p[tok] <= 0), top, tok)


def sample_token(logits, key, temperature, top_k=0, top_p=1.0, min_p=0.0) -> jax.Array:
    """One token id from logits (V,) with a PRNG key (``sample_uniform`` of ``jax.random.uniform(key)``); temperature
    0 is greedy."""
    return sample_uniform(logits, jax.random.uniform(key), temperature, top_k, top_p, min_p)


def _uniforms(key, n: int, block: int = 256) -> jax.Array:
    """(n,) uniforms in [0, 1) for the n sampling steps of one sequence, drawn at once. Block b comes from
    ``fold_in(key, b)``, so a longer run extends a shorter one's draws."""
    blocks = jnp.arange(-(-n // block))
    u = jax.vmap(lambda b: jax.random.uniform(jax.random.fold_in(key, b), (block,)))(blocks)
    return u.reshape(-1)[:n]


def default_keep(context: int) -> int:
    """Tokens kept on a window slide unless ``SampleConfig.keep`` says otherwise: half the context. Every new token
    then sees at least ``keep`` tokens before it, and a slide (a prefill of ``keep`` tokens) comes once every
    ``context - keep`` tokens."""
    return max(1, context // 2)


def kept_prompt(prompt, context: int, pinned: int = 0) -> np.ndarray:
    """The part of ``prompt`` that ``generate`` continues, and that starts each sequence it returns: the last
    ``context`` tokens (int32, 1-D); with ``pinned``, its first ``pinned`` tokens (the condition tokens) and the
    last ``context - pinned``."""
    prompt = np.asarray(prompt, dtype=np.int32).reshape(-1)
    if len(prompt) <= context:
        return prompt
    return np.concatenate([prompt[:pinned], prompt[len(prompt) - (context - pinned):]])


def leading_conditions(prompt, conditions) -> int:
    """How many condition tokens open ``prompt`` (0 without ``conditions``): what a window slide keeps in front."""
    if conditions is None:
        return 0
    flags = conditions.is_condition(np.asarray(prompt).reshape(-1))
    return int(flags.argmin()) if not flags.all() else int(flags.size)


def unconditioned(prompt, conditions, pinned: int) -> np.ndarray:
    """``prompt`` with its first ``pinned`` tokens (its conditions) replaced by their kind's unknown id: the
    unconditional half of a guided batch, as ``condition_dropout`` showed it to the model in training."""
    prompt = np.array(prompt, dtype=np.int32).reshape(-1)
    prompt[:pinned] = conditions.dropout_targets()[prompt[:pinned]]
    return prompt


def mix_guidance(logits, ctrl):
    """Raw logits (2B, V) of a guided batch (conditioned rows first) -> (B, V) ``g * cond + (1 - g) * uncond``,
    which is exactly the conditioned logits at g = 1; unguided logits (B, V) pass through."""
    if "guidance" not in ctrl:
        return logits
    cond, uncond = jnp.split(logits, 2)
    return ctrl["guidance"] * cond + (1.0 - ctrl["guidance"]) * uncond


def _bucket(n: int, context: int) -> int:
    return min(context, max(16, 1 << (max(n, 1) - 1).bit_length()))


def _constrain(logits, window, prev, j, ctrl):
    """EOS held back before ``min_tokens``, grammar mask and repetition penalty on raw logits (B, V), before
    temperature and filters; ``prev`` (B,) the tokens before these, ``j`` counts the new tokens before this one."""
    V = logits.shape[-1]
    logits = jnp.where((jnp.arange(V) == ctrl["eos"]) & (j < ctrl["min_tokens"]), NEG_INF, logits)
    if "ban" in ctrl:  # (V,) ids never to sample (a FIM-capable model's sentinels, left to right; ``ban``)
        logits = jnp.where(ctrl["ban"], NEG_INF, logits)
    if "table" in ctrl:
        ok = ctrl["table"][ctrl["last"][prev]][:, ctrl["first"]] | ~ctrl["grammar"]  # (B, V): may follow prev
        ok = ok | ~ok.any(axis=-1, keepdims=True)  # never mask everything
        logits = jnp.where(ok, logits, NEG_INF)
    if "penalty" in ctrl:  # CTRL-style: tokens already in the window are made less likely
        seen = jax.vmap(lambda w: jnp.zeros(V, bool).at[w].set(True))(window)
        p = ctrl["penalty"]
        logits = jnp.where(seen, jnp.where(logits > 0, logits / p, logits * p), logits)
    return logits


def _hold_end(logits, bars, ctrl):
    """``exact_bars``: the end token (``ctrl["eos"]``) masked while fewer than ``exact_bars`` new bars are out, and so
    is any id that would take the count past it (one holding several Bars); logits (B, V), bars (B,)."""
    early = (bars < ctrl["exact_bars"])[:, None]
    past = bars[:, None] + ctrl["bars"][None, :] > ctrl["exact_bars"]
    is_end = jnp.arange(logits.shape[-1]) == ctrl["eos"]
    return jnp.where(early & (is_end | past), NEG_INF, logits)


@partial(eqx.filter_jit, donate="none")
def _generate(model: GPT, window, prompt_len, keys, temps, ctrl, *, steps, keep, bucket, pinned=0):
    """window: (B, C) tokens with the prompt in [:prompt_len]; returns (B, steps) sampled tokens, and (B, steps)
    flags saying which were really emitted (False after EOS or past ``max_bars``).

    ``ctrl`` (arrays, see ``generate``): always ``top_k``, ``top_p``, ``min_p``, ``eos`` (-1: none), ``pad`` and
    ``min_tokens``; with a grammar ``first``/``last``/``table``/``grammar`` (on or off) and ``bars``/``max_bars``;
    ``penalty`` for the repetition penalty over the current window; ``ban`` (V,) bool for ids never sampled;
    ``exact_bars`` (with ``bars``): the end waits for that many new bars and replaces a token that would open one
    more (``_hold_end``); ``guidance`` for a guided batch, whose window has 2B rows (B = ``keys``' rows:
    conditioned, then unconditioned) and whose two halves get the same tokens."""
    C = model.config.context
    B = keys.shape[0]
    both = (lambda t: jnp.concatenate([t, t])) if "guidance" in ctrl else (lambda t: t)  # (B,) -> window rows
    dec = model.decoder()  # per-layer weights, sliced once here rather than in every step of the loop below
    cache = model.init_cache(model.embed.weight.dtype, batch=window.shape[0])
    logits, cache = model.prefill(window[:, :bucket], cache)  # the whole batch at once: (B or 2B, bucket, V)
    logits = jax.lax.dynamic_index_in_dim(logits, prompt_len - 1, axis=1, keepdims=False)
    eos, pad = ctrl["eos"], ctrl["pad"]

    def slide(args):  # keep the first ``pinned`` tokens (the conditions) and the latest keep - pinned
        cache, window = args
        window = jnp.concatenate([window[:, :pinned], window[:, C - keep + pinned:],
                                  jnp.full_like(window[:, : C - keep], pad)], axis=1)
        _, cache = model.prefill(window[:, :keep], cache)  # the stale entries after keep are never read
        return cache, window

    # the uniforms that drive the sampler, one per sequence and step (+1: the rotated loop samples once more)
    uniforms = jax.vmap(partial(_uniforms, n=steps + 1))(keys)  # (B, steps + 1)
    filters = (ctrl["top_k"], ctrl["top_p"], ctrl["min_p"])

    def sample(logits, window, j, done, prev, bars):
        """Token j of every sequence from its raw logits and current window (before any slide)."""
        logits = _constrain(mix_guidance(logits, ctrl), window[:B], prev, j, ctrl)
        if "exact_bars" in ctrl:
            logits = _hold_end(logits, bars, ctrl)
        u = jax.lax.dynamic_index_in_dim(uniforms, j, axis=1, keepdims=False)
        tok = jax.vmap(sample_uniform, in_axes=(0, 0, 0, None, None, None))(logits, u, temps, *filters)
        emitted = ~done
        if "exact_bars" in ctrl:  # the last bar is out: a token opening one more ends the sequence instead
            tok = jnp.where(bars + ctrl["bars"][tok] > ctrl["exact_bars"], eos, tok)
        if "bars" in ctrl:
            bars = bars + ctrl["bars"][tok]
            emitted &= bars <= ctrl["max_bars"]
        tok = jnp.where(emitted, tok, pad)
        done = ~emitted | (tok == eos)
        return tok, emitted, done, bars

    # The loop is rotated so that a window slide never sits inside the per-token step (a ``lax.cond`` holding the
    # cache in every step would make XLA copy the cache around it): ``tok`` is sampled at the end of the previous
    # step (from the window as it was then), and step j writes and decodes it, then samples the next. Steps run in
    # segments that end when the window is full; the slide opens the next segment.
    def step(j, state):
        cache, window, pos, tok, emitted, done, bars, out_tok, out_emitted = state
        out_tok = out_tok.at[j].set(tok)
        out_emitted = out_emitted.at[j].set(emitted)
        window = window.at[:, pos].set(both(tok))
        logits, cache = dec.decode(both(tok)[:, None], cache, pos)
        nxt, emitted, done, bars = sample(logits[:, 0], window, j + 1, done, tok, bars)
        return cache, window, pos + 1, nxt, emitted, done, bars, out_tok, out_emitted

    def segment(carry):
        j, state = carry
        cache, window, pos, *rest = state
        cache, window = jax.lax.cond(pos == C, slide, lambda a: a, (cache, window))
        pos = jnp.where(pos == C, keep, pos)
        n = jnp.minimum(steps - j, C - pos)  # steps until the window is full again (or the end)
        state = jax.lax.fori_loop(j, j + n, step, (cache, window, pos, *rest))
        return j + n, state

    prev0 = window[jnp.arange(B), prompt_len - 1]
    done0, bars0 = jnp.zeros(B, bool), jnp.zeros(B, jnp.int32)
    tok0, emitted0, done0, bars0 = sample(logits, window, 0, done0, prev0, bars0)
    out = (jnp.zeros((steps, B), jnp.int32), jnp.zeros((steps, B), bool))
    state = (cache, window, prompt_len, tok0, emitted0, done0, bars0, *out)
    _, state = jax.lax.while_loop(lambda c: c[0] < steps, segment, (jnp.int32(0), state))
    toks, emitted = state[-2:]
    return toks.T, emitted.T  # (B, steps) each


def _ban(V: int, fill: Fill | None, end, ban) -> np.ndarray:
    """The (V,) ids ``generate`` never samples: ``ban``, and the sentinels of a FIM-capable model but ``end``."""
    mask = np.zeros(V, bool) if ban is None else np.array(ban, bool).reshape(-1)
    if mask.shape != (V,):
        raise ValueError(f"ban must be a ({V},) bool mask over the model's ids, got shape {mask.shape}")
    if fill is not None:
        mask[fill.ids()] = True
    if end is not None:
        mask[end] = False
    return mask


def _controls(model: GPT, config: SampleConfig, tok, conditions, special: dict, *, end, ban, exact_bars,
              guided: bool) -> dict:
    """``_generate``'s ``ctrl`` (numpy arrays) for ``generate``'s arguments."""
    ctrl = dict(top_k=np.int32(config.top_k), top_p=np.float32(config.top_p), min_p=np.float32(config.min_p),
                eos=np.int32(special["eos"] if end is None else end), pad=np.int32(special["pad"]),
                min_tokens=np.int32(config.min_tokens))
    base = vocab_base(len(tok), conditions) if tok is not None else None
    fill = Fill(base) if base is not None and model.config.vocab_size == base + len(SENTINELS) else None
    if fill is not None or ban is not None:  # a FIM-capable model: never a sentinel (but ``end``)
        ctrl["ban"] = _ban(model.config.vocab_size, fill, end, ban)
    if config.grammar or config.max_bars is not None or exact_bars is not None:
        rules = Grammar(tok, conditions, fill)
        if len(rules.first) != model.config.vocab_size:
            what = "tokenizer and conditions" if conditions is not None else "tokenizer (pass the run's conditions=)"
            raise ValueError(f"the model has {model.config.vocab_size} ids, the {what} {len(rules.first)}")
        ctrl.update(first=rules.first, last=rules.last, table=rules.table, grammar=np.bool_(config.grammar),
                    bars=rules.bars, max_bars=np.int32(NO_LIMIT if config.max_bars is None else config.max_bars))
    if config.repetition_penalty != 1.0:
        ctrl["penalty"] = np.float32(config.repetition_penalty)
    if exact_bars is not None:
        ctrl["exact_bars"] = np.int32(exact_bars)
    if guided:
        ctrl["guidance"] = np.float32(config.guidance)
    return ctrl


def generate(model: GPT, prompt, config: SampleConfig, *, seeds=0, temperatures=1.0, tok=None,
             dtype=None, conditions=None, end: int | None = None, ban=None, exact_bars: int | None = None,
             _guided: bool | None = None) -> list[np.ndarray]:
    """Continue ``prompt`` by up to ``config.num_tokens`` new tokens, one sequence per (seed, temperature) pair.

    Arguments:
        model: the GPT; its ``config.context`` is the window C.
        prompt: 1-D token ids, at least one (``[BOS]`` for unconditional); only its last C tokens are seen
            (``kept_prompt``).
        config: the sampling controls (``SampleConfig``; ``max_seconds`` is ``write_samples``' business).
        seeds, temperatures: ints and floats, or arrays of them; the batch is their numpy broadcast (e.g.
            ``seeds=[[0], [1]], temperatures=[0.8, 1.2]`` is a 2 x 2 grid, flattened row-major), decoded in one call.
            Temperature 0 is greedy.
        tok: the tokenizer. With it, a sequence stops after its EOS, its PAD fills the window after that, and
            ``config.grammar`` and ``config.max_bars`` are available (both raise ValueError without it). Without
            it, every sequence runs ``num_tokens`` tokens.
        dtype: compute dtype (default: ``compute_dtype("auto")``, bf16 on accelerators).
        conditions: the run's condition vocabulary (``data.conditions``), when its model has one: the grammar then
            covers the condition ids too (a conditioned prompt is ``conditions.prefix(...) + [BOS, ...]``), and
            the condition tokens that open the prompt stay at the front of the window whenever it slides (the
            model was trained with every window opening with its piece's conditions: ``Shards.batch``).
            A FIM-capable model (``data.fim``: 4 more ids) never samples its sentinels, but ``end``.
            ``config.guidance`` != 1 needs them and a prompt that opens with condition tokens (all "unknown" is
            allowed: both halves are then the same); it decodes twice the batch in the same single call.
        end: the id that ends a sequence instead of EOS (``data.fim.Fill.end`` for a middle); off by default.
        ban: (V,) bool, ids never sampled; off by default.
        exact_bars: end each sequence after exactly this many new bars (needs ``tok``): its end (EOS or ``end``) is
            held back before them, and replaces a token that would open one more; off by default.
        _guided: tests only: True takes the guided path even at ``guidance`` = 1 (None: when ``guidance`` != 1).

    Returns one int32 array per sequence: the kept prompt, then the new tokens (the end included, when one ended it).
    Changing a config value recompiles only as ``SampleConfig`` says; so does switching between needing the
    tokenizer's grammar (``grammar`` or ``max_bars``) and not."""
    C = model.config.context
    pinned = leading_conditions(prompt, conditions)
    prompt = kept_prompt(prompt, C, pinned)
    if prompt.size == 0:
        raise ValueError("prompt must hold at least one token (use [BOS] for unconditional generation)")
    keep = config.keep or default_keep(C)
    if not pinned < keep < C:
        raise ValueError(f"keep={keep} must be in {pinned + 1}..{C - 1} (the model's context is {C}"
                         + (f"; the {pinned} condition tokens are always kept)" if pinned else ")"))
    counting = config.max_bars is not None or exact_bars is not None
    if end is not None and not 0 <= end < model.config.vocab_size or exact_bars is not None and exact_bars < 1:
        raise ValueError(f"end={end!r} must be an id of the model's {model.config.vocab_size}, exact_bars="
                         f"{exact_bars!r} an integer >= 1")
    if tok is None and (config.grammar or counting):
        raise ValueError("grammar, max_bars and exact_bars need the tokenizer: pass tok=, or "
                         "SampleConfig(grammar=False)")
    guided = config.guidance != 1 if _guided is None else _guided
    if guided and not pinned:
        raise ValueError(f"guidance={config.guidance} needs a conditioned prompt in a conditioned run: "
                         + ("pass the run's conditions=" if conditions is None else
                            "the prompt opens with no condition tokens (conditions.prefix(...) + [BOS, ...])"))
    special = tok_lib.special_ids(tok) if tok is not None else {"eos": -1, "pad": 0}
    seeds, temps = np.broadcast_arrays(np.atleast_1d(seeds), np.atleast_1d(np.asarray(temperatures, np.float32)))
    B = seeds.size
    window = np.full((2 * B if guided else B, C), special["pad"], np.int32)
    window[:B, : prompt.size] = prompt
    if guided:  # rows B..2B-1: the same prompt asking for "unknown" everything
        window[B:, : prompt.size] = unconditioned(prompt, conditions, pinned)
    keys = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(jnp.asarray(seeds.ravel(), jnp.uint32))
    keys = jax.vmap(jax.random.wrap_key_data)(keys)
    ctrl = _controls(model, config, tok, conditions, special, end=end, ban=ban, exact_bars=exact_bars,
                     guided=guided)
    toks, emitted = _generate(
        cast(model, dtype or compute_dtype("auto")), jnp.asarray(window), jnp.int32(prompt.size), keys,
        jnp.asarray(temps.ravel()), {k: jnp.asarray(v) for k, v in ctrl.items()},
        steps=int(config.num_tokens), keep=int(keep), bucket=_bucket(prompt.size, C), pinned=pinned,
    )
    return [np.concatenate([prompt, row[ok]]) for row, ok in zip(np.asarray(toks), np.asarray(emitted))]
