"""Each preference policy judged by what the optimisation never saw, once per protocol role.

An ``EvalSpec`` says what one evaluation may see: its role (``evaluation.protocol``: validation for choosing the
round, test for the reported figures), the judge trained on that role's held-out works, those works' real pieces
(the OA references) and the role's sampling seeds. Neither the scorer's training pieces nor the pieces the pairs
were sampled from are ever a reference here.

    specs = [EvalSpec.for_role("validation", held["validation"]), EvalSpec.for_role("test", held["test"])]
    row = evaluate_round(ctx, model, r, scorer, specs)    # test figures at the top, row["validation"] beside
    verdict(table)                                        # the round chosen on validation, its test gain
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from tchaikovsky.config import SampleConfig, TrainConfig, compute_dtype
from tchaikovsky.evaluation import protocol
from tchaikovsky.evaluation.compare import compare_sets, mean_oa
from tchaikovsky.evaluation.features import piece_metrics
from tchaikovsky.evaluation.intervals import Difference, Rate
from tchaikovsky.evaluation.judge import Judge
from tchaikovsky.evaluation.views import decode_samples, has_notes
from tchaikovsky.generate.sampling import generate
from tchaikovsky.preference.rounds import Round, prompt_key, round_dir
from tchaikovsky.training.preference import sequence_logprobs
from tchaikovsky.training.step import evaluate

EVAL_TEMPERATURE, EVAL_TOP_P = 1.0, 0.95  # how every policy is sampled for its evaluation
PROMPT_SEEDS = 10_000  # seeds of prompt i start at i * PROMPT_SEEDS within the role's range


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation's view: ``role``, ``judge`` (trained on the role's held-out works), ``real`` (those works'
    decoded pieces: the OA references), ``min_real`` (fewer references than this and a prompt's OA is NaN),
    ``guidance`` (the classifier-free guidance its pieces are sampled with: ``SampleConfig.guidance``)."""

    role: protocol.Role
    judge: Judge
    real: tuple
    min_real: int = 2
    guidance: float = 1.0

    @classmethod
    def for_role(cls, name: str, held, guidance: float = 1.0) -> "EvalSpec":
        """The spec of role ``name`` over its held-out pieces ``held`` (``views.Decoded``): a composer judge."""
        held = tuple(held)
        return cls(protocol.role(name), Judge.fit([p for p in held if p.composer], "composer"), held,
                   guidance=guidance)

    def references(self, prompt: dict) -> list:
        """The held-out real pieces (Scores) that match every condition of ``prompt``; when fewer than
        ``min_real`` do, those of its composer."""
        exact = [p.score for p in self.real if all(getattr(p, k) == v for k, v in prompt.items())]
        if len(exact) >= self.min_real:
            return exact
        return [p.score for p in self.real if p.composer == prompt.get("composer")]

    def seeds(self, prompt_index: int, n: int) -> list[int]:
        return self.role.seeds(n, prompt_index * PROMPT_SEEDS)


def sample(ctx, model, prompt: dict, seeds, *, temperature, top_k, top_p, guidance: float = 1.0,
           batch: int = 64) -> list:
    """One piece of exactly ``ctx.num_tokens`` new tokens per seed for ``prompt`` (EOS held back: equal
    lengths), in batches of ``batch`` (a guided batch decodes twice the rows: ``SampleConfig.guidance``)."""
    config = SampleConfig(num_tokens=ctx.num_tokens, min_tokens=ctx.num_tokens, top_k=top_k, top_p=top_p,
                          guidance=guidance)
    seeds, out = list(seeds), []
    for s in range(0, len(seeds), batch):
        out += generate(model, ctx.prefix(prompt), config, seeds=seeds[s:s + batch], temperatures=temperature,
                        tok=ctx.tok, conditions=ctx.cond)
    return out


