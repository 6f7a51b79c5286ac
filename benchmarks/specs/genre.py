"""GENRE (trie-constrained generation of entity names) vs a dual encoder and BM25 (paper 6).

The declaration and the verdict; what a unit runs is ``benchmarks/units/genre.py``, the
math ``lit_modules/genre/`` (the trie, the models), the data ``datamodules/entities.py``.
Not checked on a GPU: the ``full`` preset (a larger BART from scratch; no pre-trained
checkpoint is loaded, see the module's docstring).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperParams, PaperRef, Task, Tuning, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import Comparison, floor_separation, gate, judge, make_verdict, per_seed, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.genre"
# "as accurately as a dual encoder": GENRE may lose at most 3 points of acc@1 (non-inferiority, 90 % interval)
MARGIN = 0.03
MARGIN_SOURCE = ("scale argument: acc@1 over ~600 test mentions (eval_max_mentions) at 0.7 has a binomial standard "
                 "error of about 0.019, so 3 points is 1.5-2 standard errors of one evaluation, the smallest loss "
                 "the test set can tell from none")
PRIMARY = Comparison("genre", "dual_encoder", "acc_at_1", kind="noninferior", margin=MARGIN, source=MARGIN_SOURCE)
# reported beside the overall line, the same test on the mentions where lexical match does not decide (not their
# title) and on entities never seen in training; the overall line alone decides the claim
BESIDE = tuple(replace(PRIMARY, metric=m, label=f"genre vs dual_encoder, {what} (reported)")
               for m, what in (("acc_at_1_nontrivial", "non-trivial mentions"), ("acc_at_1_unseen", "unseen entities")))
# Competence (issue 27): GENRE must copy a mention that is exactly its title before its accuracy says anything about
# entity retrieval; the paper's BART brings that from denoising pre-training. Declared before the run.
COPY_GATE = 0.97
# issue 27: pre-training steps of each model (GENRE's text infilling, the dual encoder's masked-LM), the most within
# about 150 s of one core for GENRE. Measured (quick, seed 0, 600 validation mentions, the tuned lrs kept), exact-title
# acc@1 / acc@1 of GENRE: from scratch 0.888 / 0.702; 1,000 steps (141 s) 0.938 / 0.740; 1,500 steps (225 s) 0.933 /
# 0.728: short of the 0.97 gate, and more steps did not help, nor did another fine-tuning lr (0.913-0.938 over the
# four tries). Dual encoder: 0.980 / 0.758; 1,000 steps (53 s) 0.983 / 0.775
PRETRAIN_STEPS = 1000
# issue 27: both learning rates chosen on the validation split (eval_split="validation": the rows are named
# "...@split=validation"), the same four tries each, one seed; declared before the tuning ran
TUNING = Tuning(score="acc_at_1@split=validation",
                grids={"genre": {"lr": (1e-3, 2e-3, 3e-3, 5e-3), "eval_split": ("validation",)},
                       "dual_encoder": {"de_lr": (1e-3, 2e-3, 3e-3, 5e-3), "eval_split": ("validation",)}},
                seeds=1)


def claim_verdict(df: pd.DataFrame) -> Verdict:
    """GENRE non-inferior to the dual encoder on acc@1, once GENRE copies exact titles and both models beat the
    exact-title baseline by the margin; the non-trivial and unseen lines reported beside."""
    j = judge(df, PRIMARY)
    beside = [judge(df, c) for c in BESIDE if per_seed(df, "genre", c.metric)]
    acc = {v: seed_stats(df, v, "acc_at_1") for v in ("genre", "dual_encoder", "genre_unconstrained", "bm25")}
    missing = [v for v in ("genre", "dual_encoder") if acc[v][2] == 0]
    if missing:
        return make_verdict("inconclusive", [j, *beside], f"missing acc_at_1 for {', '.join(missing)}")
    copy, copy_sd, copy_n = seed_stats(df, "genre", "acc_at_1_exact")
    copied = copy_n > 0 and copy >= COPY_GATE
    j = gate(j, copied, f"GENRE copies mentions that are exactly their title at {copy:.3f} (mean over {copy_n} seeds), "
                        f"below the {COPY_GATE} a competent seq2seq reaches: not judged until it does"
             if copy_n else "no acc_at_1_exact rows: GENRE's copying of exact titles is not shown")
    # the floor: the exact-title string match, scored on the same seeded test subsample as each model (paired by seed)
    trivial = per_seed(df, "genre", "trivial_acc")
    separation = {v: floor_separation(per_seed(df, v, "acc_at_1"), trivial, MARGIN) for v in ("genre", "dual_encoder")}
    j = gate(j, all(ok for ok, _ in separation.values()),
             "a model is not shown above the exact-title baseline by more than the margin (" +
             "; ".join(f"{v}: {text}" for v, (_, text) in separation.items()) + ")")

    def mean(variant: str, metric: str) -> float:
        return seed_stats(df, variant, metric)[0]

    mem = {v: mean(v, "index_mb") for v in ("genre", "dual_encoder", "bm25")}
    share = mem["genre"] / mem["dual_encoder"] if mem["dual_encoder"] else float("nan")
    evidence = (
        f"exact-title mentions copied: genre {copy:.3f}, dual encoder {mean('dual_encoder', 'acc_at_1_exact'):.3f} "
        f"(gate {COPY_GATE}); acc@1 genre_unconstrained {acc['genre_unconstrained'][0]:.3f}, bm25 {acc['bm25'][0]:.3f}; "
        f"string-match baselines: exact title {mean('genre', 'trivial_acc'):.3f}, alias table "
        f"{mean('genre', 'alias_acc'):.3f}; measured, not conditions: index MB trie {mem['genre']:.2f} ({share:.2f} of "
        f"the dense {mem['dual_encoder']:.2f}), bm25 {mem['bm25']:.2f}; valid outputs constrained "
        f"{mean('genre', 'valid_output_rate'):.3f} (1 by construction of the trie), unconstrained "
        f"{mean('genre_unconstrained', 'valid_output_rate'):.3f}"
    )
    return make_verdict(j.status, [j, *beside], evidence)


@register_benchmark
def genre() -> Benchmark:
    return Benchmark(
        name="genre",
        paper=PaperRef(title="Autoregressive Entity Retrieval", arxiv="2010.00904",
                       code="https://github.com/facebookresearch/GENRE"),
        claim=(
            "Generating an entity's unique name token by token, with beam search constrained by a prefix trie of the "
            "KB's names, retrieves entities as accurately as a dual encoder of similar size while its index takes a "
            "small fraction of the dense index's memory, and every output is a KB entity (tested with small models "
            "trained from scratch on ~30k Wikipedia links, not the paper's pre-trained BART-large)."
        ),
        verdict_rule=(
            f"GENRE is non-inferior to the dual encoder on acc@1 with margin {MARGIN} (3 points: 1.5-2 standard errors "
            "of accuracy on ~600 test mentions): the 90 % paired-t interval of genre − dual_encoder over seeds (same "
            f"seed = same test subsample) holds if its lower end is above −{MARGIN}, does not hold if its upper "
            f"end is below −{MARGIN}, else inconclusive (with the seeds that would decide it). Inconclusive unless GENRE "
            f"copies the mentions that are exactly their title (acc@1 on them, mean over seeds) at {COPY_GATE} or more, "
            "and both "
            "genre and dual_encoder beat the exact-title string-match baseline's acc@1 by more than the margin (lower "
            "end of the 95 % paired interval of model − baseline above it). Index memory (trie vs dense) and the "
            "constrained outputs' validity are reported as measurements, not conditions; the same test on the non-trivial "
            "mentions and on unseen entities is reported beside, not deciding"
        ),
        variants=[
            Variant("genre", "method", {}, "BART from scratch, title generated with beam search constrained by the KB trie"),
            Variant("genre_unconstrained", "method", {}, "ablation: the same trained model, beam search without the trie",
                seeds={"quick": 2}),
            Variant("dual_encoder", "baseline", {}, "two BART encoders (context, title), in-batch negatives, faiss exact IP index"),
            Variant("bm25", "baseline", {}, "bm25s over the KB titles, queried with the mention (and bm25_context_words words around it)"),
        ],
        datasets={
            "gensim_wiki": lazy(f"{UNITS}:entities"),
            "aida": lazy(f"{UNITS}:entities", name="aida"),
            "wned": lazy(f"{UNITS}:entities", name="wned"),
        },
        defaults=dict(
            # data: 4 words of context each side (GENRE reads up to 384 BPE tokens; short inputs keep the CPU budget).
            # lowercase: a model trained from scratch cannot learn the case of words it never saw; 60 of the 20,881
            # KB titles differ from another only in case and share its token sequence (the later one is predicted)
            context_words=4, max_source_len=48, vocab_size=2000, lowercase=True, batch_size=32, max_train_mentions=None,
            # the marked mention first, then its context (datamodules.entities.SOURCE_ORDERS): a from-scratch seq2seq
            # learns to copy it in hundreds of steps, not thousands; "context" is GENRE's own layout (full)
            source_order="mention_first",
            # title_pairs: every KB title also trains as a mention of itself, no context, for both models. Off: on the
            # validation split (seed 0, from the pre-trained weights) it moved GENRE's exact-title copying 0.938 -> 0.930
            # and acc@1 0.740 -> 0.725, the dual encoder's acc@1 0.775 -> 0.757 (issue 27)
            title_pairs=False,
            # a small BART (base has d=768, 6+6 layers) with mBART's pre-LayerNorm (quick, 500 steps: loss 4.3 vs 5.0
            # post-LN); the dual encoder gets two encoders of the same size and layout, pooled over the mention span
            d_model=128, layers=2, heads=4, ffn_dim=512, max_positions=128, dropout=0.0, pre_norm=True, de_pool="mention",
            # both models train the same 800 steps of 32 mentions; the lr tuned for each with the same four tries. First
            # on the test split (acc@1, quick, seed 0; issue 27 found that): GENRE 1e-3 0.633, 2e-3 0.693, 3e-3 0.692,
            # 5e-3 0.22 (diverged); dual encoder 1e-3 0.772, 2e-3 0.742, 3e-3 0.740, 5e-3 0.745. Then as declared in
            # TUNING, on 600 validation mentions (`iclrbench tune genre`, results/reference/genre-quick-tuning.csv):
            # GENRE 0.668 / 0.692 / 0.702 / 0.187, dual encoder 0.758 / 0.753 / 0.740 / 0.753: the same winners, GENRE
            # 3e-3 and the dual encoder 1e-3, which the defaults keep. Tuned again from the pre-trained weights (the
            # same tries, results/reference/genre-quick-tuning-pretrained.csv): GENRE 0.720 / 0.730 / 0.740 / 0.732
            # (exact-title 0.913 / 0.933 / 0.938 / 0.935), dual encoder 0.775 / 0.773 / 0.768 / 0.757: the same winners
            # again. Dropout 0 (GENRE, 800 steps: 0.73 vs 0.705
            # with 0.1 at 1,500). No label smoothing at this budget (0.1 in full)
            label_smoothing=0.0, lr=3e-3, weight_decay=0.01, warmup_steps=30, grad_clip=1.0,
            max_steps=800, de_max_steps=800, de_lr=1e-3,
            # pre-training before the task (issue 27; lit_modules/genre/pretrain.py): GENRE's BART by BART's text
            # infilling (Poisson(3) spans over 30 % of the tokens, one mask each), both dual-encoder towers from one
            # masked-LM encoder (BERT's 15 %), the same texts (the training articles cut into max_source_len pieces,
            # and every KB title), steps, batches and schedule; cached per seed under $ICLRBENCH_CACHE. 0: from scratch
            pretrain_steps=PRETRAIN_STEPS, pretrain_lr=3e-3, pretrain_warmup=30, pretrain_batch_size=32,
            mask_ratio=0.3, poisson_lambda=3.0, mlm_prob=0.15,
            # checkpoint: start from a pre-trained BART instead (a Hugging Face name, e.g. facebook/bart-large, the
            # model GENRE fine-tunes, or a local folder; a download, so not the default): GENRE's seq2seq is the
            # checkpoint, both dual-encoder towers its encoder (the same pre-training for both), the tokenizer its
            # byte-level BPE (cased: lowercase and vocab_size apply to the trained BPE only) with the two mention
            # markers added; the architecture keys and the pre-training above are then unused. Offline it fails in one
            # line (exit 3 in the preflight of a real dataset). Not run on real weights here (no download)
            checkpoint=None,
            # evaluation: k = 5 beams / top-5 (the paper decodes with 5 beams for ED); a seeded test subsample
            # bm25 queried with the mention alone: with 4 context words each side acc@1 fell from 0.81 to 0.62 (quick, seed 0)
            num_beams=5, eval_max_mentions=600, eval_batch_size=50, bm25_context_words=0, eval_split="test",
            # 1M synthetic titles only in full: building them in Python costs more than the quick budget allows
            trie_sizes=[10000, 100000],
        ),
        presets={
            "smoke": dict(max_train_mentions=300, vocab_size=600, d_model=32, layers=1, heads=2, ffn_dim=64, max_steps=4, de_max_steps=4,
                          warmup_steps=1, pretrain_steps=3, pretrain_warmup=1, batch_size=16, num_beams=2, eval_max_mentions=20, trie_sizes=[1000, 5000]),
            "quick": {},
            # the paper's recipe sizes (BART-base width and depth, 384-token inputs, label smoothing 0.1, lr 3e-5 is
            # for fine-tuning; from scratch we keep 1e-3), not run here. The paper fine-tunes BART-large, pre-trained
            # on 160 GB of text; our pre-training stays a stand-in at any size: 20k steps of 128 texts (with KILT's
            # 5.9M-title KB, under half a pass over the titles), lr 5e-4 after 1,000 warm-up steps, not tuned
            "full": dict(context_words=64, max_source_len=384, vocab_size=32000, lowercase=False, source_order="context", dropout=0.1, d_model=768,
                         layers=6, heads=12, ffn_dim=3072, max_positions=512, label_smoothing=0.1, lr=1e-3,
                         warmup_steps=1000, max_steps=100000, de_max_steps=100000, de_lr=1e-4, batch_size=128,
                         eval_max_mentions=None, trie_sizes=[10000, 100000, 1000000],
                         pretrain_steps=20000, pretrain_lr=5e-4, pretrain_warmup=1000, pretrain_batch_size=128),
        },
        metrics=[
            Metric("acc_at_1", True, primary=True, tolerance=0.05, description="in-KB accuracy of the top-1 entity"),
            Metric("acc_at_1_seen", True, tolerance=0.05, description="acc@1 on test mentions whose entity occurs in training"),
            Metric("acc_at_1_unseen", True, tolerance=0.05, description="acc@1 on test mentions whose entity never occurs in training"),
            Metric("acc_at_1_nontrivial", True, tolerance=0.1,
                   description="acc@1 on test mentions that are not their title (first letter capitalised)"),
            Metric("acc_at_1_exact", True, tolerance=0.05,
                   description="acc@1 on test mentions that are exactly their title: copying, GENRE's competence gate"),
            Metric("recall_at_k", True, tolerance=0.05, description="gold entity among the k beams / top-k (recall_at_k@k=K)"),
            Metric("valid_output_rate", True, tolerance=0.05, description="share of top-1 outputs that are KB titles"),
            Metric("index_mb", False, kind="info", description="index memory: trie arrays, faiss flat index, bm25s sparse scores"),
            Metric("model_mb", False, kind="info", description="float32 parameters"),
            Metric("params", False, kind="info", description="trainable parameters"),
            Metric("trie_nodes", False, kind="info", description="nodes of the KB trie"),
            Metric("test_mentions", True, kind="info", description="test mentions scored (a seeded subsample)"),
            Metric("trivial_mentions", True, kind="info", description="test mentions that are exactly their title (first letter capitalised)"),
            Metric("trivial_fraction", True, kind="info", description="share of such trivial test mentions"),
            Metric("seen_fraction", True, kind="info", description="share of test mentions whose entity occurs in training"),
            Metric("kb_size", True, kind="info", description="KB titles"),
            Metric("trivial_acc", True, kind="info", description="string-match baseline: the KB title equal to the mention up to case"),
            Metric("alias_acc", True, kind="info",
                   description="alias-table baseline: the training mention's most frequent entity, else the exact title"),
            Metric("pretrain_s", False, kind="info",
                   description="pre-training wall time (text infilling for GENRE, masked-LM for the dual encoder), "
                               "paid once per seed and cached"),
            Metric("pretrain_loss", False, kind="info", description="pre-training loss, mean of its last 10 % of steps"),
            Metric("pretrain_params", False, kind="info",
                   description="parameters of the pre-trained model (GENRE's BART; one dual-encoder tower and its tied head)"),
            Metric("latency_ms", False, kind="efficiency", tolerance=0.5,
                   description="wall ms per test mention (dual encoder: KB embedding included)"),
            Metric("train_time_s", False, kind="efficiency", tolerance=0.5, description="training wall time"),
            Metric("trie_build_s", False, kind="efficiency", tolerance=0.5, description="building the KB's trie"),
            Metric("trie_build_s_vs_titles", False, kind="efficiency", curve=True, logx=True, tolerance=0.5,
                   x_label="titles in the trie", description="trie build time vs number of (synthetic) titles"),
            Metric("trie_mb_vs_titles", False, kind="info", curve=True, logx=True, x_label="titles in the trie",
                   description="trie memory vs number of (synthetic) titles"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"trie_scaling": lazy(f"{UNITS}:trie_scaling")},
        verdict=claim_verdict,
        tuning=TUNING,
        tasks={"full": {"aida": Task()}},  # KILT's AIDA-CoNLL entity disambiguation (JSONL) and kb_titles.txt
        # fast dev run: two pre-training and two training steps of each model, 8 test mentions decoded with the 5 beams, the trie sweep's
        # first point (10k titles); on a CPU a batch of 8 (BART at d 768 over 384-token inputs)
        fast_dev=FastDev(config=dict(eval_max_mentions=8, eval_batch_size=8, trie_sizes=[10000], warmup_steps=1),
                         batch_keys=("batch_size", "pretrain_batch_size"), cpu_batch=8),
        paper_architecture="BART-base layout from scratch: 6 + 6 layers, d 768, 12 heads, FFN 3072, 512 positions, a "
                           "32,000-token byte-level BPE (GENRE fine-tunes BART-large)",
        paper_params=[PaperParams(v, 139_000_000, "Hugging Face's pretrained-models table, facebook/bart-base: 139M "
                                  "(vocabulary 50,265)", tolerance=0.12,
                                  note="our vocabulary is 32,000 (14.0M fewer embedding parameters) and our positions "
                                       "512 (0.8M fewer)")
                      for v in ("genre", "genre_unconstrained")]
                     + [PaperParams("dual_encoder", None, "none: two BART-base encoders are our baseline's design, not "
                                    "a published model")],
        param_count=lazy(f"{UNITS}:full_params"),
        # quick seeds, sized by a power estimate from the 2-seed cpu-quick.csv of commit 2ef76d5, within the quick budget:
        # genre vs dual_encoder and its floor gate need about 3-4 paired seeds at the stored spread (133 s per seed
        # for the pair); the unconstrained ablation runs 2
        seeds={"quick": 3},
        paper_numbers=[],
        paper_numbers_note=("the stored copies of arXiv 2010.00904 reachable offline hold its abstract only (the "
                            "GENRE repository's READMEs give none), so its in-KB accuracy and memory tables could not "
                            "be checked; they would be context for full runs on KILT data (BART-large, pre-trained)"),
    )
