"""A preference round on disk: what was sampled, how it scored, which pairs it made, and whether it is finished.

One folder per round (``round_dir(run_dir, r)`` = ``run_dir/preference/round_<r>``)::

    samples/<prompt key>.jsonl   one record per sample: id, prompt, tokens (condition/prompt + generated ids),
                                 prompt_len, length (generated tokens), invalid_share, and anything the caller adds
    scores/<prompt key>.jsonl    one record per sample: id, score, max_similarity (and e.g. the judge's view)
    pairs.jsonl                  one record per pair: prompt key, chosen / rejected ids, their scores and lengths
    selection.json               per prompt: the selection's stats; the round's length report; the config
    done.json                    written last, with the round's metrics: the round is finished

Every file is written atomically (``tchaikovsky.io``), a prompt's samples or scores all at once, so a round killed
at any point resumes where it stopped: ``pending(prompts, "samples")`` lists the prompts still to sample,
``pending(prompts, "scores")`` those sampled but not scored; selection is deterministic and cheap, so it is simply
redone; the training of a round resumes from its own checkpoints (``training.loop.train``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from tchaikovsky import io
from tchaikovsky.preference.selection import Selection, SelectionConfig, length_report, select_pairs
from tchaikovsky.training.preference import PairShards

__all__ = ["LABELS", "prompt_key", "prompts_with_enough", "round_dir", "round_model", "Round"]

LABELS = ("period", "composer", "instrumentation")


def prompt_key(prompt: Mapping[str, str | None]) -> str:
    """A file-name-safe key for a prompt (a mapping of labels to values): readable values joined by ``__`` plus a
    short hash of the whole mapping, so distinct prompts never share a key. {"period": "Baroque", "composer":
    "Johann Sebastian Bach"} -> "Baroque__Johann-Sebastian-Bach__<hash>"."""
    order = [k for k in LABELS if k in prompt] + sorted(k for k in prompt if k not in LABELS)
    words = [re.sub(r"[^A-Za-z0-9]+", "-", str(prompt[k])).strip("-")[:24] for k in order if prompt[k] is not None]
    digest = hashlib.sha1(json.dumps(dict(prompt), sort_keys=True).encode()).hexdigest()[:8]
    return "__".join([w for w in words if w] + [digest])


def prompts_with_enough(pieces: Sequence, min_pieces: int = 10, labels: Sequence[str] = LABELS) -> list[dict]:
    """Every combination of ``labels`` values held by more than ``min_pieces`` of ``pieces`` (NotaGen: > 10 real
    pieces), most pieces first (then by value), as {label: value} dicts. Pieces with an unknown label are left out."""
    combos = Counter(tuple(getattr(p, k, None) for k in labels) for p in pieces)
    keep = [c for c, n in combos.items() if n > min_pieces and None not in c]
    keep.sort(key=lambda c: (-combos[c], c))
    return [dict(zip(labels, c)) for c in keep]


def round_dir(run_dir: str | Path, r: int) -> Path:
    """The folder of round ``r`` (1-based) of a run's preference tuning."""
    return Path(run_dir) / "preference" / f"round_{r:02d}"


def round_model(run_dir: str | Path, r: int) -> Path:
    """The weights of round ``r``'s policy: its DPOP run's latest ``model.eqx`` (round 0: the run's own)."""
    return (Path(run_dir) if r == 0 else round_dir(run_dir, r) / "train") / "checkpoints" / "model.eqx"


