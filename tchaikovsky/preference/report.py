"""What a preference run shows: the per-round table, and the same prompt and seed before and after the rounds."""

from __future__ import annotations

import math
from pathlib import Path

from tchaikovsky.evaluation.intervals import Rate, fmt
from tchaikovsky.preference.evaluate import eval_dir
from tchaikovsky.preference.rounds import prompt_key
from tchaikovsky.render import display


def summary_table(result: dict) -> str:
    """The per-round table as Markdown: the test role's figures (the judge's recognition with its interval and n,
    and its difference to round 0 with Newcombe's interval), the validation judge that chooses the round, then the
    chosen round and its test gain."""
    def f(x, d=3):
        return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"

    gains = {g["round"]: g for g in result.get("per_round", [])}
    lines = ["| round | scorer ↑ | judge, test: recognised as asked ↑ | vs round 0 (test) | judge, validation | "
             "mean OA vs held-out ↑ | bits/note ↓ | NLL under round 0 | diversity | failed | copies |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["table"]:
        g = gains.get(m["round"])
        diff = "–" if not g or m["round"] == 0 else \
            f"{fmt(g['diff'], True)} [{fmt(g['lo'], True)}, {fmt(g['hi'], True)}]"
        lines.append(f"| {m['round']} | {f(m['scorer'])} | {Rate.from_dict(m['judge_rate'])} | {diff} | "
                     f"{Rate.from_dict(m['validation']['judge_rate'])} | {f(m['oa'], 2)} | "
                     f"{f(m['bits_per_note'], 2)} | {f(m['nll_round0'], 2)} | {f(m['diversity'], 3)} | "
                     f"{m['failed']}/{m['n']} | {m['copies']}/{m['n']} |")
    if result.get("chosen_round") is not None and result.get("test_gain"):
        g = result["test_gain"]
        lines.append(f"\nChosen on validation: round {result['chosen_round']}. Its test gain over round 0: "
                     f"{fmt(g['diff'], True)} [{fmt(g['lo'], True)}, {fmt(g['hi'], True)}] "
                     f"({'significant' if g['significant'] else 'not significant: the interval includes 0'}).")
    return "\n".join(lines)


def show_before_after(run_dir: str | Path, result: dict, *, n: int = 2, preview_seconds: float = 30.0) -> list:
    """Display, for the first prompt, ``n`` evaluation pieces of round 0 beside the same prompt and seed from the
    last finished round (piano roll, a player of ``preview_seconds``, links). Returns the (before, after) paths."""
    table = result["table"]
    if len(table) < 2:
        print("no finished round yet: nothing to compare")
        return []
    last, key = table[-1]["round"], prompt_key(result["prompts"][0])
    pairs = []
    for k in range(n):
        before = eval_dir(run_dir, "test", 0) / f"{key}-{k}.mid"
        after = eval_dir(run_dir, "test", last) / f"{key}-{k}.mid"
        if not (before.is_file() and after.is_file()):
            break
        for path, when in ((before, "round 0"), (after, f"round {last}")):
            display.show_sample(path, title=f"{key.rsplit('__', 1)[0]}, piece {k}: {when}",
                                preview_seconds=preview_seconds)
        pairs.append((before, after))
    return pairs
