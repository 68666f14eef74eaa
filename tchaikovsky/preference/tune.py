"""Preference tuning of a conditioned run, round after round (NotaGen's CLaMP-DPO with our own scorer).

    result = tune(run_dir, PreferenceConfig(rounds=3, samples_per_prompt=100))
    result["table"]          # one row per policy (round 0 = the fine-tuned model): test figures, ["validation"]
    result["chosen_round"]   # the round the validation judge prefers; result["test_gain"]: its test gain vs round 0
    preference.report.summary_table(result)   # the same as Markdown

Everything lives under ``run_dir/preference/``::

    scorer/                  the music scorer (trained on the run's training pieces, decoded), reused on reruns
    scorer_report.json       how well it separates held-out real pieces (the validation works) by label
    round_00/done.json       round 0: the fine-tuned model's evaluation
    round_<r>/               samples, scores, pairs.jsonl, selection.json (``preference.rounds.Round``),
                             train/ (the DPOP run: checkpoints, history.jsonl), done.json (the policy's evaluation)
    eval/<role>/round_<r>/   the evaluation pieces of each policy per protocol role: the same seeds every round

Round r samples ``samples_per_prompt`` pieces per prompt from the previous policy (top-k 9, top-p 0.9, temperature
1.2; every piece the same length, so length cannot be what the pairs teach), scores them (cosine to the prompt's
real pieces under the scorer), drops malformed pieces and copies, pairs the best with the worst, and trains the
previous policy with DPOP against itself as the reference. Each policy is then judged on fresh pieces by what the
optimisation never saw (``preference.evaluate``), twice: on the validation role (a judge trained on the ``judge``
works, OA against them, validation seeds), which chooses the round, and on the test role (the ``judge_test``
works, test seeds), which is what the table reports; plus held-out bits per note, its likelihood under the
round-0 model, diversity and copies. A run killed anywhere resumes: finished rounds are skipped, a round's sampled
and scored prompts are kept, its training resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from tchaikovsky import io, progress
from tchaikovsky.config import SampleConfig, TrainConfig, compute_dtype
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.tokenizer import decode_ids, music_ids, special_ids
from tchaikovsky.evaluation import protocol
from tchaikovsky.evaluation.compare import spearman
from tchaikovsky.evaluation.originality import flag_copies
from tchaikovsky.evaluation.reward import run_scorer
from tchaikovsky.evaluation.views import decoded_split, training_index
from tchaikovsky.generate.grammar import Grammar
from tchaikovsky.preference.evaluate import EvalSpec, evaluate_round, sample, verdict
from tchaikovsky.preference.rounds import Round, prompt_key, prompts_with_enough, round_dir, round_model
from tchaikovsky.preference.selection import SelectionConfig
from tchaikovsky.training.checkpoint import load_model, load_run_model
from tchaikovsky.training.loop import train
from tchaikovsky.training.preference import DPOPLoss


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    rounds: int = 3
    samples_per_prompt: int = 100  # per prompt and round (NotaGen: ~100)
    top_fraction: float = 0.1  # chosen: the best this share; rejected: the worst
    beta: float = 0.1
    dpop_lambda: float = 10.0  # 0: plain DPO
    learning_rate: float = 1e-5
    steps_per_round: int = 100
    batch_size: int = 8  # pairs per step (rounded up to a multiple of the device count)
    num_tokens: int = 0  # generated tokens per piece (0: what fits the model's context after the prompt)
    temperature: float = 1.2
    top_k: int = 9
    top_p: float = 0.9
    guidance: float = 1.0  # classifier-free guidance of every sampled piece, rounds and evaluations (1: off)
    min_pieces: int = 10  # prompts: condition triples with more than this many real training pieces
    eval_samples: int = 8  # pieces per prompt to judge each policy by (same seeds every round)
    scorer_steps: int = 600
    seed: int = 0

    def __post_init__(self):
        for name in ("rounds", "samples_per_prompt", "steps_per_round", "batch_size", "eval_samples", "scorer_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"PreferenceConfig.{name}={getattr(self, name)!r} must be an integer >= 1")
        if self.samples_per_prompt * self.top_fraction < 1:
            raise ValueError(f"samples_per_prompt={self.samples_per_prompt} x top_fraction={self.top_fraction} < 1: "
                             "no sample would be chosen")
        if not (self.learning_rate > 0 and self.beta > 0 and self.dpop_lambda >= 0 and self.temperature > 0):
            raise ValueError("learning_rate, beta and temperature must be > 0, dpop_lambda >= 0")
        SampleConfig(guidance=self.guidance)  # a number >= 0, or a ValueError naming guidance

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Context:
    """What every round needs, loaded once: model 0, tokenizer, conditions, shards, real pieces, prompts."""

    def __init__(self, run_dir: Path, cfg: PreferenceConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.model0, self.tok, self.meta = load_run_model(run_dir)
        self.cond = load_conditions(run_dir, self.tok)
        if self.cond is None:
            raise ValueError(f"{run_dir} has no conditions: preference tuning needs a run fine-tuned with conditions "
                             "(notebook 03 with init_from)")
        self.shards = Shards(run_dir / "shards")
        for r in protocol.ROLES.values():  # without held-out works nothing independent could confirm a gain
            protocol.require_split(self.shards, r)
        self.sp = special_ids(self.tok)
        self.grammar = Grammar(self.tok, self.cond)
        self.train_real = decoded_split(self.shards, self.tok, "train")
        self.val_real = decoded_split(self.shards, self.tok, "val")
        self.held = {name: decoded_split(self.shards, self.tok, r.split) for name, r in protocol.ROLES.items()}
        self.prompts = prompts_with_enough(self.train_real, cfg.min_pieces)
        if not self.prompts:
            raise ValueError(f"no condition combination has more than {cfg.min_pieces} training pieces: lower "
                             "min_pieces or bring more labelled music")
        context = self.model0.config.context
        self.prompt_len = len(self.cond.prefix()) + 1
        self.num_tokens = cfg.num_tokens or context - self.prompt_len
        if self.prompt_len + self.num_tokens > context:
            raise ValueError(f"num_tokens={cfg.num_tokens} + the {self.prompt_len}-token prompt exceed the model's "
                             f"context of {context}: the loss must see what the sampler saw")

    @functools.cached_property
    def index(self):
        """The n-gram index of the training split's music tokens (built on first use)."""
        return training_index(self.shards, self.tok, self.cfg.seed)

    def prefix(self, prompt: dict) -> np.ndarray:
        return np.asarray(self.cond.prefix(**prompt) + [self.sp["bos"]], np.int32)

    def copies(self, seqs) -> list[bool]:
        """Per sequence: does it repeat a long run of the training tokens (``originality.flag_copies``)?"""
        return [f["copied"] for f in flag_copies([music_ids(self.tok, s) for s in seqs], self.index)]


