"""The notebooks' parameter contract: what each notebook accepts, checked at the top with a clear message.

Each notebook has one Papermill ``parameters`` cell; the cell after it calls ``check(name, globals())``, which
fails at once, naming the parameter, on a wrong type, an out-of-range value, or a name the notebook does not know
(a typo in ``papermill -p``). Values are never rewritten: the notebook keeps using its own variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tchaikovsky.config import PRESETS, parse_list
from tchaikovsky.generate.bars import parse_bars


@dataclass(frozen=True)
class Rule:
    kind: type | tuple[type, ...]
    test: Callable[[Any], bool] = lambda v: True
    expect: str = ""
    optional: bool = False  # None allowed (means "preset default" / "off")


def _int(lo: int, hi: int | None = None, optional=False) -> Rule:
    return Rule(int, lambda v: v >= lo and (hi is None or v <= hi),
                f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""), optional)


def _float(lo: float, hi: float | None = None, optional=False, open_lo=False) -> Rule:
    ok = (lambda v: v > lo) if open_lo else (lambda v: v >= lo)
    return Rule((int, float), lambda v: ok(v) and (hi is None or v <= hi),
                f"a number {'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if hi is not None else ""), optional)


def _choice(*options: str) -> Rule:
    return Rule(str, lambda v: v in options, f"one of {list(options)}")


def _numbers(lo: float, integer: bool) -> Rule:
    def ok(v):
        items = parse_list(v, int if integer else float)
        return bool(items) and all(x >= lo for x in items)

    return Rule((str, list, tuple, int, float), ok, f"a list of {'integers' if integer else 'numbers'} >= {lo}, "
                f"e.g. [0.8, 1.0] or \"0.8,1.0\"")


def _bars(v: str) -> bool:
    try:
        return bool(parse_bars(v))
    except ValueError:
        return False


STR = Rule(str, expect="a string")
BARS = Rule(str, _bars, 'bars first-last from 1, e.g. "5-8" (or "5")')
PATH_OR_EMPTY = Rule(str, expect='a path, or "" for the default')
BOOL = Rule(bool, expect="True or False")
COMMON = {"data_dir": PATH_OR_EMPTY, "run_dir": PATH_OR_EMPTY, "seed": _int(0), "max_files": _int(1, optional=True),
          "composers": Rule(str, lambda v: all(c.strip() for c in v.split(",")), 'comma-separated names, e.g. "bach,mozart"'),
          "repo_url": STR}
PREVIEW = _float(0.0, 600.0, open_lo=True)  # seconds each inline player plays: bounds what a notebook embeds

SPECS: dict[str, dict[str, Rule]] = {
    "01_explore_data": {**COMMON, "n_listen": _int(0, 20), "preview_seconds": PREVIEW},
    "02_train_tokenizer": {**COMMON, "vocab_size": _int(600, 65535), "val_fraction": _float(0.0, 0.5, open_lo=True),
                           "transpose_range": _int(0, 12), "conditions": BOOL, "judge_fraction": _float(0.0, 0.5)},
    "03_train": {
        **COMMON,
        "vocab_size": _int(600, 65535),
        "preset": _choice(*PRESETS),
        "max_steps": _int(1, optional=True),
        "max_minutes": _float(0.0, open_lo=True, optional=True),
        "batch_size": _int(1, optional=True),
        "learning_rate": _float(0.0, 1.0, open_lo=True, optional=True),
        "resume": BOOL,
        "wandb_mode": _choice("disabled", "offline", "online"),
        "sample_every": _int(0),
        "init_from": PATH_OR_EMPTY,
        "conditions": BOOL,
        "condition_dropout": _float(0.0, 1.0, optional=True),
        "unconditional_rate": _float(0.0, 1.0, optional=True),
        "fim_rate": _float(0.0, 1.0),
        "fim_spm": _float(0.0, 1.0, optional=True),
        "judge_fraction": _float(0.0, 0.5),
        "allow_overlap": BOOL,
    },
    "04_sample": {
        **COMMON,
        "checkpoint": Rule(str, expect='a weights file, "tuned" (the last finished round of 05) or "" (the latest)'),
        "prompt_midi": PATH_OR_EMPTY,
        "prompt_chords": STR,
        "prompt_tokens": _int(1),
        "num_tokens": _int(1, 100_000),
        "min_tokens": _int(0, 100_000),
        "temperatures": _numbers(0.0, integer=False),
        "seeds": _numbers(0, integer=True),
        "top_k": _int(0),
        "top_p": _float(0.0, 1.0, open_lo=True),
        "min_p": _float(0.0, 1.0),
        "grammar": BOOL,
        "repetition_penalty": _float(0.0, 10.0, open_lo=True),
        "max_bars": _int(1, optional=True),
        "max_seconds": _float(0.0, open_lo=True, optional=True),
        "rerank": _int(1, 64),
        "evaluate": BOOL,
        "evaluate_temperature": _float(0.0),
        "interactive": BOOL,
        "preview_seconds": PREVIEW,
        "soundfont": PATH_OR_EMPTY,
        "period": STR,
        "composer": STR,
        "instrumentation": STR,
        "guidance": _float(0.0, 100.0),
        "judge_samples": _int(0, 256),
        "infill_midi": PATH_OR_EMPTY,
        "infill_bars": BARS,
        "infill_rerank": _int(1, 16),
    },
    "05_preference_tuning": {
        "run_dir": PATH_OR_EMPTY,
        "seed": _int(0),
        "repo_url": STR,
        "rounds": _int(1, 100),
        "samples_per_prompt": _int(2, 10_000),
        "top_fraction": _float(0.0, 0.5, open_lo=True),
        "beta": _float(0.0, open_lo=True),
        "dpop_lambda": _float(0.0),
        "learning_rate": _float(0.0, 1.0, open_lo=True),
        "steps_per_round": _int(1),
        "batch_size": _int(1),
        "num_tokens": _int(0, 100_000),
        "temperature": _float(0.0, 10.0, open_lo=True),
        "guidance": _float(0.0, 100.0),
        "min_pieces": _int(0),
        "eval_samples": _int(2, 1000),
        "scorer_steps": _int(1),
        "max_minutes": _float(0.0, open_lo=True, optional=True),
        "preview_seconds": PREVIEW,
    },
}

# Names a notebook kernel defines by itself, which are not parameters.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "display"}


def problem(rule: Rule, value) -> str | None:
    """What is wrong with ``value`` under ``rule`` ("expected ..."), or None when it passes (a bool is no number)."""
    if value is None and rule.optional:
        return None
    kind_ok = isinstance(value, rule.kind) and not (isinstance(value, bool) and rule.kind in (int, (int, float)))
    if kind_ok and rule.test(value):
        return None
    return f"expected {rule.expect}" + (" or None" if rule.optional else "")


def check(notebook: str, namespace: dict) -> None:
    """Validate the parameters of ``notebook`` found in ``namespace`` (the notebook's ``globals()``)."""
    spec = SPECS[notebook]
    errors = []
    for name, rule in spec.items():
        if name not in namespace:
            errors.append(f"parameter `{name}` is missing from the parameters cell")
            continue
        if (why := problem(rule, namespace[name])) is not None:
            errors.append(f"parameter `{name}` = {namespace[name]!r}: {why}")
    unknown = sorted(
        k for k, v in namespace.items()
        if not k.startswith("_") and k not in spec and k not in _KERNEL_NAMES
        and not callable(v) and type(v).__name__ != "module"
    )
    if unknown:
        errors.append(f"unknown parameter(s) {unknown}: {notebook} accepts {sorted(spec)}")
    if errors:
        raise ValueError(f"{notebook}: " + "; ".join(errors))
