"""The Python side of ``scripts/gpu_check.sh``: ``python -m benchmarks.gpu_check {check,summary}``.

``check --training ARGS --sampling ARGS --notebooks ARGS`` validates the argument lists the script will pass to
``python -m benchmarks training``, ``... sampling`` and ``python -m tchaikovsky.notebook`` (option names, presets,
the notebooks' parameter rules) without running anything, so a dry run also proves the GPU run's settings.

``summary OUT`` reads the script's output folder: ``settings.json`` (the settings used), ``device.json`` (the
machine), ``training.json`` and ``sampling.json`` (each benchmark's JSON line), ``run/history.jsonl`` and
``run/evaluation.json`` (the notebook run) and ``stages.jsonl`` (one line per stage: ``stage``, ``seconds``,
``rc``); writes ``summary.json`` and ``summary.md`` there and prints the table. A missing or unreadable file
leaves its rows empty ("-") rather than failing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
from pathlib import Path

# The design's performance targets: (figure, lowest passing value).
TARGETS = {"mfu": 0.45, "bandwidth_fraction": 0.5, "batch64_tokens_per_s": 100_000}


def _parse(ap: argparse.ArgumentParser, argv: list[str]):
    """(``ap.parse_args(argv)``, None), or (None, the error argparse would print) instead of exiting."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return ap.parse_args(argv), None
    except (SystemExit, argparse.ArgumentError) as e:
        lines = err.getvalue().strip().splitlines()
        return None, lines[-1] if lines else str(e)


def check(training: str, sampling: str, notebooks: str) -> list[str]:
    """Everything wrong with these argument strings (empty when all three would start); see the module docstring."""
    from benchmarks.__main__ import parser
    from tchaikovsky.config import preset
    from tchaikovsky.notebook import runner
    from tchaikovsky.notebook.params import SPECS, problem

    errors = []
    for name, argv in (("training", training), ("sampling", sampling)):
        a, error = _parse(parser(), [name, *shlex.split(argv)])
        if error:
            errors.append(f"{name}: {error}")
            continue
        try:
            kw = {}
            if name == "training":
                kw = dict(batch_size=a.batch_size, seq_len=a.seq_len, accum_steps=a.accum_steps)
            context = preset(a.preset, vocab_size=a.vocab_size, **kw).model.context
            if name == "sampling" and not 1 <= a.prompt_len <= context:
                errors.append(f"sampling: --prompt-len {a.prompt_len} outside 1..{context}")
        except ValueError as e:
            errors.append(f"{name}: {e}")
    a, error = _parse(runner.parser(), shlex.split(notebooks))
    if error:
        return errors + [f"notebooks: {error}"]
    values = runner.parameters(a)
    for nb_name in a.only:
        if nb_name not in SPECS:
            errors.append(f"notebooks: no notebook {nb_name!r}")
    specs = [SPECS[n] for n in a.only if n in SPECS]
    for name, value in values.items():
        rules = [spec[name] for spec in specs if name in spec]
        if not rules:
            errors.append(f"notebooks: no notebook of {a.only} takes {name!r}")
        for rule in rules:
            if (why := problem(rule, value)) is not None:
                errors.append(f"notebooks: {name}={value!r}: {why}")
    try:
        preset(values["preset"], vocab_size=values.get("vocab_size"), max_steps=values.get("max_steps"))
    except ValueError as e:
        errors.append(f"notebooks: {e}")
    return sorted(set(errors))


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing, empty or not one JSON object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of ``path``, one per line (unreadable lines skipped; [] when the file is missing)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _first(*values):
    return next((v for v in values if v is not None), None)


def collect(out_dir: str | Path) -> dict:
    """The figures of a gpu-check run in ``out_dir``: ``settings``, ``machine``, ``training``, ``sampling``,
    ``small_run`` (each None when its file is missing), ``stages`` (list), ``failed`` (names of the stages with a
    non-zero rc) and ``total_s``."""
    out = Path(out_dir)
    device, tr, sa = read_json(out / "device.json"), read_json(out / "training.json"), read_json(out / "sampling.json")
    history = read_jsonl(out / "run" / "history.jsonl")
    evals = [r for r in history if r.get("eval_loss") is not None]
    ev = read_json(out / "run" / "evaluation.json")
    stages = read_jsonl(out / "stages.jsonl")
    settings = read_json(out / "settings.json")
    small = None
    if history or ev:
        last = evals[-1] if evals else {}
        loss = (ev or {}).get("loss") or {}
        model_row = ((ev or {}).get("summary") or {}).get("model") or {}
        small = {
            "steps": history[-1].get("step") if history else None,
            "train_tokens_per_s": history[-1].get("tokens_per_s") if history else None,
            "final_loss": history[-1].get("loss") if history else None,
            # the evaluation's exact held-out figures when 04 ran; else the last evaluation during training
            "heldout_loss": _first(loss.get("eval_loss"), last.get("eval_loss")),
            "bits_per_note": _first(loss.get("bits_per_note"), last.get("bits_per_note")),
            "bits_per_note_bigram": loss.get("bits_per_note_bigram"),
            "bits_per_note_uniform": loss.get("bits_per_note_uniform"),
            "mean_oa": model_row.get("mean_oa"),
            "n_samples": model_row.get("n"),
        }
    return {
        "settings": settings,
        "machine": device,
        "training": tr,
        "sampling": sa,
        "small_run": small,
        "stages": stages,
        "failed": [s.get("stage") for s in stages if s.get("rc") not in (0, None)],
        "total_s": round(sum(s.get("seconds") or 0 for s in stages), 1) if stages else None,
    }