def evaluate_policy(ctx, model, r: int, scorer, spec: EvalSpec) -> dict:
    """Policy ``model`` (round ``r``) under ``spec``: per prompt ``cfg.eval_samples`` pieces from the role's seeds
    (the same every round), written to ``preference/eval/<role>/round_<r>/``. Per prompt and pooled: the judge's
    recognition of the asked composer (``judge_rate``: a Rate dict, failures count as misses; ``judge`` its
    value), the scorer's reward, OA against the role's held-out pieces of the prompt, the pieces' NLL per token
    under round 0, diversity (1 - mean pairwise cosine of the scorer's label embeddings), copies, failures."""
    out_dir = eval_dir(ctx.run_dir, spec.role.name, r)
    out_dir.mkdir(parents=True, exist_ok=True)
    logprobs = eqx.filter_jit(sequence_logprobs)
    rows = {}
    for i, prompt in enumerate(ctx.prompts):
        seqs = sample(ctx, model, prompt, spec.seeds(i, ctx.cfg.eval_samples), temperature=EVAL_TEMPERATURE,
                      top_k=0, top_p=EVAL_TOP_P, guidance=spec.guidance)
        scores, failed = decode_samples(ctx.tok, seqs)
        heard = [sc for sc in scores if has_notes(sc)]
        key = prompt_key(prompt)
        for k, sc in enumerate(scores):
            if has_notes(sc):
                sc.dump_midi(str(out_dir / f"{key}-{k}.mid"))
        emb = scorer.embed_all(heard) if heard else None
        tokens = np.stack([np.asarray(s, np.int32) for s in seqs])
        mask = np.zeros((len(seqs), tokens.shape[1] - 1), np.float32)
        mask[:, ctx.prompt_len - 1:] = 1.0
        ll0 = np.asarray(logprobs(ctx.model0, jnp.asarray(tokens), jnp.asarray(mask), jnp.float32))
        real = spec.references(prompt)
        pairwise = (emb.label @ emb.label.T)[~np.eye(len(heard), dtype=bool)] if heard else np.zeros(0)
        rate = spec.judge.rate(scores, [prompt.get("composer")] * len(scores))
        gen_metrics, real_metrics = [piece_metrics(sc) for sc in heard], [piece_metrics(x) for x in real]
        rows[key] = {
            "prompt": prompt, "judge_rate": rate.to_dict(), "judge": rate.value,
            "scorer": float(scorer.score(heard, prompt, embedded=emb).mean()) if heard else math.nan,
            "oa": mean_oa(compare_sets(gen_metrics, real_metrics)) if len(real) >= spec.min_real and heard
            else math.nan,
            "n_real": len(real), "nll_round0": float(-ll0.sum() / mask.sum()),
            "diversity": float(1.0 - pairwise.mean()) if pairwise.size else math.nan,
            "copies": int(sum(ctx.copies(seqs))), "failed": failed,
            "scorer_copies": int((scorer.max_similarity_to_real(heard, embedded=emb)
                                  > scorer.info.get("copy_threshold", 1.01)).sum()) if heard else 0,
        }
    judge = Rate(sum(v["judge_rate"]["k"] for v in rows.values()), sum(v["judge_rate"]["n"] for v in rows.values()))
    def mean(k):  # over the prompts where it is defined (OA needs >= min_real references)
        x = [v[k] for v in rows.values() if v[k] == v[k]]
        return float(np.mean(x)) if x else math.nan

    return {"role": spec.role.name, "judge": judge.value, "judge_rate": judge.to_dict(), "scorer": mean("scorer"),
            "oa": mean("oa"), "nll_round0": mean("nll_round0"), "diversity": mean("diversity"),
            "copies": int(sum(v["copies"] for v in rows.values())),
            "scorer_copies": int(sum(v["scorer_copies"] for v in rows.values())),
            "failed": int(sum(sum(v["failed"].values()) for v in rows.values())), "n": judge.n,
            "seeds": [spec.seeds(0, 1)[0], spec.seeds(len(rows) - 1, ctx.cfg.eval_samples)[-1]], "prompts": rows}


def evaluate_round(ctx, model, r: int, scorer, specs) -> dict:
    """Round ``r``'s row: the test spec's figures at the top level (what is reported), every other role's under
    its name (``row["validation"]``: what choices read), and the held-out loss of the val split."""
    by_role = {spec.role.name: evaluate_policy(ctx, model, r, scorer, spec) for spec in specs}
    tc = TrainConfig(**ctx.meta.get("train_config", {}))
    loss = evaluate(model, ctx.shards, batch_size=tc.micro_batch, seq_len=min(tc.seq_len, model.config.context),
                    dtype=compute_dtype(tc.compute_dtype), pad_id=ctx.shards.pad_id)
    test = by_role.pop("test")
    return {**test, "round": r, **by_role, "bits_per_note": loss.get("bits_per_note"),
            "eval_loss": loss.get("eval_loss")}


def verdict(table: list[dict]) -> dict:
    """What the rounds did, under the protocol: ``chosen_round`` (the best validation judge rate; the earlier round
    on a tie), ``test_gain`` (its test judge rate minus round 0's, Newcombe's interval), ``per_round`` (each round's
    test difference to round 0), and ``warnings``: a round whose scorer rose while the validation judge fell
    significantly (the interval of the fall excludes 0), the signature of reward hacking."""
    if not table:
        return {"chosen_round": None, "test_gain": None, "per_round": [], "warnings": []}
    val = [Rate.from_dict(m["validation"]["judge_rate"]) for m in table]
    test = [Rate.from_dict(m["judge_rate"]) for m in table]
    best = max(range(len(table)), key=lambda i: (val[i].value if val[i].n else -1.0, -i))
    notes = []
    for i in range(1, len(table)):
        a, b = table[i - 1]["validation"], table[i]["validation"]
        fall = Difference(val[i], val[i - 1])
        if b["scorer"] > a["scorer"] and fall.significant and fall.value < 0:
            notes.append(f"round {table[i]['round']}: the scorer rose ({a['scorer']:.3f} -> {b['scorer']:.3f}) while "
                         f"the validation judge fell significantly ({val[i - 1]} -> {val[i]}; difference {fall}): "
                         "possible reward hacking")
    return {"chosen_round": table[best]["round"], "test_gain": Difference(test[best], test[0]).to_dict(),
            "per_round": [{"round": m["round"], **Difference(t, test[0]).to_dict()} for m, t in zip(table, test)],
            "warnings": notes}


def eval_dir(run_dir: str | Path, role: str, r: int) -> Path:
    return Path(run_dir) / "preference" / "eval" / role / f"round_{r:02d}"


def chosen_round(run_dir: str | Path) -> int | None:
    """The round the validation judge prefers among a run's finished rounds (``verdict``; 0 is the fine-tuned
    model itself); None when round 1 has not finished."""
    table = []
    for r in range(0, 10_000):
        m = Round(round_dir(run_dir, r)).metrics()
        if m is None:
            break
        table.append(m)
    return verdict(table)["chosen_round"] if len(table) > 1 else None

