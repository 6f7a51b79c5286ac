"""PMI-Masking vs random-token, whole-word and random-span masking for MLM pretraining (paper 3).

Every variant pretrains the same small BERT from the same initial weights on the same
chunks for the same steps; only the masking scheme differs. Measured: held-out MLM
accuracy under one common random-token mask at several checkpoints (a curve per scheme),
a downstream fine-tune ("which article is this held-out sentence from?") with the same
budget for each scheme, and, in the verdict, the paper's claim as a number: the steps PMI
needs to reach each baseline's final held-out accuracy, as a fraction of that baseline's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks.registry import Benchmark, Metric, PaperNumber, PaperRef, Variant, Verdict, lazy, register_benchmark
from benchmarks.verdict import band, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.pmi_masking"
BASELINES = ("random", "whole_word", "span")


# --------------------------------------------------------------------------------------
# The claim as a number
# --------------------------------------------------------------------------------------
def mean_curve(df: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    rows = df[(df["variant"] == variant) & (df["metric"] == metric)]
    return rows.groupby(rows["step"].astype(float))["value"].mean().sort_index()


def steps_to_reach(curve: pd.Series, target: float, higher_is_better: bool = True) -> float:
    """First step at which the curve reaches ``target`` (linear between checkpoints; the
    first checkpoint if it is already there); NaN if never."""
    sign = 1.0 if higher_is_better else -1.0
    prev_s, prev_v = 0.0, -math.inf
    for s, v in curve.items():
        v = sign * v
        if v >= sign * target:
            if math.isinf(prev_v):
                return float(s)
            return float(prev_s + (s - prev_s) * (sign * target - prev_v) / (v - prev_v))
        prev_s, prev_v = s, v
    return math.nan


def step_fractions(df: pd.DataFrame, metric: str, higher_is_better: bool):
    """Per baseline: (steps PMI needs to reach the baseline's final value of ``metric`` over
    the baseline's steps, PMI's final deficit beyond the seed band or 0); evidence text."""
    pmi = mean_curve(df, "pmi", metric)
    result, parts = {}, []
    for b in BASELINES:
        curve = mean_curve(df, b, metric)
        if curve.empty or pmi.empty:
            continue
        target, final_step = float(curve.iloc[-1]), float(curve.index[-1])
        frac = steps_to_reach(pmi, target, higher_is_better) / final_step
        _, s_pmi, _ = seed_stats(df, "pmi", metric, float(pmi.index[-1]))
        _, s_b, _ = seed_stats(df, b, metric, final_step)
        width = band(s_pmi, s_b)
        deficit = (target - float(pmi.iloc[-1])) * (1 if higher_is_better else -1)
        result[b] = (frac, max(0.0, deficit - width))
        reached = f"never (PMI final {float(pmi.iloc[-1]):.3f}, band ±{width:.3f})" if math.isnan(frac) else f"{frac:.2f} of its steps"
        parts.append(f"{b} {target:.3f} @ {final_step:.0f}: PMI at {reached}")
    return result, f"{metric.removesuffix('_curve')}: " + "; ".join(parts)


def claim_verdict(df: pd.DataFrame) -> Verdict:
    """Decided on the held-out MLM loss (at CPU budgets the accuracy sits at the unigram
    floor for hundreds of steps); the accuracy's fractions are reported beside it."""
    result, evidence = step_fractions(df, "heldout_mlm_loss_curve", higher_is_better=False)
    _, acc_evidence = step_fractions(df, "heldout_mlm_acc_curve", higher_is_better=True)
    down = df[(df["metric"] == "downstream_acc") & df["step"].isna()].groupby("variant")["value"].mean()
    evidence += f". {acc_evidence}. downstream acc: " + ", ".join(f"{v} {a:.3f}" for v, a in down.items())
    if not result:
        return Verdict("inconclusive", "no held-out curves for pmi and a baseline. " + evidence)
    if any(beyond > 0 for _, beyond in result.values()):
        return Verdict("does not hold", evidence)
    if all(frac <= 0.6 for frac, _ in result.values()):
        return Verdict("holds", evidence)
    return Verdict("inconclusive", evidence)