def _num(x, fmt: str = ",.4g") -> str:
    return "-" if x is None else format(x, fmt)


def _target(name: str, value, judged: bool) -> str:
    lo = TARGETS[name]
    if value is None:
        return f">= {lo:,} (not measured)"
    if not judged:
        return f">= {lo:,} (not judged on a CPU)"
    return f">= {lo:,}: {'met' if value >= lo else 'MISSED'}"


def table(s: dict) -> str:
    """The markdown table of ``collect``'s figures (what the script prints last)."""
    m, tr, sa, sm = s["machine"] or {}, s["training"] or {}, s["sampling"] or {}, s["small_run"] or {}
    machine = (f"{m.get('devices', '?')} x {m.get('device_kind', '?')} ({m.get('platform', '?')}), "
               f"jax {m.get('jax', '?')}, host {m.get('host', '?')}" if m else "-")
    tp, sp = tr.get("preset", "-"), sa.get("preset", "-")
    run = f"{(s.get('settings') or {}).get('notebook_preset', '?')} run"
    judged = m.get("platform") not in (None, "cpu")
    rows = [
        ("machine", machine, ""),
        (f"training {tp}: MFU", _num(tr.get("mfu"), ".3f"), _target("mfu", tr.get("mfu"), judged)),
        (f"training {tp}: tokens/s, ms/step",
         f"{_num(tr.get('tokens_per_s'), ',.0f')} tokens/s, {_num(tr.get('step_ms'))} ms/step "
         f"(batch {tr.get('batch_size', '-')} x {tr.get('seq_len', '-')}, {tr.get('dtype', '-')}; "
         f"{_num(tr.get('achieved_tflops'))} of {_num(tr.get('peak_tflops'))} TFLOP/s)" if tr else "-", ""),
        (f"sampling {sp}: batch-1 bandwidth fraction", _num(sa.get("bandwidth_fraction"), ".3f"),
         _target("bandwidth_fraction", sa.get("bandwidth_fraction"), judged)),
        (f"sampling {sp}: batch-1 tokens/s",
         f"{_num(sa.get('cached_tokens_per_s'), ',.0f')} (bound {_num(sa.get('bandwidth_bound_tokens_per_s'), ',.0f')}"
         f"); speedup {_num(sa.get('speedup'))}x vs recompute, {_num(sa.get('speedup_vs_scan'))}x vs its scan; "
         f"flatness {_num(sa.get('flatness'))}" if sa else "-", ""),
        (f"sampling {sp}: batch-64 tokens/s", _num(sa.get("batch64_tokens_per_s"), ",.0f"),
         _target("batch64_tokens_per_s", sa.get("batch64_tokens_per_s"), judged)),
        (f"{run}: steps, train tokens/s",
         f"{_num(sm.get('steps'), 'd')} steps, {_num(sm.get('train_tokens_per_s'), ',.0f')} tokens/s" if sm else "-",
         ""),
        (f"{run}: held-out loss (nats/token)", _num(sm.get("heldout_loss"), ".3f"), ""),
        (f"{run}: bits per note",
         f"{_num(sm.get('bits_per_note'), '.2f')} (bigram {_num(sm.get('bits_per_note_bigram'), '.2f')}, uniform "
         f"{_num(sm.get('bits_per_note_uniform'), '.2f')})" if sm else "-", ""),
        (f"{run}: samples' mean OA", _num(sm.get("mean_oa"), ".2f"), ""),
        ("stages (s)", ", ".join(f"{x.get('stage')} {_num(x.get('seconds'), '.0f')}"
                                 + ("" if x.get("rc") in (0, None) else f" (FAILED, rc {x.get('rc')})")
                                 for x in s["stages"]) + f"; total {_num(s['total_s'], '.0f')}", ""),
    ]
    lines = ["| figure | value | target |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate the argument strings of one gpu-check run; exit 1 on any error")
    for name in ("training", "sampling", "notebooks"):
        c.add_argument(f"--{name}", required=True, metavar="ARGS")
    sub.add_parser("summary", help="print and write the table of a gpu-check output folder").add_argument("out")
    args = ap.parse_args(argv)
    if args.command == "check":
        errors = check(args.training, args.sampling, args.notebooks)
        print("\n".join(errors) or "settings ok", flush=True)
        raise SystemExit(1 if errors else 0)
    s = collect(args.out)
    md = table(s)
    (Path(args.out) / "summary.json").write_text(json.dumps(s, indent=1))
    (Path(args.out) / "summary.md").write_text(md + "\n")
    print(md, flush=True)
    return s


if __name__ == "__main__":
    main()