class Round:
    """The folder of one round (see the module docstring). Creating one creates nothing on disk."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def _file(self, stage: str, prompt: Mapping) -> Path:
        if stage not in ("samples", "scores"):
            raise ValueError(f"stage must be 'samples' or 'scores', got {stage!r}")
        return self.dir / stage / f"{prompt_key(prompt)}.jsonl"

    @property
    def done(self) -> bool:
        return (self.dir / "done.json").is_file()

    def pending(self, prompts: Sequence[Mapping], stage: str) -> list[Mapping]:
        """The prompts whose ``stage`` ("samples" or "scores") is not on disk yet; for "scores", only prompts
        already sampled. A finished round has nothing pending."""
        if self.done:
            return []
        todo = [p for p in prompts if not self._file(stage, p).is_file()]
        return [p for p in todo if self._file("samples", p).is_file()] if stage == "scores" else todo

    def write_samples(self, prompt: Mapping, records: Sequence[dict]) -> list[dict]:
        """Save one prompt's samples at once. Each record needs ``tokens`` (the whole sequence), ``prompt_len``
        and ``invalid_share``; ``id`` (``<prompt key>/<index>``), ``prompt`` and ``length`` (tokens after the
        prompt, EOS included, PAD not) are filled in. Returns the records as written."""
        key = prompt_key(prompt)
        out = []
        for i, r in enumerate(records):
            length = len(r["tokens"]) - int(r["prompt_len"])
            out.append({**r, "id": f"{key}/{i:04d}", "prompt": dict(prompt), "length": length})
        io.write_jsonl(self._file("samples", prompt), out)
        return out

    def write_scores(self, prompt: Mapping, records: Sequence[dict]) -> None:
        """Save one prompt's scores at once: records with ``id`` (a sample of that prompt), ``score`` and
        ``max_similarity``. Raises ValueError for an id that is not among the prompt's samples."""
        ids = {s["id"] for s in self.samples(prompt)}
        if unknown := [r["id"] for r in records if r["id"] not in ids]:
            raise ValueError(f"scores for samples {unknown[:3]} that prompt {dict(prompt)} does not have")
        io.write_jsonl(self._file("scores", prompt), list(records))

    def samples(self, prompt: Mapping | None = None) -> list[dict]:
        """The samples of one prompt, or of every prompt sampled so far."""
        files = ([self._file("samples", prompt)] if prompt is not None
                 else sorted((self.dir / "samples").glob("*.jsonl")))
        return [r for f in files for r in io.read_jsonl(f)]

    def scores(self, prompt: Mapping | None = None) -> list[dict]:
        """The scores of one prompt, or of every prompt scored so far."""
        files = ([self._file("scores", prompt)] if prompt is not None
                 else sorted((self.dir / "scores").glob("*.jsonl")))
        return [r for f in files for r in io.read_jsonl(f)]

    def select(self, prompts: Sequence[Mapping], config: SelectionConfig = SelectionConfig()) -> dict[str, Selection]:
        """Select pairs for every prompt (``selection.select_pairs`` on its samples joined with their scores) and
        write ``pairs.jsonl`` and ``selection.json``. Raises ValueError when a prompt is not sampled or scored yet.
        Returns {prompt key: Selection}."""
        if missing := [dict(p) for p in prompts if not self._file("scores", p).is_file()]:
            raise ValueError(f"round {self.dir} has no scores yet for prompts {missing[:3]}")
        out, pairs = {}, []
        for p in prompts:
            by_id = {s["id"]: s for s in self.samples(p)}
            joined = [{**by_id[r["id"]], **r} for r in self.scores(p)]
            sel = out[prompt_key(p)] = select_pairs(joined, config)
            rows = {s["id"]: s for s in joined}
            for w, l in sel.pairs:
                pairs.append({"prompt": prompt_key(p), "chosen": w, "rejected": l,
                              "chosen_score": rows[w]["score"], "rejected_score": rows[l]["score"],
                              "chosen_len": rows[w]["length"], "rejected_len": rows[l]["length"]})
        io.write_jsonl(self.dir / "pairs.jsonl", pairs)
        report = {"config": config.to_dict(), "length": length_report(list(out.values())),
                  "prompts": {k: {"prompt": dict(p), **sel.stats} for (k, sel), p in zip(out.items(), prompts)}}
        io.atomic_write(self.dir / "selection.json", json.dumps(io.jsonable(report), indent=1, ensure_ascii=False))
        return out

    def pairs(self) -> list[dict]:
        return io.read_jsonl(self.dir / "pairs.jsonl")

    def pair_shards(self, *, pad_id: int = 0, tokenizer_hash: str | None = None) -> PairShards:
        """The round's pairs as ``PairShards`` for ``training.loop.train`` (add the reference log-probabilities
        with ``with_reference``). Raises ValueError without pairs, or for a pair whose samples have different
        prompt lengths."""
        pairs = self.pairs()
        if not pairs:
            raise ValueError(f"round {self.dir} has no pairs (run select first, or relax the selection)")
        by_id = {s["id"]: s for s in self.samples()}
        chosen, rejected, prompt_len = [], [], []
        for p in pairs:
            w, l = by_id[p["chosen"]], by_id[p["rejected"]]
            if w["prompt_len"] != l["prompt_len"]:
                raise ValueError(f"pair {p['chosen']} / {p['rejected']} has prompts of different lengths")
            chosen.append(w["tokens"]), rejected.append(l["tokens"]), prompt_len.append(w["prompt_len"])
        return PairShards(chosen, rejected, prompt_len, pad_id=pad_id, tokenizer_hash=tokenizer_hash)

    def finish(self, metrics: dict | None = None) -> Path:
        """Mark the round finished (``done.json`` with ``metrics``): a rerun skips it."""
        return io.atomic_write(self.dir / "done.json", json.dumps(metrics or {}, indent=1))

    def metrics(self) -> dict | None:
        """What ``finish`` recorded, or None for an unfinished round."""
        return json.loads((self.dir / "done.json").read_text()) if self.done else None
