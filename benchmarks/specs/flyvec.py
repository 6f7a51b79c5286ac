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

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperParams, PaperRef, Task, Tuning, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import (
    Comparison, Judgement, combine, floor_separation, gate, judge, judge_values, judgement, make_verdict, per_seed,
    rank_correlation_difference, seed_stats,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.flyvec"
SETS = ("ws353", "simlex")

# -------------------------------------------------------------------------------- verdict
# Declared before the run (issue 28). Two lines, reported apart:
# 1. Quality: FlyVec is close to word2vec, an equivalence test of the mean over the counted sets of ρ(flyvec) −
#    ρ(word2vec) on the judged half of the word pairs, paired by seed, with a 90 % paired bootstrap interval over
#    the pairs and the seeds (benchmarks.verdict.rank_correlation_difference: both methods score the same pairs, so
#    their difference has a smaller error than either ρ). The margin is relative to what the metric separates: a
#    fraction of word2vec's mean ρ above the random dense vectors' (vectors that know nothing), both measured on the
#    *tuning* half of the pairs in the same run, so it adapts to the corpus and preset but shares no pair with the
#    judged difference. A set counts as evidence only where word2vec beats its random floor on it by more than the
#    margin (95 % paired t over seeds): there the metric separates a trained model from one that knows nothing (a set
#    where only FlyVec did would make a better FlyVec "not equivalent"); FlyVec's separation from the random FlyHash is
#    reported beside it.
# 2. Training time: FlyVec takes no more than word2vec, a non-inferiority test of 1 − time ratio (flyvec / word2vec,
#    trained one after the other in one process, speed_repeats times) with margin 0.10 (timing noise on a shared CPU),
#    a paired t over the repeats.
# The claim holds when both lines hold ("all").
MARGIN_FRACTION = 0.25
CLOSE = Comparison(
    "flyvec", "word2vec", "mean_rho", "equivalent", margin=MARGIN_FRACTION, label="FlyVec vs word2vec, ρ",
    source=f"margin = {MARGIN_FRACTION:g} x (mean ρ word2vec − mean ρ random_dense) on the tuning half of the pairs, "
           "same run (the margin field declared here is that fraction; the judgement carries the ρ it gives): a FlyVec "
           "that keeps three quarters of word2vec's advantage over vectors that know nothing counts as close")
BOOTSTRAP_REPS = 4000  # replicates of the paired bootstrap (about 4 s a verdict on one core)
TIME_MARGIN = 0.10
NO_SLOWER = Comparison(
    "flyvec", "word2vec", "time_ratio_repeats", "noninferior", margin=TIME_MARGIN, higher_is_better=False,
    label="FlyVec vs word2vec, training time",
    source="effect = 1 − time(flyvec) / time(word2vec) per paired timing; a ratio up to 1.10 is within timing noise "
           "on a shared CPU")
FLOORS = {"flyvec": "random_hash", "word2vec": "random_dense"}  # each trained method and its untrained floor
# Settings are chosen with equal effort on the tuning half of the word pairs (datamodules.word_similarity.split_pairs:
# a fixed half of each set by the CRC-32 of the pair), never on the judged half: 12 tries each over the method's own
# main knobs, 2 seeds a try, the best mean ρ on the tuning half wins (``iclrbench tune flyvec``). Shared settings stay
# shared: the corpus, vocabulary and window (both learn from the same token stream and are scored on the same pairs),
# K = 400 Kenyon cells (the reference launcher's) and word2vec's 100 dimensions (the bytes-per-word comparison).
# word2vec's minimum count is not tuned: a word it dropped would have no vector, and the methods would be scored on
# different pairs; its learning rate, epochs and negative samples are, as FlyVec's learning rate, epochs and hash length.
TUNING = Tuning(
    score="mean_rho@split=tune",
    grids={
        "flyvec": {"lr": (0.1, 0.3, 1.0), "epochs": (3, 6), "hash_k": (16, 32)},
        "word2vec": {"w2v_lr": (0.025, 0.05), "w2v_epochs": (5, 10, 15), "w2v_negative": (5, 15)},
    },
    seeds=2,
)




def pair_scores(df: pd.DataFrame, variant: str, name: str, seeds: list[int]) -> list[list[float]]:
    """[seeds, pairs]: the variant's similarity of each judged pair of set ``name``, in pair order."""
    rows = df[(df["variant"] == variant) & (df["metric"] == f"pair_similarity@set={name}")]
    return [rows[rows["seed"] == s].sort_values("step")["value"].astype(float).tolist() for s in seeds]


def human_scores(df: pd.DataFrame, name: str) -> list[float]:
    rows = df[df["metric"] == f"pair_human@set={name}"]
    if rows.empty:
        return []
    first = rows[rows["seed"] == rows["seed"].min()]
    return first.sort_values("step")["value"].astype(float).tolist()


def time_judgement(df: pd.DataFrame) -> Judgement:
    rows = df[(df["metric"] == "time_ratio_repeats") & df["step"].notna()]
    ratios = {int(r.step): float(r.value) for r in rows.itertuples()}
    j = judge_values(NO_SLOWER, ratios, {k: 1.0 for k in ratios})  # repeats pair with the ratio 1 (as fast)
    if not ratios:
        return gate(j, False, "no paired timing")
    values = sorted(ratios.values())
    return replace(j, note="; ".join(filter(None, [j.note, f"time ratio median {values[len(values) // 2]:.2f} (range "
                                                            f"{values[0]:.2f}–{values[-1]:.2f}) over {len(values)} paired timings"])))


def claim_verdict(df: pd.DataFrame) -> Verdict:
    names = ("flyvec", "word2vec", "random_hash", "random_dense")
    rho = {v: per_seed(df, v, "mean_rho") for v in names}
    missing = [v for v, x in rho.items() if not x]
    if missing:
        return Verdict("inconclusive", f"missing mean_rho for {', '.join(missing)}")
    tune = {v: seed_stats(df, v, "mean_rho@split=tune")[0] for v in ("word2vec", "random_dense")}
    separation = tune["word2vec"] - tune["random_dense"]
    timing = time_judgement(df)
    floors = "; ".join(f"{n}: " + ", ".join(f"{v} {seed_stats(df, v, f'{n}_rho')[0]:.3f}" for v in names) for n in SETS)
    if not separation > 0:
        j = gate(judge(df, CLOSE), False, f"word2vec's ρ on the tuning half ({tune['word2vec']:.3f}) is not above the "
                                          f"random dense floor's ({tune['random_dense']:.3f}): no margin can be formed")
        return make_verdict("inconclusive", [j, timing], "judged-half ρ per set: " + floors)
    margin = MARGIN_FRACTION * separation
    close = replace(CLOSE, margin=margin)
    counted, notes = [], []
    for n in SETS:
        seps = {m: floor_separation(per_seed(df, m, f"{n}_rho"), per_seed(df, f, f"{n}_rho"), margin) for m, f in FLOORS.items()}
        if seps["word2vec"][0]:  # the metric separates a trained model from its floor on this set
            counted.append(n)
        notes.append(f"{n} ({'counted' if n in counted else 'not counted'}): "
                     + "; ".join(f"{m} vs {FLOORS[m]} {text}" for m, (ok, text) in seps.items()))
    margin_note = (f"margin {MARGIN_FRACTION:g} x (word2vec {tune['word2vec']:.3f} − random dense "
                   f"{tune['random_dense']:.3f}, tuning half) = {margin:.3f}")
    seeds = sorted(set(rho["flyvec"]) & set(rho["word2vec"]))
    sets = [(pair_scores(df, "flyvec", n, seeds), pair_scores(df, "word2vec", n, seeds), human_scores(df, n))
            for n in counted]
    shapes_ok = sets and all(len(h) > 2 and all(len(x) == len(h) for x in m + b) for m, b, h in sets)
    if not counted or not shapes_ok or len(seeds) < 2:
        why = ("no evaluation set on which word2vec beats its random floor by more than the margin" if not counted
               else "fewer than 2 paired seeds" if len(seeds) < 2 else "per-pair similarities missing")
        j = gate(judge(df, close, note=margin_note), False, why)
        return make_verdict("inconclusive", [j, timing], "; ".join(notes) + "; judged-half ρ per set: " + floors)
    est = rank_correlation_difference(sets, close.confidence, reps=BOOTSTRAP_REPS)
    pairs_only = rank_correlation_difference(sets, close.confidence, reps=BOOTSTRAP_REPS, resample_seeds=False)
    means = (sum(_set_mean(df, "flyvec", n) for n in counted) / len(counted),
             sum(_set_mean(df, "word2vec", n) for n in counted) / len(counted))
    q = judgement(replace(close, metric=f"ρ over {'+'.join(counted)}"), replace(est, sd=math.nan), means=means,
                  note=f"{margin_note}; the pairs alone give [{pairs_only.low:+.3f}, {pairs_only.high:+.3f}], which more "
                       "seeds cannot narrow")
    status = combine([q, timing], "all")
    return make_verdict(status, [q, timing], "; ".join(notes) + "; judged-half ρ per set: " + floors)


def _set_mean(df: pd.DataFrame, variant: str, name: str) -> float:
    return seed_stats(df, variant, f"{name}_rho")[0]


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
            "two lines, both must hold. (1) ρ: equivalence of the mean over evaluation sets (WS353, SimLex) of "
            "Spearman ρ(FlyVec) − ρ(word2vec) on the judged half of each set's pairs (the other half chose both "
            "methods' settings, 12 tries each), a 90 % paired bootstrap interval over the pairs and the seeds, against "
            f"a margin of {MARGIN_FRACTION:g} x (word2vec's mean ρ − the random dense vectors' mean ρ) measured on the "
            "tuning half: holds inside ±margin, does not hold wholly outside, else inconclusive. A set counts only where "
            "word2vec beats its random floor by more than the margin (95 % paired t over seeds; FlyVec's floor is the "
            "random FlyHash); no set counted is inconclusive. (2) Training time: non-inferiority of 1 − time(FlyVec) / "
            f"time(word2vec) over paired timings in one process (margin {TIME_MARGIN:g}: a 90 % paired t interval's lower "
            "end above −0.1 holds)"
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
            # the tuned settings (TUNING, `iclrbench tune flyvec`, results/reference/flyvec-quick-tuning.csv; mean ρ on
            # the tuning half of the pairs, 2 seeds): FlyVec lr 1.0, 3 epochs, hash length 16 (0.099; its 12 tries
            # 0.037-0.099), word2vec lr 0.05, 15 epochs, 5 negatives (0.378; its 12 tries 0.178-0.378, gensim's defaults
            # with 5 epochs the lowest). init_std 0.01 and 100 dimensions are not tuned (above). The reference's lr 2e-4
            # is for OpenWebText's ~10^9 windows and barely moves W here.
            epochs=3, lr=1.0, batch_size=10000, init_std=0.01,
            w2v_dim=100, w2v_epochs=15, w2v_lr=0.05, w2v_negative=5,
            analogy_max_questions=20000, speed_repeats=3,
        ),
        presets={
            "smoke": dict(vocab_size=1500, corpus_max_words=20000, num_kenyon=48, hash_k=8, k_sweep=[4, 8],
                          epochs=2, batch_size=2000, w2v_dim=16, w2v_epochs=1, analogy_max_questions=200),
            "quick": {},
            # the paper's scale: OpenWebText via --dataset plain; K=400, w=11, 15 epochs, lr 2e-4 and batch 10000
            # are the reference launcher's defaults; word2vec at 300 dimensions as the paper's pretrained baseline,
            # with gensim's defaults (5 epochs, lr 0.025, 5 negatives): the quick tuning does not carry over to a
            # corpus 2,000 times larger, where `iclrbench tune flyvec --preset full` would tune both again
            "full": dict(vocab_size=20000, min_count=5, epochs=15, lr=2e-4, hash_k=50,
                         w2v_dim=300, w2v_epochs=5, w2v_lr=0.025, w2v_negative=5, speed_repeats=3),
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
            Metric("pair_similarity", True, kind="info", curve=True, plot=False, x_label="judged pair",
                   description="similarity of each judged pair (step = its index; flyvec and word2vec): the paired "
                               "bootstrap over pairs resamples these"),
            Metric("pair_human", True, kind="info", curve=True, plot=False, x_label="judged pair",
                   description="human score of each judged pair (step = its index), in the order of pair_similarity"),
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
            Metric("time_ratio_repeats", False, kind="efficiency", curve=True, plot=False, x_label="repeat", tolerance=0.3,
                   description="the time ratio of each paired timing (step = the repeat)"),
            Metric("threads", True, kind="info", description="torch threads = word2vec workers in the paired timing"),
            Metric("train_state_mb", False, kind="info", description="training state: FlyVec W and ΔW; word2vec syn0 and syn1neg"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"paired_timing": lazy(f"{UNITS}:paired_timing")},
        verdict=claim_verdict,
        tuning=TUNING,
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
        # quick seeds, sized on the tuning half (not the judged one): the tuned pair differs by 0.28 in mean ρ there
        # against a margin of about 0.09, and seeds move FlyVec's ρ by about 0.03, so 4 seeds decide the equivalence
        # line either way; the issue asks for at least 3. Each seed costs about 33 s of word2vec (15 epochs), 6 s of
        # FlyVec and 2 s of floors here, and the 3 paired timings about 2 min alone.
        seeds={"quick": 4},
        paper_numbers=[],
        paper_numbers_note=("the stored copies of arXiv 2101.06887 hold only its abstract; its word-similarity and "
                            "timing tables could not be checked offline"),
    )
