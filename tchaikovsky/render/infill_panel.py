"""The sampler panel's "regenerate bars" mode: the bars of a piece written anew by a fill-in-the-middle model.

The panel (``widgets.SamplerPanel``) shows a mode switch and a bars field ("5-8") when its model has the fill
sentinels (``data.fim``). In this mode, Generate regenerates those bars of the chosen piece: the picker's piece or
the uploaded MIDI, or, with the picker on "unconditional" or "chord progression", the last piece the panel made.
The temperature, top-p, length (the middle's token budget), seed and guidance controls apply, and the condition
dropdowns; "best of" keeps the best of that many middles by how they lead into the bar after the span
(``generate.infill``'s ``rerank``); warnings (a prompt cut to fit the context, a middle that ran out of tokens) are written into the output
area.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import ipywidgets as W

from tchaikovsky.data.conditions import KINDS
from tchaikovsky.data.fim import Fill
from tchaikovsky.generate.bars import bars_label, parse_bars
from tchaikovsky.generate.infill import infill
from tchaikovsky.render import infill_view

CONTINUE, REGENERATE = "continue", "regenerate bars"
MAX_BEST_OF = 16  # middles drawn per regeneration at most (each one more costs one more sampled row)


def capable(model, tok, conditions) -> bool:
    """Whether ``model`` has the fill sentinels (the mode is offered only then)."""
    try:
        return Fill.of_model(model.config.vocab_size, len(tok), conditions) is not None
    except ValueError:
        return False


def controls(style: dict, layout, bars: str = "5-8") -> dict:
    """The mode switch, the bars field and "best of", for ``SamplerPanel.controls``."""
    return {"mode": W.ToggleButtons(options=[CONTINUE, REGENERATE], value=CONTINUE, description="mode",
                                    style=style),
            "bars": W.Text(value=bars, description="bars", placeholder="5-8", style=style, layout=layout),
            "best_of": W.BoundedIntText(value=1, min=1, max=MAX_BEST_OF, description="best of", style=style,
                                        layout=layout)}


def last_piece(results: list[dict]) -> tuple[Path, str]:
    """(the last piece the panel made, its label); ValueError when it has made none."""
    if not results:
        raise ValueError("nothing to regenerate yet: pick a piece or upload a MIDI file in the prompt menu, or "
                         "generate a piece first (its bars can then be regenerated)")
    last = Path(results[-1]["midi_path"])
    return last, last.stem


def regenerate(panel, piece, label: str) -> dict:
    """Regenerate the panel's bars of ``piece`` (a path or a Score; ``label`` names it) with its controls, save and
    show the new piece; returns its ``infill_view.write_infilled`` dict. Errors raise (``SamplerPanel.generate``
    writes them into the output area)."""
    c = panel.controls
    bars = parse_bars(c["bars"].value)
    seed, temp, top_p = int(c["seed"].value), float(c["temperature"].value), float(c["top_p"].value)
    n = int(c["best_of"].value)
    config = dataclasses.replace(panel.config, num_tokens=int(c["length"].value), top_p=top_p)
    if "guidance" in c:
        config = dataclasses.replace(config, guidance=float(c["guidance"].value))
    asked = {k: c[k].value for k in KINDS} if panel.conditions is not None else None
    panel._step(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = infill(panel.model, panel.tok, piece, bars, config, seeds=seed, temperatures=temp,
                        conditions=panel.conditions, asked=asked, order=panel.fim_order,
                        rerank=n)[0]
    for w in caught:
        if issubclass(w.category, UserWarning):
            panel.output.append_stdout(f"Note: {w.message}\n")
    panel._step(2)
    panel._count += 1
    name = f"panel{panel._count:03d}-" + (re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")[:32] or "piece")
    cell = infill_view.write_infilled(panel.run_dir, [result], name=name, soundfont=panel.soundfont)[0]
    panel._append(lambda: infill_view.show_infilled(result.original, [cell], preview_seconds=panel.preview_seconds,
                                                    soundfont=panel.soundfont))
    best = f", the best of {n} by the lead into the next bar" if n > 1 else ""
    panel.output.append_stdout(f"{label}: {bars_label(bars)} regenerated (seed {seed}, temperature {temp:g}{best}).\n")
    panel._step(3, "success")
    panel.results.append(cell)
    return cell
