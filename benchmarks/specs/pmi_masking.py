"""PMI-Masking vs random-token, whole-word and random-span masking for MLM pretraining (paper 3).

Every variant pretrains the same small BERT from the same initial weights on the same
chunks for the same steps; only the masking scheme differs. No single held-out masking is
neutral (each model is best on its own), so every model is evaluated on the same held-out
chunks under every masking (a cross-evaluation matrix, beside the unigram floor of each).
The verdict rests on the paper's mechanism, measured: the shortcut gap (how much better a
model predicts one word of a collocation when the rest of it is visible) against each of
the three baselines, and, once the models are below its floor, the loss on random spans, a
masking that PMI, whole-word and random-token models never train on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperNumber, PaperParams, PaperRef, Task, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import Comparison, combine, floor_separation, gate, judge, make_verdict

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.pmi_masking"
SCHEMES = ("pmi", "random", "whole_word", "span")
BASELINES = ("random", "whole_word", "span")  # the paper's three: each compared with pmi on the shortcut gap
OFF_MASKING = "span"  # held-out random spans: a masking pmi, random and whole_word never train on (the unit's curve too)
OFF_BASELINES = ("random", "whole_word")  # span trains on random spans, so it is not compared there
LEARNED_MARGIN = 0.3  # nats below the unigram floor on its own masking before a model counts as trained (issue 16)
QUICK_CANNOT = ("What this scale cannot show: the paper's claim is about fine-tuned SQuAD2.0/RACE/GLUE scores of "
                "BERT-base pretrained for up to 1M steps (baselines' scores in about half the steps); here a 2-layer "
                "model trains 1,000 steps on 0.4M words and no downstream task separates a trained encoder from an "
                "untrained one, so only the mechanism (shortcut gap) and held-out MLM loss are judged.")

# --------------------------------------------------------------------------------------
# The claim as numbers, declared before the run (issue 29): five comparisons, each paired by seed (same split,
# tokenizer, vocabulary, initial weights and held-out masks), lower for PMI is better on both measures (the effect
# is baseline − pmi). The shortcut gap decides: pmi against each of the three baselines. The loss on random spans
# counts only where its gate opens (pmi and the baseline each LEARNED_MARGIN below that masking's floor, a paired
# interval over seeds); in the 3-seed reference of commit a1b6278 it does not (pmi sits above that floor), and
# the verdict says how many steps the loss curves would need. The decisive ones and the open ones are combined with "all" (an
# intersection-union test: no correction needed).
# --------------------------------------------------------------------------------------
GAP, OFF_LOSS = "shortcut_gap", f"heldout_loss@mask={OFF_MASKING}"
MIN_EFFECT = {GAP: 0.02, OFF_LOSS: 0.02}  # smallest difference that counts
EFFECT_SOURCE = {  # neither comes from the paper, whose effects are on fine-tuned downstream scores
    GAP: "2 accuracy points on the held-out n-gram words: a scale choice, the per-seed threshold of the issue 16 "
         "rule carried over as the smallest effect (one seed's difference has a standard error of about 0.01)",
    OFF_LOSS: "0.02 nats per masked token (about 2 % perplexity): a scale choice, the per-seed threshold of the "
              "issue 16 rule carried over as the smallest effect",
}
COMPARISONS = (
    *(Comparison("pmi", b, GAP, "better", delta=MIN_EFFECT[GAP], higher_is_better=False,
                 label=f"pmi vs {b}, shortcut gap", source=EFFECT_SOURCE[GAP]) for b in BASELINES),
    *(Comparison("pmi", b, OFF_LOSS, "better", delta=MIN_EFFECT[OFF_LOSS], higher_is_better=False,
                 label=f"pmi vs {b}, loss on random spans", source=EFFECT_SOURCE[OFF_LOSS]) for b in OFF_BASELINES),
)


def per_variant(df: pd.DataFrame, metric: str) -> dict[str, dict[int, float]]:
    """{variant: {seed: value}} of a scalar metric."""
    rows = df[(df["metric"] == metric) & df["step"].isna()]
    out: dict[str, dict[int, float]] = {}
    for r in rows.itertuples():
        out.setdefault(str(r.variant), {})[int(r.seed)] = float(r.value)
    return out


def needed_margin(reference: dict[int, float]) -> dict[int, float]:
    """Per seed, the nats below the unigram floor a model must reach on its own masking to count as trained:
    LEARNED_MARGIN, or less where the simple reference (a count model of the visible neighbours) is itself less
    far below that floor (random spans hide the neighbours of most of their tokens: 0.18-0.20 nats, issue 29)."""
    return {s: min(LEARNED_MARGIN, r) for s, r in reference.items()}


def untrained(below: dict[str, dict[int, float]], variants, reference: dict[str, dict[int, float]] | None = None) -> list[str]:
    """The seeds of ``variants`` less than their needed margin (:func:`needed_margin` of ``reference``, the
    reference's nats below the floor on each variant's own masking; LEARNED_MARGIN where it is missing) below the
    unigram floor on their own masking (losses at the floor say how a model guesses, not what it learned, and are
    not compared)."""
    out = []
    for v in variants:
        need = needed_margin((reference or {}).get(v, {}))
        out += [f"{v} seed {s} ({x:.2f} < {need.get(s, LEARNED_MARGIN):.2f})" for s, x in sorted(below.get(v, {}).items())
                if x < need.get(s, LEARNED_MARGIN)]
    return out + [f"{v} (no rows)" for v in variants if not below.get(v)]


def steps_to_margin(curve: dict[int, list[tuple[float, float]]], floor: dict[int, float], margin: float = LEARNED_MARGIN) -> float:
    """Pretraining steps at which a held-out loss curve would be ``margin`` below its floor, extrapolating the
    least-squares slope of (loss − floor, mean over seeds) over the checkpoints after the first: a lower bound,
    as loss curves flatten. ``curve``: seed -> [(step, loss)]. 0 when already there; inf when not falling."""
    excess: dict[float, list[float]] = {}
    for seed, points in curve.items():
        for step, loss in points:
            if seed in floor:
                excess.setdefault(step, []).append(loss - floor[seed])
    if len(excess) < 3:
        raise ValueError(f"steps_to_margin needs at least 3 checkpoints with a floor; got {len(excess)}")
    points = sorted((step, sum(v) / len(v)) for step, v in excess.items())[1:]  # the first: still in the warm-up's fall
    mx, my = sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    last_step, last = points[-1]
    if last <= -margin:
        return 0.0
    return last_step + (last + margin) / -slope if slope < 0 else math.inf


def _curve(df: pd.DataFrame, variant: str) -> dict[int, list[tuple[float, float]]]:
    rows = df[(df["variant"] == variant) & (df["metric"] == "heldout_loss_curve") & df["step"].notna()]
    out: dict[int, list[tuple[float, float]]] = {}
    for r in rows.itertuples():
        out.setdefault(int(r.seed), []).append((float(r.step), float(r.value)))
    return out


def _need(df: pd.DataFrame, variant: str, floor: dict[int, float], margin: float = LEARNED_MARGIN) -> str:
    """The scale a variant's loss curve on random spans would need to be ``margin`` below ``floor``."""
    curve = _curve(df, variant)
    try:
        steps = steps_to_margin(curve, floor, margin)
    except ValueError:
        return "no curve to extrapolate"
    if math.isinf(steps):
        return "its curve is not falling at this budget"
    ran = max(step for points in curve.values() for step, _ in points)
    return f"its curve would reach it after at least {steps:,.0f} pretraining steps (linear extrapolation; this run: {ran:,.0f})"