def _scorer(ctx: _Context):
    """The run's scorer (``evaluation.reward.run_scorer``): loaded from ``preference/scorer``, else trained on the
    training pieces (copy threshold calibrated on the validation pieces) and saved with its separation of the
    validation works' pieces."""
    return run_scorer(ctx.run_dir, steps=ctx.cfg.scorer_steps, seed=ctx.cfg.seed, train=ctx.train_real,
                      val=ctx.val_real, held=ctx.held["validation"])


def _round_samples(ctx: _Context, rnd: Round, r: int, policy, scorer, judge) -> None:
    """Sample and score every pending prompt of round ``r`` (each prompt's records written at once)."""
    cfg = ctx.cfg
    for i, prompt in enumerate(rnd.pending(ctx.prompts, "samples")):
        progress.say(f"round {r}: sampling {cfg.samples_per_prompt} pieces for {prompt_key(prompt)} ...")
        first = 2_000_000 + 1_000_000 * r + 10_000 * i + cfg.seed  # clear of both evaluation roles' seeds
        seqs = sample(ctx, policy, prompt, range(first, first + cfg.samples_per_prompt), temperature=cfg.temperature,
                      top_k=cfg.top_k, top_p=cfg.top_p, guidance=cfg.guidance)
        rnd.write_samples(prompt, [{"tokens": [int(t) for t in s], "prompt_len": ctx.prompt_len,
                                    "invalid_share": ctx.grammar.invalid_share(s)} for s in seqs])
    for prompt in rnd.pending(ctx.prompts, "scores"):
        records = rnd.samples(prompt)
        scores = [decode_ids(ctx.tok, s["tokens"]) for s in records]
        emb = scorer.embed_all(scores)
        reward, sim = scorer.score(scores, prompt, embedded=emb), scorer.max_similarity_to_real(scores, embedded=emb)
        heard = _judge_p(judge, scores, prompt)
        copied = ctx.copies([s["tokens"] for s in records])
        rnd.write_scores(prompt, [{"id": s["id"], "score": float(a), "max_similarity": float(b), "judge_p": float(c),
                                   "copied": bool(d), "n_notes": int(sc.note_num())}
                                  for s, a, b, c, d, sc in zip(records, reward, sim, heard, copied, scores)])