@register_benchmark
def pmi_masking() -> Benchmark:
    return Benchmark(
        name="pmi_masking",
        paper=PaperRef(
            title="PMI-Masking: Principled Masking of Correlated Spans",
            arxiv="2010.01825",
            code="https://github.com/AI21Labs/pmi-masking",
        ),
        claim=(
            "Masking whole high-PMI n-grams (PMI-Masking) lets an MLM reach the held-out score of random-token, "
            "whole-word and random-span masking in about half the pretraining steps."
        ),
        verdict_rule=(
            "from the mean held-out MLM loss curves (common random-token mask; the accuracy's fractions are shown too): "
            "for each baseline, the first step (linear between checkpoints) at which PMI reaches the baseline's final "
            "loss, over the baseline's steps; holds if every fraction is at most 0.6 (the paper's 'half', with slack); "
            "does not hold if PMI's final loss is worse than some baseline's by more than the band (2 pooled std over "
            "seeds, at least 0.01); else inconclusive"
        ),
        variants=[
            Variant("pmi", "method", {"scheme": "pmi"}, "PMI_n n-gram units (longest match, random overlaps), else words"),
            Variant("random", "baseline", {"scheme": "random"}, "BERT random-token masking"),
            Variant("whole_word", "baseline", {"scheme": "whole_word"}, "BERT whole-word masking"),
            Variant("span", "baseline", {"scheme": "span"}, "SpanBERT spans: words ~ Geometric(0.2) clipped at 10"),
        ],
        datasets={corpus: lazy(f"{UNITS}:text_data", corpus=corpus) for corpus in ("gensim_wiki", "wikitext", "plain")},
        defaults=dict(
            scheme="pmi", vocab_size=2000, max_len=64, batch_size=32, mask_rate=0.15,
            pmi_max_n=5, pmi_min_count=10, pmi_vocab_size=2000, span_p=0.2, span_max=10,
            hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256, lr=3e-3, weight_decay=0.01,
            warmup_steps=30, max_steps=300, eval_every=50, eval_chunks=128,
            finetune_steps=100, finetune_lr=5e-4, finetune_per_doc=60, ngram_stats_docs=0,
        ),
        presets={
            "smoke": dict(vocab_size=1000, max_len=32, batch_size=8, hidden_size=32, intermediate_size=64, warmup_steps=2,
                          max_steps=6, eval_every=3, eval_chunks=16, finetune_steps=3, finetune_per_doc=8,
                          ngram_stats_docs=8, pmi_min_count=3),
            "quick": {},
            "full": dict(vocab_size=30522, max_len=128, batch_size=256, pmi_vocab_size=800_000, hidden_size=768,
                         num_layers=12, num_heads=12, intermediate_size=3072, lr=1e-4, warmup_steps=10_000,
                         max_steps=1_000_000, eval_every=50_000, eval_chunks=4096, finetune_steps=3000,
                         finetune_lr=5e-5, finetune_per_doc=100),
        },
        metrics=[
            Metric("heldout_mlm_acc", True, primary=True, tolerance=0.03,
                   description="held-out MLM accuracy after pretraining, one common random-token mask"),
            Metric("heldout_mlm_acc_curve", True, curve=True, tolerance=0.03, x_label="pretraining step",
                   description="held-out MLM accuracy (common random-token mask) at checkpoints"),
            Metric("heldout_mlm_loss", False, tolerance=0.03,
                   description="held-out MLM cross-entropy per masked token (nats), common random-token mask"),
            Metric("heldout_mlm_loss_curve", False, curve=True, tolerance=0.03, x_label="pretraining step",
                   description="held-out MLM cross-entropy (common random-token mask) at checkpoints"),
            Metric("downstream_acc", True, tolerance=0.05,
                   description="fine-tuned accuracy: which held-out article a held-out sentence comes from"),
            Metric("masked_fraction", True, kind="info", description="fraction of tokens the scheme labels (goal 0.15)"),
            Metric("pmi_vocab_entries", True, kind="info", description="n-grams in the PMI masking vocabulary"),
            Metric("step_time_ms", False, kind="efficiency", tolerance=0.3, description="median pretraining step, ms"),
            Metric("ngram_count_tokens_per_s", True, kind="efficiency", tolerance=0.3,
                   description="streaming n-gram counting (n <= 5, Apriori-pruned) over the training split"),
            Metric("ngram_count_peak_mb", False, kind="efficiency", tolerance=0.2,
                   description="peak Python memory while counting (tracemalloc)"),
            Metric("pmi_vocab_coverage", True, kind="info",
                   description="fraction of training words inside a PMI n-gram unit (paper: about half at 800K entries)"),
            Metric("pmi_top", True, kind="info", description="PMI_n (nats) of the vocabulary's top entries per length"),
            Metric("steps_to_baseline", False, kind="info",
                   description="paper only: PMI's steps to a baseline's final score / the baseline's steps (ours: verdict)"),
            Metric("squad2_f1", True, kind="info", description="paper only: SQuAD2.0 F1 after fine-tuning (not run here)"),
            Metric("race_acc", True, kind="info", description="paper only: RACE accuracy after fine-tuning (not run here)"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"ngram_statistics": lazy(f"{UNITS}:ngram_statistics")},
        verdict=claim_verdict,
        paper_numbers=[
            # All context: none of these datasets is one of ours (we pretrain on small corpora and fine-tune on
            # a held-out-article task), and the BERT-base / 1M-step scale is far beyond our `full` preset's reach.
            PaperNumber("pmi", "wikipedia_bookcorpus", "steps_to_baseline", 0.5,
                        "arXiv 2010.01825 abstract: reaches prior masking approaches' performance in half the training "
                        "time; context: Wikipedia+BookCorpus BERT pretraining, not one of our datasets", scope="context"),
            PaperNumber("pmi", "squad2", "squad2_f1", 0.817,
                        "AI21Labs/pmi-masking README results table, row pmi_800K_exp_wiki-bc (Wikipedia+BookCorpus), "
                        "BERT-base, 1M steps, column SQuAD (F1); context: SQuAD2.0 is not one of our datasets, and the "
                        "list uses a frequency-weighted variant of the paper's Eq. 3", scope="context"),
            PaperNumber("pmi", "race", "race_acc", 0.693,
                        "AI21Labs/pmi-masking README results table, row pmi_800K_exp_wiki-bc (Wikipedia+BookCorpus), "
                        "BERT-base, 1M steps, column RACE; context: RACE is not one of our datasets, and the list uses "
                        "a frequency-weighted variant of the paper's Eq. 3", scope="context"),
        ],
    )