def off_gate(df: pd.DataFrame, pair, loss: dict, floor: dict, margin: float = LEARNED_MARGIN) -> tuple[bool, str]:
    """Are both models of ``pair`` ``margin`` nats below the random-span floor (paired 95 % interval over
    seeds)? If not, the one line that says how many pretraining steps their loss curves would need."""
    why = []
    for v in pair:
        ok, text = floor_separation(loss.get(v, {}), floor.get(v, {}), margin, higher_is_better=False)
        if not ok:
            why.append(f"{v}: floor − loss {text.split('model − floor ', 1)[-1]}; {_need(df, v, floor.get(v, {}), margin)}")
    return not why, f"gate closed, not {margin:.2f} nats below the random-span floor: " + "; ".join(why)


def _show(values: dict[str, dict[int, float]]) -> str:
    return ", ".join(f"{v} " + "/".join(f"{x:.3f}" for _, x in sorted(values[v].items())) for v in SCHEMES if v in values)


def claim_verdict(df: pd.DataFrame) -> Verdict:
    below, gaps = per_variant(df, "below_floor"), per_variant(df, GAP)
    reference = per_variant(df, "reference_below_floor")  # the neighbour-count model on each variant's own masking
    off_loss, off_floor = per_variant(df, OFF_LOSS), per_variant(df, f"floor_loss@mask={OFF_MASKING}")
    off_ref = per_variant(df, f"reference_loss@mask={OFF_MASKING}").get("pmi", {})  # the same chunks for every variant
    off_ref_below = {s: off_floor["pmi"][s] - x for s, x in off_ref.items() if s in off_floor.get("pmi", {})}
    off_margin = min(LEARNED_MARGIN, sum(off_ref_below.values()) / len(off_ref_below)) if off_ref_below else LEARNED_MARGIN
    floor = ", ".join(f"{x:.3f}" for _, x in sorted(off_floor.get("pmi", {}).items()))
    judgements, deciding = [], []
    for c in COMPARISONS:
        j, counts = judge(df, c), c.metric == GAP
        if c.metric == OFF_LOSS:
            counts, why = off_gate(df, (c.method, c.baseline), off_loss, off_floor, off_margin)
            j = gate(j, counts, why)
        weak = untrained(below, (c.method, c.baseline), reference)
        why = "not as far below the unigram floor on its own masking as needed: " + ", ".join(weak)
        if any(w.startswith(f"{OFF_MASKING} ") for w in weak):  # the curve is on the span model's own masking
            need = needed_margin(reference.get(OFF_MASKING, {}))
            margin = sum(need.values()) / len(need) if need else LEARNED_MARGIN
            why += f" ({OFF_MASKING}: {_need(df, OFF_MASKING, off_floor.get(OFF_MASKING, {}), margin)})"
        j = gate(j, not weak, why)
        judgements.append(j)
        if counts:
            deciding.append(j)
    evidence = (f"nats below the unigram floor on its own masking (per seed): {_show(below)}; the same for the "
                f"neighbour-count reference on that masking: {_show(reference)}; shortcut gap: {_show(gaps)}; "
                f"loss on random spans: {_show(off_loss)} (unigram floor {floor}; the reference "
                + ", ".join(f"{x:.3f}" for _, x in sorted(off_ref.items())) + f"). {QUICK_CANNOT}")
    return make_verdict(combine(deciding, "all"), judgements, evidence)


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
            "Masking whole high-PMI n-grams (PMI-Masking) takes away the shortcut of predicting a word from its "
            "visible collocation partners, so an MLM learns more from the same steps than with random-token, "
            "whole-word or random-span masking (the paper: the baselines' fine-tuned scores in about half the steps)."
        ),
        verdict_rule=(
            "Five comparisons declared before the run, each a 95 % paired t-interval over seeds (the same split, "
            "tokenizer, vocabulary, initial weights and held-out masks) of baseline − pmi. Deciding: the shortcut gap "
            "(accuracy on one word of a PMI n-gram with the rest visible minus with the whole n-gram masked), PMI "
            "against each of random-token, whole-word and random-span masking. Counted only where its gate opens: the "
            "held-out loss on random spans (a masking neither trains on), PMI against random-token and whole-word "
            f"masking, when both models are below that masking's unigram floor by {LEARNED_MARGIN} nats or by as much as "
            "the simple reference is (a count model of the visible neighbours), whichever is less (the lower end of "
            "a paired interval of floor − loss); a closed gate says how many steps the models' loss curves would need. "
            f"A comparison is inconclusive unless both of its models' held-out loss on their own masking is, in every "
            f"seed, {LEARNED_MARGIN} nats below its unigram floor or as far below it as the simple reference on that "
            "masking, whichever is less. A comparison holds when the interval's lower "
            f"end is above 0 and its upper end not below the smallest effect ({MIN_EFFECT[GAP]} accuracy / "
            f"{MIN_EFFECT[OFF_LOSS]} nats), does not hold when its upper end is below that effect. The claim holds if "
            "every counted comparison holds; does not hold if any does not hold; else (or with fewer than two seeds) "
            "inconclusive, with the seeds or steps that would decide it."
        ),
        variants=[
            Variant("pmi", "method", {"scheme": "pmi"}, "PMI_n n-gram units (longest match, random overlaps), else words"),
            Variant("random", "baseline", {"scheme": "random"}, "BERT random-token masking"),
            Variant("whole_word", "baseline", {"scheme": "whole_word"}, "BERT whole-word masking"),
            Variant("span", "baseline", {"scheme": "span"}, "SpanBERT spans: words ~ Geometric(0.2) clipped at 10, never cut"),
        ],
        datasets={corpus: lazy(f"{UNITS}:text_data", corpus=corpus) for corpus in ("gensim_wiki", "wikitext", "plain")},
        # The defaults are the quick preset: 4 schemes x 3 seeds. The fixed ALiBi-style bias, dropout 0, lr 3e-3 and
        # warm-up 100 are what made the tiny BERT leave the unigram plateau (issue 16: learned positions alone stay
        # there for 4,000+ steps). Issue 29, chosen on the test split's chunks (no verdict reads them;
        # heldout_split=test), seed 0, nats below the unigram floor on the span model's own masking: the symmetric
        # bias of 2 heads (1, 0.25) 0.08; a directional one (a head that looks left, one that looks right, slopes
        # (1, 4) and (4, 1)) with 2 heads 0.13, with 4 heads (plus symmetric 0.25 and 0.0625) 0.15, wider directional
        # heads 0.10-0.15; lr 5e-3 0.03; d 128 0.06; 2,000 steps 0.20; batch 64 (1,000 steps) 0.23. The directional
        # bias also took random masking from 0.62 to 1.33, and at batch 64 pmi to 1.05, whole_word to 1.19. The simple
        # reference (bigrams of the visible neighbours) reaches 0.20 on random spans, 1.9 on random tokens, 0.6 on
        # whole words: random spans hide the neighbours of most masked tokens, so 0.3 is beyond the reference there
        # and the competence bar is the lesser of the two. Cost: about 105 s a unit under --jobs 2 (was 55 s).
        defaults=dict(
            scheme="pmi", vocab_size=2000, max_len=64, batch_size=64, mask_rate=0.15,
            pmi_max_n=5, pmi_min_count=10, pmi_vocab_size=2000, pmi_words_only=True, pmi_score="pmi", pmi_min=2.0,
            span_p=0.2, span_max=10,
            hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, dropout=0.0, alibi=True,
            alibi_slopes=[[1.0, 4.0], [4.0, 1.0], 0.25, 0.0625], heldout_split="validation",
            lr=3e-3, weight_decay=0.01, warmup_steps=100, max_steps=1000, eval_every=250, eval_chunks=512,
            finetune_steps=0, finetune_lr=5e-4, finetune_per_doc=60, ngram_stats_docs=0,
        ),
        presets={
            "smoke": dict(vocab_size=1000, max_len=32, batch_size=8, hidden_size=32, intermediate_size=64, warmup_steps=2,
                          max_steps=6, eval_every=3, eval_chunks=64, finetune_steps=3, finetune_per_doc=8,
                          ngram_stats_docs=8, pmi_min_count=3),
            "quick": {},
            # Not run on a GPU. The paper's BERT-base with learned absolute positions (no distance bias), dropout 0.1.
            "full": dict(vocab_size=30522, max_len=128, batch_size=256, pmi_vocab_size=800_000, hidden_size=768,
                         num_layers=12, num_heads=12, intermediate_size=3072, dropout=0.1, alibi=False, lr=1e-4,
                         warmup_steps=10_000, max_steps=1_000_000, eval_every=50_000, eval_chunks=4096,
                         finetune_steps=3000, finetune_lr=5e-5, finetune_per_doc=100),
        },
        metrics=[
            Metric("heldout_loss", False, tolerance=0.03,
                   description="held-out MLM cross-entropy per masked token (nats) under the masking after @mask= "
                               "(every model on the same masked chunks); pmi_ngram masks whole PMI n-grams only, "
                               "pmi_one_word one word of each of the same n-grams with the rest visible"),
            # tolerance: the same commit on an Intel and an AMD CPU moved it by up to 11 % (accuracies of 0.02-0.06)
            Metric("heldout_acc", True, tolerance=0.15, description="held-out MLM accuracy under the masking after @mask="),
            Metric("floor_loss", False, kind="info",
                   description="the unigram floor: cross-entropy of the training unigram distribution on the same targets"),
            Metric("floor_acc", True, kind="info", description="accuracy of always predicting the most frequent token"),
            Metric("reference_loss", False, kind="info",
                   description="the simple reference: cross-entropy of a count model of the visible neighbours (bigrams "
                               "of the training split, interpolated with the unigram) on the same targets"),
            Metric("reference_below_floor", True, kind="info",
                   description="nats below the unigram floor the reference reaches on the model's own masking"),
            Metric("below_floor", True, primary=True, tolerance=0.1,
                   description=f"nats below the unigram floor on the model's own masking (trained: >= {LEARNED_MARGIN}, or the "
                               "reference's reach where that is less)"),
            Metric("shortcut_gap", False, tolerance=0.5,
                   description="accuracy on one word of a PMI n-gram with the rest visible minus with the whole n-gram "
                               "masked (the same words): how much the model leans on the collocation"),
            Metric("shortcut_gap_nats", False, tolerance=0.5,
                   description="the shortcut gap in loss: nats on the same words with the whole n-gram masked minus "
                               "with the rest visible (less noisy than accuracy while accuracies are low; not judged)"),
            Metric("shortcut_words", True, kind="info", description="held-out n-gram words behind the shortcut gap"),
            Metric("heldout_acc_curve", True, curve=True, tolerance=0.05, x_label="pretraining step",
                   description="held-out MLM accuracy on random spans at checkpoints"),
            Metric("heldout_loss_curve", False, curve=True, tolerance=0.03, x_label="pretraining step",
                   description="held-out MLM cross-entropy on random spans at checkpoints"),
            Metric("downstream_acc", True, tolerance=0.05,
                   description="full/smoke only: fine-tuned accuracy, which held-out article a sentence comes from"),
            Metric("downstream_acc_untrained", True, kind="info",
                   description="the same fine-tune from the untrained initial weights (does the task see pretraining?)"),
            Metric("masked_fraction", True, kind="info", description="fraction of tokens the scheme labels (goal 0.15)"),
            Metric("span_mean_words", True, kind="info",
                   description="realised mean span length in words (SpanBERT's truncated geometric: 3.8)"),
            Metric("parameters", False, kind="info", description="parameters of the masked LM"),
            Metric("pmi_vocab_entries", True, kind="info", description="n-grams in the PMI masking vocabulary"),
            Metric("step_time_ms", False, kind="efficiency", tolerance=0.3, description="median pretraining step, ms"),
            Metric("ngram_count_tokens_per_s", True, kind="efficiency", tolerance=0.3,
                   description="streaming n-gram counting (n <= 5, Apriori-pruned) over the training split"),
            Metric("ngram_count_peak_mb", False, kind="efficiency", tolerance=0.2,
                   description="peak Python memory while counting (tracemalloc)"),
            Metric("pmi_vocab_coverage", True, kind="info",
                   description="fraction of training words inside a PMI n-gram unit (paper: about half at 800K entries)"),
            Metric("pmi_top", True, kind="info", description="score (nats) of the vocabulary's top entries per length"),
            Metric("steps_to_baseline", False, kind="info",
                   description="paper only: PMI's steps to a baseline's final score / the baseline's steps"),
            Metric("squad2_f1", True, kind="info", description="paper only: SQuAD2.0 F1 after fine-tuning (not run here)"),
            Metric("race_acc", True, kind="info", description="paper only: RACE accuracy after fine-tuning (not run here)"),
        ],
        run=lazy(f"{UNITS}:run"),
        report_artifacts=lazy(f"{UNITS}:matrix_artifacts"),
        extras={"ngram_statistics": lazy(f"{UNITS}:ngram_statistics")},
        verdict=claim_verdict,
        tasks={"full": {"wikitext": Task()}},  # WikiText raw files (the paper pretrains on Wikipedia + BookCorpus)
        # fast dev run: two pretraining and fine-tuning steps, held-out sets of 8 chunks; on a CPU a batch of 2
        # (BERT-base over 256 x 128 tokens is a GPU job)
        fast_dev=FastDev(config=dict(eval_chunks=8, warmup_steps=1), batch_keys=("batch_size",), cpu_batch=2),
        paper_architecture="BERT-base from scratch: 12 layers, d 768, 12 heads, MLP 3072, WordPiece 30,522, MLM head",
        paper_params=[PaperParams(v, 110_000_000, "Devlin et al. 2019 (arXiv 1810.04805) Sec. 3: BERT-base, 110M; "
                                  "PMI-Masking (arXiv 2010.01825) pretrains BERT-base", tolerance=0.03,
                                  note="ours counts the MLM head (its decoder tied to the embeddings) and no pooler")
                      for v in ("pmi", "random", "whole_word", "span")],
        param_count=lazy(f"{UNITS}:full_params"),
        # quick seeds, sized by a power estimate within the quick budget: from the 2-seed cpu-quick.csv of commit 2ef76d5
        # the shortcut-gap comparisons would need about 6 and 10 seeds, from the 3-seed one of commit a1b6278 about 6
        # and 4 (vs random, whole_word); issue 29's model costs twice a unit (batch 64, about 105 s), so quick runs the
        # verdicts issue's 3 (12 units, about 1,260 s of unit time; 4 seeds of the old model: 880 s)
        seeds={"quick": 3},
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