def _judge_p(judge, scores, prompt) -> np.ndarray:
    """The judge's probability of the requested composer for each piece (0 for a piece it cannot hear: the judge
    gives such a piece a row of NaN)."""
    composer = prompt.get("composer")
    if composer not in judge.classes or not scores:
        return np.zeros(len(scores))
    return np.nan_to_num(judge.predict_proba(scores)[:, judge.classes.index(composer)], nan=0.0)


def _train_round(ctx: _Context, rnd: Round, r: int, policy, deadline: float | None):
    """DPOP training of round ``r`` on its pairs, from (and against) the previous ``policy``: every pair's reference
    log-probabilities computed once, then the training loop (exact resume; stops at ``deadline``)."""
    cfg, steps, seq_len = ctx.cfg, ctx.cfg.steps_per_round, ctx.prompt_len + ctx.num_tokens - 1
    n_dev = jax.device_count()  # every device takes a share of the pairs: round up to a multiple
    tc = TrainConfig(batch_size=-(-cfg.batch_size // n_dev) * n_dev, seq_len=seq_len, learning_rate=cfg.learning_rate,
                     warmup_steps=max(1, steps // 10), max_steps=steps, min_lr_ratio=1.0, weight_decay=0.0,
                     eval_every=steps, log_every=max(1, min(10, steps // 5)), checkpoint_every=steps,
                     keep_checkpoints=1)
    pairs = rnd.pair_shards(pad_id=ctx.sp["pad"], tokenizer_hash=ctx.shards.tokenizer_hash)
    pairs = pairs.with_reference(policy, seq_len, dtype=compute_dtype(tc.compute_dtype))
    left = None if deadline is None else max((deadline - time.time()) / 60, 0.01)
    return train(rnd.dir / "train", policy.config, tc, pairs, seed=cfg.seed + r,
                 init_from=round_model(ctx.run_dir, r - 1), loss_fn=DPOPLoss(cfg.beta, cfg.dpop_lambda),
                 max_minutes=left, extra_meta={"preference_round": r})


def tune(run_dir: str | Path, cfg: PreferenceConfig = PreferenceConfig(), *,
         max_minutes: float | None = None) -> dict:
    """Run (or resume) the preference rounds of ``run_dir``; see the module docstring. ``max_minutes`` ends the
    call cleanly (a round's training stops with a checkpoint; the next call resumes). Returns ``table`` (the
    evaluation of every finished policy, round 0 first), ``guard`` (the scorer-judge rank correlation on round 1's
    samples; ``guard_by_prompt``: per prompt), ``warnings``, ``stopped`` ("done" or "max_minutes"), ``prompts``,
    ``scorer`` (its report), and ``preference.evaluate.verdict``'s ``chosen_round``, ``test_gain`` and
    ``per_round``."""
    run_dir = Path(run_dir)
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes
    ctx = _Context(run_dir, cfg)
    pref = run_dir / "preference"
    pref.mkdir(parents=True, exist_ok=True)
    saved = pref / "config.json"
    if saved.is_file() and json.loads(saved.read_text()) != cfg.to_dict():
        warnings.warn(f"{saved} holds other settings: finished rounds keep theirs, later rounds use the new ones",
                      stacklevel=2)
    io.atomic_write(saved, json.dumps(cfg.to_dict(), indent=1))
    progress.say(f"{len(ctx.prompts)} prompt(s): " + "; ".join(prompt_key(p) for p in ctx.prompts))
    scorer = _scorer(ctx)
    specs = [EvalSpec.for_role(name, held, cfg.guidance) for name, held in ctx.held.items()]
    judge = specs[0].judge  # validation's: the round samples' judge_p (the scorer-judge guard)
    zero = Round(round_dir(run_dir, 0))
    if not zero.done:
        progress.say("round 0: judging the fine-tuned model ...")
        zero.finish(io.jsonable(evaluate_round(ctx, ctx.model0, 0, scorer, specs)))
    notes, stopped, guard, guard_by_prompt = [], "done", None, {}
    for r in range(1, cfg.rounds + 1):
        rnd = Round(round_dir(run_dir, r))
        if not rnd.done:
            policy, _ = load_model(round_model(run_dir, r - 1))
            _round_samples(ctx, rnd, r, policy, scorer, judge)
            chosen = rnd.select(ctx.prompts, SelectionConfig(top_fraction=cfg.top_fraction,
                                                             copy_threshold=scorer.info.get("copy_threshold", 1.01)))
            if not any(sel.pairs for sel in chosen.values()):
                raise ValueError(f"round {r} found no pairs: {[sel.stats['dropped'] for sel in chosen.values()]} "
                                 f"samples dropped per prompt (see {rnd.dir / 'selection.json'}); sample more per "
                                 "prompt or raise top_fraction")
            result = _train_round(ctx, rnd, r, policy, deadline)
            if result.stopped == "max_minutes":
                stopped = "max_minutes"
                break
            progress.say(f"round {r}: judging the new policy ...")
            metrics = evaluate_round(ctx, result.state.model, r, scorer, specs)
            metrics["training"] = result.history[-1] if result.history else {}
            metrics["selection"] = json.loads((rnd.dir / "selection.json").read_text())["length"]
            rnd.finish(io.jsonable(metrics))
        if r == 1:
            rows = rnd.scores()
            guard = spearman([x["score"] for x in rows], [x["judge_p"] for x in rows])
            guard_by_prompt = {prompt_key(p): spearman([x["score"] for x in rnd.scores(p)],
                                                       [x["judge_p"] for x in rnd.scores(p)]) for p in ctx.prompts}
        if deadline is not None and time.time() > deadline and r < cfg.rounds:
            stopped = "max_minutes"
            break
    table = [m for r in range(cfg.rounds + 1) if (m := Round(round_dir(run_dir, r)).metrics()) is not None]
    if guard is not None and abs(guard) < 0.1:
        notes.append(f"the scorer and the judge hardly agree on round 1's pieces (Spearman {guard:.2f}): the scorer "
                     "is not a usable proxy of what the judge hears, so gains in its score may not be real")
    decided = verdict(table)
    notes += decided["warnings"]
    for n in notes:
        warnings.warn(n, stacklevel=2)
    report = json.loads((pref / "scorer_report.json").read_text()) if (pref / "scorer_report.json").is_file() else {}
    return {"table": table, "guard": guard, "guard_by_prompt": guard_by_prompt, "warnings": notes, "stopped": stopped,
            "prompts": ctx.prompts, "scorer": report, "chosen_round": decided["chosen_round"],
            "test_gain": decided["test_gain"], "per_round": decided["per_round"]}
