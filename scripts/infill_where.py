"""Where a fill-in-the-middle prompt loses against the prefix alone, token by token (issue #22's diagnosis).

    python scripts/infill_where.py --run runs/conditioning-fim/finetune --role validation

For the role's held-out pieces (``--bars`` 5-8 of their first ``--of-bars`` 16 taken out, as ``evaluation.infill``), by
teacher forcing
with all the suffix that fits (the run's prompt order): the probability of ``Fill_end`` at each bar line inside the
span and right after it (does the model know where the middle ends?); the bits of the last bar's tokens given both
sides minus given the prefix alone, split into the token that opens the bar and the others; and the ``--top``
tokens that lose most, with what the model expected instead, given both sides and left to right.
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run trained with fim_rate > 0")
    ap.add_argument("--role", default="validation", choices=("validation", "test"))
    ap.add_argument("--pieces", type=int, default=32)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--bars", default="5-8", help="the span taken out, first-last")
    ap.add_argument("--of-bars", type=int, default=16, help="each piece cut to its first this many bars")
    args = ap.parse_args(argv)

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from tchaikovsky.data.conditions import load_conditions
    from tchaikovsky.data.fim import SENTINELS, arrange, order_of
    from tchaikovsky.data.tokenizer import base_tokens, special_ids
    from tchaikovsky.evaluation.infill import _teacher_forced, held_out_cuts
    from tchaikovsky.evaluation.intervals import fmt, mean_interval
    from tchaikovsky.evaluation.protocol import role
    from tchaikovsky.evaluation.report import load_run
    from tchaikovsky.generate.bars import parse_bars
    from tchaikovsky.generate.infill import fill_of
    from tchaikovsky.model import cast

    run = load_run(args.run)
    cond = load_conditions(args.run, run.tok)
    fill, order, pad = fill_of(run.model, run.tok, cond), order_of(run.meta), special_ids(run.tok)["pad"]
    C, names = run.model.config.context, base_tokens(run.tok)
    sentinel = dict(zip(fill.ids().tolist(), SENTINELS))
    name = lambda t: "+".join(names[t]) if t < len(names) else sentinel.get(t, f"condition {t}")  # noqa: E731
    logp = eqx.filter_jit(lambda m, x: jax.nn.log_softmax(jax.vmap(cast(m, jnp.float32))(x), -1))

    def log2p(seq):  # (len, V): log2 p of each next token after position t
        seq = np.asarray(seq[:C], np.int32)
        window = np.full((1, C), pad, np.int32)
        window[0, : len(seq)] = seq
        return np.asarray(logp(run.model, jnp.asarray(window)))[0, : len(seq)] / math.log(2)

    bars = parse_bars(args.bars)
    a, b = bars
    pieces, _ = held_out_cuts(run, role(args.role).split, bars, args.of_bars, args.pieces)
    p_end, opening, others, lost = [[] for _ in range(b - a + 1)], [], [], []
    for n, (pb, front, (i, j)) in enumerate(pieces):
        cut = _teacher_forced(run, pb, front, (i, j), bars, fill)
        if cut is None:
            continue
        prefix, _suffix, middle, _notes = cut
        prompt = arrange(front, prefix, _suffix, fill, order)
        left = np.concatenate([np.asarray(front, np.int32), prefix, middle])
        both, ltr = log2p(np.concatenate([prompt, middle, [fill.end]])), log2p(left)
        at_b, at_l = len(prompt) - 1, len(left) - len(middle) - 1  # the row predicting middle[0]
        opens = np.sort(pb.starts[(pb.starts >= i) & (pb.starts < j)]) - i
        if len(opens) != b - a + 1:  # a bar of the span opens inside a rest: its line has no token to look at
            continue
        for k, t in enumerate([*opens[1:], len(middle)]):
            p_end[k].append(2.0 ** both[at_b + t, fill.end])
        for t in range(opens[-1], len(middle)):
            loss = ltr[at_l + t, middle[t]] - both[at_b + t, middle[t]]  # bits given both sides minus prefix alone
            (opening if t == opens[-1] else others).append(loss)
            lost.append((loss, n, name(middle[t]), -both[at_b + t, middle[t]], -ltr[at_l + t, middle[t]],
                         name(int(np.argmax(both[at_b + t]))), name(int(np.argmax(ltr[at_l + t])))))
    print(f"{len(opening)} pieces of the {args.role} role, bars {a}-{b} of {args.of_bars}, {order.upper()} prompts")
    for k, where in enumerate([*(f"bar {x}" for x in range(a + 1, b + 1)), f"after bar {b} (where it ends)"]):
        m = mean_interval(p_end[k])
        print(f"p(Fill_end) at the line opening {where}: {fmt(m['mean'])} [{fmt(m['lo'])}, {fmt(m['hi'])}]")
    for what, xs in ((f"the token opening bar {b}", opening), (f"the other tokens of bar {b}", others)):
        m = mean_interval(xs)
        print(f"{what}: both sides - prefix alone {fmt(m['mean'])} [{fmt(m['lo'])}, {fmt(m['hi'])}] bits per token, "
              f"{sum(xs):.1f} bits in all ({len(xs)} tokens)")
    print(f"\nthe {args.top} tokens of bar {b} that lose most:")
    print("| piece | token | bits, both sides | bits, prefix alone | expected, both sides | expected, prefix alone |")
    print("|---|---|---|---|---|---|")
    for loss, n, tok, b, left_bits, eb, el in sorted(lost, reverse=True)[: args.top]:
        print(f"| {n} | {tok} | {b:.2f} | {left_bits:.2f} | {eb} | {el} |")


if __name__ == "__main__":
    main()
