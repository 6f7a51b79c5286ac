"""FlyVec (fruit-fly sparse binary word codes) vs word2vec (paper 10).

The declaration and the verdict; what a unit runs is ``benchmarks/units/flyvec.py``, the
math ``lit_modules/flyvec.py``, the data ``datamodules/word_similarity.py``. FlyVec's training
is its own loop (the learning rule is not gradient descent), so no variant uses ``Trainer.fit``.
Not checked on a GPU: the ``full`` preset (it runs on CPU too, slowly).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.registry import Benchmark, FastDev, Metric, PaperParams, PaperRef, Task, Variant, Verdict, lazy, register_benchmark
from benchmarks.verdict import (
    Comparison, floor_separation, gate, judge, make_verdict, per_seed, seed_stats, seeds_to_decide, seeds_to_separate,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.flyvec"
TIME_SLACK = 1.10  # "no more training time": a ratio up to 1.10 is within timing noise on a shared CPU

# -------------------------------------------------------------------------------- verdict
# Declared before the run. The margin is relative to what the metric separates here: a fraction of word2vec's mean ρ
# above the random dense vectors' (the dense floor: ρ of vectors that know nothing), both measured in the run being
# judged (seed means). ρ's scale moves with the corpus and preset (about 0.16 for word2vec at quick, 0.13 above the
# floor), so a fixed ρ would be loose at one scale and strict at another; the margin looks at the trained baseline
# and the floor, never at FlyVec's ρ (the judged difference). Its sampling error (the floor's seed mean) is not in
# the interval: with the floor's spread at quick, about ±0.02/√seeds on the margin.
MARGIN_FRACTION = 0.25
CLOSE = Comparison(
    "flyvec", "word2vec", "mean_rho", "equivalent", margin=MARGIN_FRACTION, label="FlyVec vs word2vec",
    source=f"margin = {MARGIN_FRACTION:g} x (mean ρ word2vec − mean ρ random_dense) of the judged run (the margin "
           "field declared here is that fraction; the judgement carries the ρ it gives): a FlyVec that keeps three "
           "quarters of word2vec's advantage over vectors that know nothing counts as close")
FLOORS = {"flyvec": "random_hash", "word2vec": "random_dense"}  # each trained method and its untrained floor


def claim_verdict(df: pd.DataFrame) -> Verdict:
    rho = {v: per_seed(df, v, "mean_rho") for v in ("flyvec", "word2vec", "random_hash", "random_dense")}
    missing = [v for v, x in rho.items() if not x]
    if missing:
        return Verdict("inconclusive", f"missing mean_rho for {', '.join(missing)}")
    ratio_rows = df.loc[(df["metric"] == "time_ratio"), "value"].astype(float).dropna()
    ratio = float(ratio_rows.median()) if not ratio_rows.empty else math.nan
    means = {v: seed_stats(df, v, "mean_rho")[0] for v in rho}
    separation = means["word2vec"] - means["random_dense"]
    context = (f"trivial floors: random hash {means['random_hash']:.3f}, random dense {means['random_dense']:.3f}; "
               f"training time flyvec/word2vec {ratio:.2f}x (paired in one process, same threads; at most "
               f"{TIME_SLACK:g}x counts as no more)")
    if not separation > 0:
        return Verdict("inconclusive", f"word2vec's mean ρ {means['word2vec']:.3f} is not above the random dense "
                                       f"floor's {means['random_dense']:.3f}: no margin can be formed; " + context)
    margin = MARGIN_FRACTION * separation
    close = replace(CLOSE, margin=margin)
    j = judge(df, close, note=f"margin {MARGIN_FRACTION:g} x (word2vec {means['word2vec']:.3f} − random dense "
                              f"{means['random_dense']:.3f}) = {margin:.3f}")
    failed, notes, needed = [], [], []
    for method, floor in FLOORS.items():
        ok, text = floor_separation(rho[method], rho[floor], margin)
        notes.append(f"{method} vs {floor}: {text}")
        if not ok:
            failed.append(method)
            needed.append(seeds_to_separate(rho[method], rho[floor], margin))
    if failed:
        # the seeds that would decide it: enough for the floor separation and for the equivalence (observed spreads)
        needed.append(seeds_to_decide(close.kind, j.estimate.effect, j.estimate.sd, margin=margin,
                                      confidence=close.confidence) if j.estimate.finite else None)
        why = (f"{' and '.join(failed)} not shown above {'their' if len(failed) > 1 else 'its'} random floor by more "
               "than the margin (95 % paired t): the metric does not yet separate a trained model from its floor")
        j = gate(j, False, why)
        if all(n is not None for n in needed):
            j = replace(j, seeds_needed=max(needed))
    evidence = "; ".join(notes) + "; " + context
    if failed:
        return make_verdict("inconclusive", [j], evidence)
    if j.status == "does not hold" or (not math.isnan(ratio) and ratio > TIME_SLACK):
        return make_verdict("does not hold", [j], evidence)
    if j.status == "inconclusive":
        return make_verdict("inconclusive", [j], evidence)
    if math.isnan(ratio):
        return make_verdict("inconclusive", [j], evidence + "; no paired timing")
    return make_verdict("holds", [j], evidence)


@register_benchmark
def flyvec() -> Benchmark:
    return Benchmark(
        name="flyvec",
        paper=PaperRef(
            title="Can a Fruit Fly Learn Word Embeddings?",
            arxiv="2101.06887",
            code="https://github.com/bhoov/flyvec",
        ),
        claim=(
            "A fruit-fly network (Kenyon cells, winner-take-all learning) learns sparse binary word codes whose "
            "word-similarity scores are close to dense skip-gram word2vec's on the same corpus, with no more "
            "training time and far fewer bytes per word (tested on a ~0.45M-word corpus, not the paper's OpenWebText)."
        ),
        verdict_rule=(
            "equivalence of mean ρ (WS353, SimLex), FlyVec vs word2vec, paired by seed: two one-sided tests at 5 % "
            "(the 90 % paired t-interval of flyvec − word2vec) against a margin derived from the judged run's "
            f"baselines, {MARGIN_FRACTION:g} x (word2vec's mean ρ − the random dense vectors' mean ρ). Inconclusive "
            "unless FlyVec beats random FlyHash and word2vec beats random dense vectors by more than that margin "
            "(95 % paired t lower end). Then holds if the interval lies inside ±margin and FlyVec's training time is at "
            f"most {TIME_SLACK:g}x word2vec's (paired in one process, a measured condition beside the interval); does "
            "not hold if the interval lies wholly outside ±margin or FlyVec is slower than that; else (or without the "
            "paired timing) inconclusive"
        ),
        variants=[
            Variant("flyvec", "method", {}, "FlyVec: K Kenyon cells, winner-take-all rule, static FlyHash of k cells"),
            Variant("word2vec", "baseline", {}, "gensim Word2Vec skip-gram, negative sampling, same window and corpus"),
            Variant("random_hash", "baseline", {}, "FlyHash with the untrained (random) synapses, same K and k"),
            Variant("random_dense", "baseline", {}, "random Gaussian vectors of word2vec's size: the dense floor"),
        ],
        datasets={
            "gensim_wiki": lazy(f"{UNITS}:gensim_wiki"),
            "plain": lazy(f"{UNITS}:plain"),
            "wikitext": lazy(f"{UNITS}:wikitext"),
        },
        defaults=dict(
            vocab_size=10000, min_count=3, corpus_max_words=None,
            # window 11 (5 words each side), K=400: the reference launcher's defaults (flyvec/train.py --W, --hid)
            window=11, num_kenyon=400, hash_k=16, k_sweep=[2, 4, 8, 16, 32, 64, 128],
            # lr and init_std tuned on this corpus (lr 0.05-1.0, init_std 0.01-1.0, 3/5/10 epochs: 3 scores as 5 and
            # 10 within noise); the reference's lr 2e-4 is for OpenWebText's ~10^9 windows and barely moves W here
            epochs=3, lr=0.5, batch_size=10000, init_std=0.01,
            # word2vec: gensim's defaults (dim 100, lr 0.025, 5 negatives) with the same window; epochs tried 3 and 5
            # (5 is better: mean ρ 0.16 vs 0.09), as FlyVec's were
            w2v_dim=100, w2v_epochs=5, w2v_lr=0.025, w2v_negative=5,
            analogy_max_questions=20000, speed_repeats=1,
        ),
        presets={
            "smoke": dict(vocab_size=1500, corpus_max_words=20000, num_kenyon=48, hash_k=8, k_sweep=[4, 8],
                          epochs=2, batch_size=2000, w2v_dim=16, w2v_epochs=1, analogy_max_questions=200),
            "quick": {},
            # the paper's scale: OpenWebText via --dataset plain; K=400, w=11, 15 epochs, lr 2e-4 and batch 10000
            # are the reference launcher's defaults; word2vec at 300 dimensions as the paper's pretrained baseline
            "full": dict(vocab_size=20000, min_count=5, epochs=15, lr=2e-4, hash_k=50,
                         w2v_dim=300, speed_repeats=3),
        },
        metrics=[
            Metric("mean_rho", True, primary=True, tolerance=0.1,
                   description="mean of WS353 and SimLex Spearman ρ (Jaccard for codes, cosine for vectors)"),
            Metric("ws353_rho", True, tolerance=0.1, description="Spearman ρ on the in-vocabulary WordSim-353 pairs"),
            Metric("simlex_rho", True, tolerance=0.1, description="Spearman ρ on the in-vocabulary SimLex-999 pairs"),
            Metric("mean_rho_vs_k", True, curve=True, x_label="hash length k", logx=True, tolerance=0.1,
                   description="mean ρ of static FlyHash codes vs the number of active Kenyon cells"),
            Metric("analogy_acc", True, tolerance=0.2,
                   description="3CosAdd accuracy on the in-vocabulary Google analogy questions (dense vectors only)"),
            Metric("energy", False, curve=True, x_label="epoch", tolerance=0.1,
                   description="mean energy per window, −⟨W_μ̂, v/p⟩/‖W_μ̂‖, over each training epoch"),
            Metric("row_norm_dev", False, kind="info", description="mean |‖W_μ‖ − 1| after training (the rule's fixed point is 1)"),
            Metric("ws353_coverage", True, kind="info", description="fraction of WS353 pairs with both words in the vocabulary"),
            Metric("simlex_coverage", True, kind="info", description="fraction of SimLex pairs with both words in the vocabulary"),
            Metric("analogy_coverage", True, kind="info", description="fraction of analogy questions fully in the vocabulary"),
            Metric("vocab_size", True, kind="info", description="words kept after the frequency cut"),
            Metric("corpus_tokens", True, kind="info", description="in-vocabulary tokens trained on"),
            Metric("bytes_per_word", False, kind="info", description="bytes per stored word: K bits, or D float32"),
            Metric("params", False, kind="info", description="trained numbers: W [K, 2V], or word2vec's two [V, D] matrices"),
            Metric("train_time_s", False, kind="efficiency", tolerance=0.3, description="training wall time in this variant's unit"),
            Metric("paired_train_time_s", False, kind="efficiency", tolerance=0.3,
                   description="training time with both methods in one process, same corpus and threads (median)"),
            Metric("time_ratio", False, kind="efficiency", tolerance=0.3,
                   description="FlyVec training time / word2vec training time, paired (goal: at most 1)"),
            Metric("threads", True, kind="info", description="torch threads = word2vec workers in the paired timing"),
            Metric("train_state_mb", False, kind="info", description="training state: FlyVec W and ΔW; word2vec syn0 and syn1neg"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"paired_timing": lazy(f"{UNITS}:paired_timing")},
        verdict=claim_verdict,
        alone=("paired_timing",),  # timings: runs with no other unit beside it
        tasks={"full": {"wikitext": Task()}},  # WikiText raw files (the paper trains on OpenWebText)
        # fast dev run: one epoch of each method, the k sweep's first point, one paired timing
        fast_dev=FastDev(config=dict(epochs=1, w2v_epochs=1, speed_repeats=1, k_sweep=[2])),
        paper_architecture="FlyVec: K = 400 Kenyon cells over a 20,000-word vocabulary (W: K x 2V); word2vec skip-gram "
                           "of 300 dimensions on the same vocabulary",
        paper_params=[PaperParams("flyvec", 16_000_000, "K x 2 N_voc with K = 400 (the reference launcher's --hid) and "
                                  "N_voc = 20,000 (the full preset's vocabulary): our arithmetic, no count is published",
                                  tolerance=0.0, note="the vocabulary a corpus yields may be smaller than 20,000"),
                      PaperParams("word2vec", 12_000_000, "2 V D (syn0 and syn1neg) with V = 20,000, D = 300: our "
                                  "arithmetic, no count is published", tolerance=0.0)],
        param_count=lazy(f"{UNITS}:full_params"),
        # quick seeds, sized by a power estimate from the 2-seed cpu-quick.csv of commit 2ef76d5, within the quick budget:
        # the floor gates need about 6-7 seeds at the stored spread; the equivalence itself sits at its margin (no
        # affordable number decides it); 14 s per seed
        seeds={"quick": 8},
        paper_numbers=[],
        paper_numbers_note=("the stored copies of arXiv 2101.06887 hold only its abstract; its word-similarity and "
                            "timing tables could not be checked offline"),
    )
