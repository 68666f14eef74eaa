"""What a preference run shows: the per-round table, and the same prompt and seed before and after the rounds."""

from __future__ import annotations

import math
from pathlib import Path

from tchaikovsky.preference.rounds import prompt_key


def summary_table(result: dict) -> str:
    """The per-round table as Markdown."""
    def f(x, d=3):
        return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"

    lines = ["| round | scorer ↑ | judge accuracy ↑ | mean OA ↑ | bits/note ↓ | NLL under round 0 | diversity | "
             "copies |", "|---|---|---|---|---|---|---|---|"]
    for m in result["table"]:
        lines.append(f"| {m['round']} | {f(m['scorer'])} | {f(m['judge'], 2)} | {f(m['oa'], 2)} | "
                     f"{f(m['bits_per_note'], 2)} | {f(m['nll_round0'], 2)} | {f(m['diversity'], 3)} | "
                     f"{m['copies']}/{m['n']} |")
    return "\n".join(lines)


def show_before_after(run_dir: str | Path, result: dict, *, n: int = 2, preview_seconds: float = 30.0) -> list:
    """Display, for the first prompt, ``n`` evaluation pieces of round 0 beside the same prompt and seed from the
    last finished round (piano roll, a player of ``preview_seconds``, links). Returns the (before, after) paths."""
    from tchaikovsky.render import display

    table = result["table"]
    if len(table) < 2:
        print("no finished round yet: nothing to compare")
        return []
    last, key = table[-1]["round"], prompt_key(result["prompts"][0])
    root = Path(run_dir) / "preference" / "eval"
    pairs = []
    for k in range(n):
        before, after = root / "round_00" / f"{key}-{k}.mid", root / f"round_{last:02d}" / f"{key}-{k}.mid"
        if not (before.is_file() and after.is_file()):
            break
        for path, when in ((before, "round 0"), (after, f"round {last}")):
            display.show_sample(path, title=f"{key.rsplit('__', 1)[0]}, piece {k}: {when}",
                                preview_seconds=preview_seconds)
        pairs.append((before, after))
    return pairs
