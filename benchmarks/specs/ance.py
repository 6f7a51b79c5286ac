"""ANCE: dense retrieval trained on asynchronously refreshed ANN negatives (paper 7).

The declaration and the verdict; what a unit runs is ``benchmarks/units/ance.py``, the math
``lit_modules/ance/``, the data ``datamodules/retrieval.py``. The training loop is a
Lightning fit; the index refresh is a callback (a background thread). Not checked on a GPU:
the ``full`` preset (MS MARCO from ``--data-dir``, bert-base-uncased from a name or path).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperNumber, PaperParams, PaperRef, Task, Tuning, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import Comparison, floor_separation, gate, judge, make_verdict, per_seed, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.ance"
METHOD = "ance"
SOURCES = ("random_neg", "inbatch_neg", "bm25_neg")  # the other negative sources, same encoder, budget and negatives
DELTA = 0.01
DELTA_SOURCE = ("scale argument: the paper's smallest gap, ANCE (FirstP) vs BM25 Neg on MARCO dev, is 0.031 MRR@10 "
                "(Table 1, 0.330 vs 0.299); 0.01 is the smallest difference a reader would call a gain")
# the best other source is chosen on the validation split (never the judged test split), among those that trained
SELECT_ON = "mrr_at_10@split=validation"
# a dense variant counts as trained when its MRR@10 is above its floor (the larger of its untrained encoder's, step 0,
# and a random ranking's) by more than this, at 95 % (floor_separation, paired by seed: same seed = same start);
# issue 26's "at least 0.05 MRR@10 over the untrained start"
LEARNED_MARGIN = 0.05
SMALL_CANNOT = ("On the inverse cloze task (gensim_wiki) a small encoder learns the passages it has seen, not a "
                "matching function that reaches unseen ones (the spec's comments give the figures); the default "
                "task, wikilinks, is where dense retrievers learn at this scale.")


# equal effort: every trained negative source gets the same three learning rates, one seed each, scored on the
# validation split; ance_sync takes ance's (an ablation of the refresh, not a source)
TUNING = Tuning(score=SELECT_ON, grids={v: {"lr": (1e-4, 3e-4, 1e-3, 3e-3)} for v in (METHOD, *SOURCES)}, seeds=1)


def comparison(baseline: str, metric: str = "mrr_at_10", label: str = "") -> Comparison:
    return Comparison(METHOD, baseline, metric, "better", delta=DELTA, source=DELTA_SOURCE, label=label)


def floor(df: pd.DataFrame, variant: str) -> dict[int, float]:
    """seed -> the larger of the variant's untrained (step-0) MRR@10 and a random ranking's."""
    untrained = per_seed(df, variant, "untrained_mrr_at_10")
    random = per_seed(df, variant, "trivial_mrr_at_10@ranking=random")
    return {s: max(untrained.get(s, -math.inf), random.get(s, -math.inf)) for s in sorted(set(untrained) | set(random))}


def trained(df: pd.DataFrame, variant: str) -> tuple[bool, str]:
    """Has a dense variant trained beyond its start? (MRR@10 above its floor by more than LEARNED_MARGIN)"""
    if not per_seed(df, variant, "mrr_at_10"):
        return False, f"{variant}: no rows"
    ok, text = floor_separation(per_seed(df, variant, "mrr_at_10"), floor(df, variant), LEARNED_MARGIN)
    return ok, f"{variant}: {text.replace('model − floor ', '')}"


def best_source(df: pd.DataFrame, candidates: list[str]) -> tuple[str, str]:
    """The strongest other negative source: the highest mean validation MRR@10 (the test split when a run has no
    validation rows, said so)."""
    for metric, where in ((SELECT_ON, "validation"), ("mrr_at_10", "test: no validation rows")):
        scores = {v: seed_stats(df, v, metric)[0] for v in candidates if seed_stats(df, v, metric)[2]}
        if scores:
            best = max(scores, key=scores.get)
            return best, f"best other source {best} by mean MRR@10 on {where} (" + ", ".join(
                f"{v} {x:.3f}" for v, x in sorted(scores.items(), key=lambda kv: -kv[1])) + ")"
    return candidates[0], "no MRR@10 rows for the other sources"


def claim_verdict(df: pd.DataFrame) -> Verdict:
    """ANN negatives (ance) beat the best other negative source on MRR@10, paired by seed, once both trained beyond
    their start; ance vs BM25 a separate line, overall and on mentions that are not their title."""
    present = [v for v in SOURCES if seed_stats(df, v, "mrr_at_10")[2]]
    if seed_stats(df, METHOD, "mrr_at_10")[2] == 0 or not present:
        return make_verdict("inconclusive", [], "missing mrr_at_10 for ance or for every other negative source")
    competence = {v: trained(df, v) for v in (METHOD, *present)}
    learned = [v for v in present if competence[v][0]]
    best, how = best_source(df, learned or present)
    untrained = [v for v in (METHOD, best) if not competence[v][0]]
    primary = gate(judge(df, comparison(best, label=f"ance vs the best other source ({best})")), not untrained,
                   f"not trained beyond its start: {', '.join(untrained)} (below)")
    lines = [primary]
    if seed_stats(df, "bm25", "mrr_at_10")[2]:  # "and beat BM25": its own line, not part of the status
        lines.append(gate(judge(df, comparison("bm25", label="ance vs bm25 (separate line)")), competence[METHOD][0],
                          "ance not trained beyond its start"))
        if seed_stats(df, METHOD, "mrr_at_10@subset=nonexact")[2]:
            lines.append(judge(df, comparison("bm25", "mrr_at_10@subset=nonexact",
                                              "ance vs bm25, mentions that are not their title (reported)")))
    lines += [judge(df, comparison(v, label=f"ance vs {v} (reported)")) for v in present if v != best]

    def mean(variant: str, metric: str) -> float:
        return seed_stats(df, variant, metric)[0]

    notes = [how + "; the status is that line alone"]
    notes.append(f"trained beyond the start (MRR@10 − floor, margin {LEARNED_MARGIN:g}): "
                 + "; ".join(text for _, text in competence.values()))
    notes.append("floors: untrained encoder (step 0) " + ", ".join(
        f"{v} {mean(v, 'untrained_mrr_at_10'):.3f}" for v in (METHOD, *present)) +
        f"; random ranking {mean(METHOD, 'trivial_mrr_at_10@ranking=random'):.4f}; simple reference bm25 "
        f"{mean('bm25', 'mrr_at_10'):.3f}")
    ann, rnd = mean(METHOD, "neg_grad_norm@source=ann"), mean(METHOD, "neg_grad_norm@source=random")
    if math.isfinite(ann) and math.isfinite(rnd):
        notes.append(f"gradient norm of the same batches on the trained ance encoder: ANN negatives {ann:.2f} vs random "
                     f"{rnd:.2f} (loss {mean(METHOD, 'neg_loss@source=ann'):.3f} vs {mean(METHOD, 'neg_loss@source=random'):.3f})")
    sync = seed_stats(df, "ance_sync", "mrr_at_10")
    if sync[2]:
        notes.append(f"asynchronous refresh: ance MRR@10 {mean(METHOD, 'mrr_at_10'):.3f}, lag {mean(METHOD, 'refresh_lag'):.1f} "
                     f"steps, fit {mean(METHOD, 'fit_s'):.1f} s; synchronous ance_sync {sync[0]:.3f}, lag 0, fit "
                     f"{mean('ance_sync', 'fit_s'):.1f} s")
    if "dataset" in df and "gensim_wiki" in set(df["dataset"]) and not all(ok for ok, _ in competence.values()):
        notes.append(SMALL_CANNOT)
    return make_verdict(primary.status, lines, "; ".join(notes))


@register_benchmark
def ance() -> Benchmark:
    return Benchmark(
        name="ance",
        paper=PaperRef(
            title="Approximate Nearest Neighbor Negative Contrastive Learning for Dense Text Retrieval",
            arxiv="2007.00808",
            code="https://github.com/microsoft/ANCE",
        ),
        claim=(
            "Negatives retrieved from an ANN index of the corpus, built with a recent checkpoint of the encoder being "
            "trained and refreshed asynchronously, train a dense retriever better than random, in-batch or BM25 "
            "negatives at the same budget, and beat BM25 (tested on mention -> entity retrieval over the ~21k "
            "entities of gensim's Wikipedia extract with a small BERT trained from scratch, not MS MARCO passages "
            "with RoBERTa-base)."
        ),
        verdict_rule=(
            f"ANCE (ANN negatives) must beat the best other negative source ({', '.join(SOURCES)}: the one with the "
            "highest mean validation MRR@10 among those that trained, chosen on the validation split, never the "
            f"judged test split) on test MRR@10 by the smallest gain {DELTA} (the paper's smallest gap, vs BM25 Neg, "
            "is 0.031): the 95 % interval of ance − best over seeds, paired (same seed = same initial encoder and data; "
            "paired t for 3-5 seeds, IQM with a stratified bootstrap from 6), holds if its lower end is above 0 and its "
            f"upper end is not below {DELTA}, does not hold if its upper end is below {DELTA}, else inconclusive. It is "
            "inconclusive unless ance and that source have trained beyond their start: MRR@10 above the floor (the "
            "larger of the untrained encoder's, step 0, and a random ranking's) by more than "
            f"{LEARNED_MARGIN} at 95 %. ance vs bm25 is a separate line judged the same way (beside it, on the "
            "mentions that are not their entity's title), and ance vs each other source is reported; neither is part "
            "of the status"
        ),
        variants=[
            # learning rates at quick: the winners of `iclrbench tune ance` (results/reference/ance-quick-tuning.csv), per
            # variant and preset (Variant.presets), so that they never reach the full preset's BERT-base
            Variant("ance", "method", {}, "ANN negatives from an index refreshed asynchronously by a background thread "
                    "(BM25 negatives until the first index is ready: the paper's warm-up)", presets={"quick": {"lr": 3e-4}}),
            # 1 quick seed (was 2, about 150 s of unit time): an ablation reported beside, never judged
            Variant("ance_sync", "method", {}, "ablation: the same refreshes, but training waits for each (lag 0)",
                seeds={"quick": 1}, presets={"quick": {"lr": 3e-4}}),
            Variant("bm25", "baseline", {}, "bm25s (Lucene BM25, k1 1.5, b 0.75), no training; wikilinks: queried with "
                    "the mention alone"),
            Variant("random_neg", "baseline", {}, "the same dual encoder and budget, uniform random negatives",
                    presets={"quick": {"lr": 1e-3}}),
            Variant("inbatch_neg", "baseline", {}, "the same dual encoder and budget, as many negatives drawn at random "
                    "from the other queries' positives (the paper's Rand Neg), a column of the row's own passage masked",
                    presets={"quick": {"lr": 1e-3}}),
            Variant("bm25_neg", "baseline", {}, "the same dual encoder and budget, negatives from BM25's top passages",
                    presets={"quick": {"lr": 1e-3}}),
        ],
        datasets={
            "wikilinks": lazy(f"{UNITS}:retrieval", name="wikilinks"),
            "gensim_wiki": lazy(f"{UNITS}:retrieval", name="gensim_wiki"),
            "msmarco": lazy(f"{UNITS}:retrieval", name="msmarco"),
            "beir": lazy(f"{UNITS}:retrieval", name="beir"),
        },
        # gensim_wiki, the inverse cloze task: the default before issue 26, kept as a named dataset. What follows was
        # measured there with its own settings then (init="corpus", 1 layer, 200 steps of 16 x 4 negatives, lr 1e-4,
        # pool_lr 3e-2, 64-token passages, negatives_from="train"; pass them with --set to run it that way).
        # From scratch (2 layers, plain mean pooling) every dense variant stayed at a random ranking's MRR@10 on the
        # held-out articles (lr 1e-3 memorises the training pairs: training-query MRR@10 0.46, held-out 0.00; 2e-4..3e-4
        # at best ~0.025). So at quick every dense variant starts from the same offline, unsupervised corpus
        # initialisation (init="corpus", lit_modules/ance/pretrain.py: IDF pooling weights from the training articles'
        # passages only, position embeddings zeroed): held-out MRR@10 ~0.085 at step 0 (random ranking 0.003). Fine-tuning
        # all weights then lowers it (lr 3e-4: 0.08 -> 0.05 -> 0.01 at 3e-3; a temperature did not help), so the encoder
        # trains at lr 1e-4 and the pooling (term) weights at pool_lr 3e-2 (these alone: 0.085 -> 0.097 at 100 steps, 0.093
        # at 200 with lr 1e-2). One layer beat two at step 0 (0.085 vs 0.070); PPMI-SVD word vectors as token embeddings
        # ranked below random ones (0.007 vs 0.018 as a plain bag of vectors).
        # Does training move the encoder beyond that start? At 100 steps on 857 queries no variant did (MRR@10 0.080-0.088
        # vs 0.085 in results/reference; on this machine the same code's step-0 encoder gives 0.073 / 0.080 for seeds 0 / 1).
        # Diagnosis (seed 1, 400 steps, random and in-batch negatives, held-out vs 200 training queries' MRR@10 over the
        # corpus): the loss falls and training-query MRR@10 rises with the lr while held-out MRR@10 stays flat or falls,
        # i.e. the encoder learns what is specific to the training articles. With every sentence a query (4,622): lr 1e-4
        # train 0.05 -> 0.11/0.12, held-out 0.080 -> 0.068/0.069; 3e-4: train 0.25/0.33, held-out 0.054; 1e-3: train
        # 0.47/0.66, held-out 0.027/0.035. Negatives from the whole corpus make it worse: a held-out article's passage is
        # then only ever a negative (lr 1e-3, word embeddings frozen: random_neg held-out 0.046 vs 0.069 with negatives
        # from the training articles only), so every source now draws from the training articles' passages (negatives_from).
        # Tried with that, for random / in-batch equally (held-out MRR@10 at 400 steps, start 0.080; lr: the transformer's): word embeddings
        # frozen (emb_lr 0) with lr 1e-4 / pool_lr 3e-2: 0.084 / 0.077, lr 3e-4 / pool_lr 1e-1: 0.085 / 0.084; lr 1e-4 /
        # pool_lr 1e-1: 0.069 / 0.068; lr 3e-5: 0.075 / 0.073; only the pooling weights (pool_lr 3e-2..3e-1): 0.073-0.081
        # (training MRR@10 up to 0.16: per-token weights learned on training articles do not reach words of held-out
        # ones); only the transformer (lr 1e-4, 3e-4): 0.070-0.082, the loss barely moves; unit-norm embeddings with a
        # temperature 0.05 / 0.1 (start 0.067): 0.061-0.083; width 128 (start 0.145): 0.136-0.149; 4x more training pairs
        # (the training articles' passages beyond the 12, 16,976 pairs): 0.068-0.081; the query sentence kept in its
        # positive (Lee et al.'s exact-match pairs): 0.039-0.083; one learned power of the IDF as the pooling weight
        # (shared by every word; idf^3..4 at step 0 gives 0.100-0.108): training lowers the power, held-out 0.046-0.061 (200 steps; not kept).
        # What bounds the dense model here: at width 64 it ranks like a random projection of TF-IDF (a bag of the word
        # vectors: 0.079 vs 0.080), exact TF-IDF over the same 64 tokens gives 0.248 and BM25 0.380; ~85 training
        # articles do not teach a 64-dimensional encoder anything that transfers to unseen articles. Not reached: MRR@10
        # above the start by 0.03.
        # Stronger starts, tried later (seed 0, held-out MRR@10 at step 0 -> after 200 steps; scripts not kept):
        # - MLM pre-training on the corpus passages (BertForMaskedLM, width 64, 2,000 steps of 32, final loss 6.4): 0.012
        #   -> 0.027 with IDF pooling, below the init="corpus" start;
        # - contrastive pre-training on two random crops of every corpus passage (Contriever-style, in-batch, 300 steps):
        #   0.073 -> 0.062, then random / in-batch fine-tuning 0.072 / 0.073;
        # - pre-trained static token embeddings shipped in the wordllama 0.4 wheel (l2_supercat, Llama-2 tokenizer, the
        #   first 128 of 256 dimensions; IDF pooling, cosine / 0.05; the transformer's output projections zeroed, so that
        #   step 0 is the bag of vectors): 0.277 at step 0, a real retriever (BM25 0.380), but lr 1e-3 fine-tuning lowers it:
        #   random 0.260, in-batch 0.253, BM25 negatives 0.263, ANN (refreshed every 25 steps) 0.276; lr 3e-4 0.272-0.276;
        #   frozen word embeddings the same; with every passage of every article (4k passages, start 0.183) 0.191-0.193
        #   after 200 or 600 steps;
        # - and it is not the article split: with 20% of the training passages held out of training (their queries too),
        #   their own 172 queries go 0.054 -> 0.053 (random) / 0.061 (in-batch) at lr 1e-4, 0.034 / 0.064 at 1e-3. ~3,700 ICT pairs
        #   teach the encoder the passages it has seen, not a matching function that reaches passages it has not.
        # A dense retriever that learns here needs a pre-trained contextual encoder and more pairs: the `full` preset
        # (bert-base-uncased, MS MARCO from --data-dir), which needs a download.
        # its quick then, sized for a 4-minute budget: 12 passages per article (1,064 passages; 201 held-out ICT
        # queries; every sentence of a training passage a query, 4,622, whose positive is its passage minus it), passages
        # cut at 64 tokens, a 1-layer BERT of width 64, 200 steps of 16 queries x 4 negatives (in-batch: 15) from the
        # training articles' passages; evaluation every 25 steps; ANCE refreshes every 25 steps from step 20.
        # wikilinks (issue 26), measured before any tuning (seed 0, lr 1e-3, 400 steps of 32, 7 negatives, 2 layers of
        # width 64, span pooling of the marked mention, every variant from the seeded random encoder, init="none"):
        # test MRR@10 at step 0 0.049-0.053 (random ranking 0.0001), after 50 steps 0.72-0.75, after 400 random_neg 0.768,
        # inbatch_neg 0.797; bm25 (the mention alone) 0.850, 0.585 on mentions that are not their title. Dense
        # retrievers learn here. The budget was then cut to 300 steps with 5 evaluation points (unit time; the curve
        # is flat after ~150 steps) and the learning rate tuned per source (`tuning` below).
        # Depths: the paper's fraction (200 of 8.8M) is half a passage of 20,821, so both ANN and BM25 negatives come
        # from the top 0.1 % (21 passages: the floor, neg_pool + 1), as close to its regime as a pool allows.
        defaults=dict(
            # wikilinks (the default): GENRE's input, 4 words of context each side of the marked mention; a seeded
            # subsample of the held-out validation and test mentions (the same for every variant)
            context_words=4, max_eval_queries=1000,
            # gensim_wiki (inverse cloze): its passages and queries (datamodules.retrieval.inverse_cloze)
            passage_words=100, max_passages_per_article=12, min_query_words=6, test_frac=0.2, all_train_sentences=True,
            split_seed=0, negatives_from="all",
            # training queries: 9,600 = max_steps x batch_size, one epoch, a seeded subset of wikilinks' 21,501 (another per
            # seed, the same for every variant of a seed): what the steps use, and what an ANN refresh and BM25 encode
            max_train_queries=9600, max_test_queries=None, vocab_size=4000, query_max_len=32, passage_max_len=16,
            checkpoint=None, init="none", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256,
            batch_size=32, num_negatives=7, lr=1e-3, pool_lr=None, weight_decay=0.01, warmup_steps=20, grad_clip=1.0,
            max_steps=300, emb_lr=None, temperature=None,
            # negatives: ANN from the top depth_frac of the candidate passages (the paper: 200 of 8.8M, 2.3e-5), BM25
            # Neg from BM25's top bm25_depth_frac (the paper: 100 of 8.8M); at least neg_pool + 1 passages. Each
            # refresh draws a pool of neg_pool per query; steps sample num_negatives from it
            depth_frac=0.001, bm25_depth_frac=0.001, neg_pool=20, refresh_every=75, refresh_start=25,
            eval_every=75, eval_k=100, grad_batches=2,
        ),
        presets={
            "smoke": dict(max_passages_per_article=2, max_train_queries=400, max_eval_queries=50, vocab_size=300, query_max_len=16,
                          hidden_size=16, num_layers=1, intermediate_size=32, batch_size=8, num_negatives=2,
                          max_steps=4, warmup_steps=1, neg_pool=4, refresh_every=2, refresh_start=1, eval_every=2,
                          grad_batches=1),
            "quick": {},
            # MS MARCO passage ranking (--dataset msmarco) with a pretrained BERT-base (the paper: RoBERTa-base; bert-base-
            # uncased's WordPiece specials match our tokenisation). Sec. 5: one negative per positive from the ANN top 200,
            # index refreshed every 10k batches, linear warm-up over 5000 steps; BM25 warm-up before the first index.
            # Our lr is AdamW's for BERT-base (the paper: LAMB at 1e-6); the step budget is a guess. Not checked on a GPU.
            "full": dict(max_passages_per_article=None, checkpoint="bert-base-uncased", init="none", pool_lr=None, passage_max_len=128,
                         query_max_len=32, batch_size=32, num_negatives=1, lr=1e-5, warmup_steps=5000,
                         max_steps=100000, refresh_every=10000, refresh_start=10000, eval_every=20000,
                         grad_batches=16, depth_frac=200 / 8_841_823, bm25_depth_frac=100 / 8_841_823, max_eval_queries=None,
                         max_train_queries=None),
        },
        metrics=[
            Metric("mrr_at_10", True, primary=True, tolerance=0.1,
                   description="MRR@10 of the held-out queries over the whole corpus (torchmetrics RetrievalMRR)"),
            Metric("ndcg_at_10", True, tolerance=0.1, description="nDCG@10 (torchmetrics RetrievalNormalizedDCG)"),
            Metric("recall_at_k", True, tolerance=0.1, description="Recall@k, k = 1, 10, 100 (torchmetrics RetrievalRecall)"),
            Metric("mrr_at_10_vs_step", True, curve=True, x_label="training step", tolerance=0.1,
                   description="MRR@10 during training, per negative source (step 0: the untrained encoder)"),
            Metric("untrained_mrr_at_10", True, kind="info",
                   description="MRR@10 of the initial encoder, step 0 (a trivial baseline); @subset= on a test subset"),
            Metric("trivial_mrr_at_10", True, kind="info",
                   description="@ranking=random: expected MRR@10 of a uniformly random ranking, (1/P) Σ_{r≤10} 1/r"),
            Metric("neg_loss", True, kind="info",
                   description="contrastive loss of training batches on the trained encoder, @source=ann (fresh index) vs random negatives"),
            Metric("neg_grad_norm", True, kind="info",
                   description="global gradient norm of those batches: the paper's argument that random negatives give small gradients"),
            Metric("neg_loss_vs_step", True, kind="info", curve=True, x_label="training step",
                   description="contrastive loss of the same training batches with ANN (fresh index) vs random negatives"),
            Metric("neg_grad_norm_vs_step", True, kind="info", curve=True, x_label="training step",
                   description="global gradient norm of those batches (paper Sec. 3: random negatives' gradients vanish)"),
            Metric("train_loss_vs_step", False, kind="info", curve=True, x_label="training step",
                   description="training loss on the variant's own negatives (mean over each evaluation interval)"),
            Metric("train_grad_norm_vs_step", True, kind="info", curve=True, x_label="training step",
                   description="global gradient norm before clipping on the variant's own negatives (mean per interval)"),
            Metric("depth", True, kind="info",
                   description="passages whose top negatives are drawn from, @source=ann / bm25 (depth_frac of the candidates)"),
            Metric("refresh_lag", False, kind="info",
                   description="mean training steps between a refresh's snapshot and the first step that uses it (sync: 0)"),
            Metric("index_staleness", False, kind="info",
                   description="mean steps between a training step and the snapshot behind its ANN negatives"),
            Metric("refreshes", True, kind="info", description="index refreshes adopted during training"),
            Metric("fallback_steps", False, kind="info", description="ANCE steps on BM25 negatives before the first index was ready"),
            Metric("refresh_s", False, kind="efficiency", tolerance=0.5, description="seconds per refresh (encode corpus and queries, index, search)"),
            Metric("data_count", True, kind="info", description="@passages, @train_queries, @test_queries"),
            Metric("params", False, kind="info", description="encoder parameters (shared by queries and passages)"),
            Metric("encode_throughput", True, kind="efficiency", tolerance=0.5,
                   description="passages encoded per second at evaluation (bm25: indexed per second)"),
            Metric("search_throughput", True, kind="efficiency", tolerance=0.5,
                   description="held-out queries searched per second (faiss IndexFlatIP top-100, or bm25s)"),
            Metric("train_step_ms", False, kind="efficiency", tolerance=0.5, description="median training step"),
            Metric("fit_s", False, kind="efficiency", tolerance=0.5, description="wall time of the fit, evaluations included"),
        ],
        run=lazy(f"{UNITS}:run"),
        tuning=TUNING,
        tasks={"quick": {"wikilinks": Task()}, "full": {"msmarco": Task()}},  # MS MARCO passage ranking (collection.tsv, queries, qrels)
        stand_in_keys=("checkpoint",),  # bert-base-uncased is a download: --stand-in-data builds its architecture
        # fast dev run: two training steps, the index refreshed at step 1 (so an ANN refresh runs), evaluation at the
        # start and the end; on a CPU a batch of 4 (BERT-base over 32 queries x 128-token passages with gradient
        # accumulation 16 is a GPU job)
        fast_dev=FastDev(config=dict(refresh_every=1, refresh_start=1, eval_every=1000, warmup_steps=1, grad_batches=1),
                         batch_keys=("batch_size",), cpu_batch=4),
        paper_architecture="BERT-base dual encoder (shared weights), initialised from bert-base-uncased (the paper: "
                           "RoBERTa-base)",
        paper_params=[PaperParams(v, 110_000_000, "Devlin et al. 2019 (arXiv 1810.04805) Sec. 3: BERT-base, "
                                  "L=12, H=768, A=12, total parameters 110M", tolerance=0.03,
                                  note="the encoder without BERT's pre-training heads")
                      for v in ("ance", "ance_sync", "random_neg", "inbatch_neg", "bm25_neg")],
        param_count=lazy(f"{UNITS}:full_params"),
        verdict=claim_verdict,
        # quick seeds: 3, the floor. The first 3-seed run on wikilinks (commit f45cd1d): ance − inbatch_neg
        # −0.142 [−0.431, +0.147], about 7 seeds would decide it; ance's seeds spread 0.52-0.75 (ANN negatives make its
        # curve oscillate), the others' 0.01-0.02. A seed of the five dense variants and bm25 costs ~560 s of unit time
        # (~110 s a dense unit), so 7 seeds would add ~37 min of unit time: beyond the quick budget. ance_sync 1 seed (was 2)
        seeds={"quick": 3},
        paper_numbers=[
            # Table 1 of arXiv 2007.00808 (checked against two restatements of the table, one a full translation of
            # the paper): MARCO Dev Passage Retrieval MRR@10. Our full preset runs the same data with a BERT-base dual
            # encoder (the paper: RoBERTa-base, warmed up on BM25 negatives).
            PaperNumber("ance", "msmarco", "mrr_at_10", 0.330, "arXiv 2007.00808 Table 1, ANCE (FirstP), MARCO Dev Passage Retrieval MRR@10", scope="target"),
            PaperNumber("bm25_neg", "msmarco", "mrr_at_10", 0.299, "arXiv 2007.00808 Table 1, BM25 Neg, MARCO Dev Passage Retrieval MRR@10", scope="target"),
            PaperNumber("bm25", "msmarco", "mrr_at_10", 0.240, "arXiv 2007.00808 Table 1, BM25 (sparse), MARCO Dev Passage Retrieval MRR@10", scope="target"),
            PaperNumber("inbatch_neg", "msmarco", "mrr_at_10", 0.261, "arXiv 2007.00808 Table 1, Rand Neg, MARCO Dev Passage Retrieval MRR@10; "
                        "context: the paper's Rand Neg samples negatives at random within the batch (Sec. 5), ours uses every other positive", scope="context"),
            # TREC DL 2019 passage retrieval NDCG@10: the same corpus, but NIST-judged test queries, not the dev qrels
            PaperNumber("ance", "msmarco", "ndcg_at_10", 0.648, "arXiv 2007.00808 Table 1, ANCE (FirstP), TREC DL Passage NDCG@10 Retrieval; "
                        "context: TREC DL 2019 test queries and judgements, not MS MARCO dev", scope="context"),
            PaperNumber("bm25", "msmarco", "ndcg_at_10", 0.506, "arXiv 2007.00808 Table 1, BM25, TREC DL Passage NDCG@10 Retrieval; "
                        "context: TREC DL 2019 test queries and judgements, not MS MARCO dev", scope="context"),
            PaperNumber("bm25_neg", "msmarco", "ndcg_at_10", 0.591, "arXiv 2007.00808 Table 1, BM25 Neg, TREC DL Passage NDCG@10 Retrieval; "
                        "context: TREC DL 2019 test queries and judgements, not MS MARCO dev", scope="context"),
        ],
        timeout_s={"smoke": 300, "quick": 900, "full": 86400},
    )
