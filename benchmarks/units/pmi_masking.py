"""pmi_masking: what a unit runs (run, extras, dataset factories). The declaration, verdict and
the description of the benchmark are in ``benchmarks/specs/pmi_masking.py``."""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.train import StepTimer, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.text import MLMDataModule, pad_batch, sentence_classification_data
from lit_modules.pmi_masking import (
    EVAL_MASKINGS,
    Masker,
    MaskedLMPretrainer,
    MaskingCollator,
    SentenceClassifier,
    adjacent_reference,
    bigram_counts,
    count_ngrams,
    eval_batches,
    find_matches,
    heldout_scores,
    is_word,
    masking_vocabulary,
    pmi_word_units,
    ranking_scores,
    shortcut_gap,
    unigram_floor,
    unigram_log_probs,
    vocabulary_set,
)

EVAL_MASK_SEED = 10_007  # the held-out masks: the same for every scheme (offset by the run's seed)
CURVE_MASKING = "span"  # the held-out curve during training: random spans (a masking PMI, WWM, random never train on)
TOP_SHOWN = 5  # vocabulary entries per length shown in the report


def text_data(config: dict, data_dir: str | None, seed: int, corpus: str = "gensim_wiki") -> MLMDataModule:
    return MLMDataModule(
        corpus=corpus, data_dir=data_dir, seed=seed, vocab_size=config["vocab_size"], max_len=config["max_len"],
        batch_size=config["batch_size"],
    )


def build_vocabulary(dm: MLMDataModule, cfg: dict):
    """The per-length masking vocabulary over the training split's words: n-grams of words
    only (when ``pmi_words_only``), ranked by ``pmi_score``, PMI_n above ``pmi_min``."""
    keep = is_word if cfg["pmi_words_only"] else None
    stats = count_ngrams(dm.train_words(), cfg["pmi_max_n"], cfg["pmi_min_count"], keep)
    scores = ranking_scores(stats, cfg["pmi_score"], cfg["pmi_min"])
    return masking_vocabulary(scores, cfg["pmi_vocab_size"]), stats


def make_masker(cfg: dict, dm: MLMDataModule, scheme: str, vocab=None, **kw) -> Masker:
    tok = dm.tokenizer
    return Masker(
        scheme, mask_id=tok.token_to_id("[MASK]"), vocab_size=tok.get_vocab_size(), rate=cfg["mask_rate"], vocab=vocab,
        max_n=cfg["pmi_max_n"], span_p=cfg["span_p"], span_max=cfg["span_max"], **kw,
    )


def coverage(chunks, vocab, max_n: int, seed: int) -> float:
    """Fraction of the chunks' words inside a PMI n-gram unit (paper: about half at 800K entries)."""
    rng, covered = np.random.default_rng(seed), 0
    for c in chunks:
        units = pmi_word_units(len(c.words), find_matches(c.words, vocab, max_n), rng)
        covered += sum(b - a for a, b in units if b - a > 1)
    return covered / max(1, sum(len(c.words) for c in chunks))


def heldout_sets(cfg: dict, dm: MLMDataModule, vocab, seed: int) -> dict[str, list[dict]]:
    """The same held-out chunks under every masking of ``EVAL_MASKINGS``, masked once per
    run seed; pmi_ngram and pmi_one_word share their draws (the same n-grams and words)."""
    if cfg["heldout_split"] not in ("validation", "test"):
        raise ValueError(f"heldout_split must be 'validation' (judged) or 'test' (for tuning); got {cfg['heldout_split']!r}")
    chunks = dm.chunks[cfg["heldout_split"]]
    pick = np.random.default_rng(EVAL_MASK_SEED + seed).permutation(len(chunks))[: cfg["eval_chunks"]]
    chunks = [chunks[i] for i in sorted(pick)]
    base = make_masker(cfg, dm, "pmi", vocab)
    seeds = {m: EVAL_MASK_SEED + 100 * seed + k for k, m in enumerate(EVAL_MASKINGS)}
    seeds["pmi_one_word"] = seeds["pmi_ngram"]
    return {m: eval_batches(chunks, m, base, seeds[m], cfg["batch_size"]) for m in EVAL_MASKINGS}


def cross_evaluation(module: MaskedLMPretrainer, dm: MLMDataModule, sets: dict[str, list[dict]], own: str) -> list[Measurement]:
    """Loss and accuracy under every held-out masking, the unigram floor and the neighbour-count
    reference per masking, the margin below the floor on the scheme's own masking (the model's and
    the reference's), and the shortcut gap."""
    module.eval()
    vocab_size = dm.tokenizer.get_vocab_size()
    log_p = unigram_log_probs(np.concatenate([c.input_ids[1:-1] for c in dm.chunks["train"]]), vocab_size)
    pairs = bigram_counts([c.input_ids for c in dm.chunks["train"]], vocab_size)
    scores, out = {}, []
    for m, batches in sets.items():
        scores[m] = heldout_scores(lambda b: module.logits(b)[0], batches)
        floor_loss, floor_acc = unigram_floor(log_p, batches)
        reference = adjacent_reference(pairs, log_p, batches)
        out += [Measurement(f"heldout_loss@mask={m}", scores[m].loss), Measurement(f"heldout_acc@mask={m}", scores[m].acc),
                Measurement(f"floor_loss@mask={m}", floor_loss), Measurement(f"floor_acc@mask={m}", floor_acc),
                Measurement(f"reference_loss@mask={m}", reference)]
        if m == own:
            out += [Measurement("below_floor", floor_loss - scores[m].loss),
                    Measurement("reference_below_floor", floor_loss - reference)]
    out += [Measurement("shortcut_gap", shortcut_gap(scores["pmi_one_word"], scores["pmi_ngram"])),
            Measurement("shortcut_gap_nats", shortcut_gap(scores["pmi_one_word"], scores["pmi_ngram"], on="loss")),
            Measurement("shortcut_words", scores["pmi_one_word"].n_focus)]
    return [m for m in out if math.isfinite(m.value)]  # no n-gram in a tiny held-out set: no gap, not NaN


def finetune_downstream(ctx: UnitContext, encoder: torch.nn.Module, dm: MLMDataModule, slopes) -> float:
    """Fine-tune encoder + linear head on "which test-split article is this sentence from"."""
    cfg = ctx.config
    tr_x, tr_y, te_x, te_y = sentence_classification_data(dm.corpus.test, ctx.seed, per_doc=cfg["finetune_per_doc"])
    tok = dm.tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")

    def loader(texts, labels, shuffle):
        ids = [np.array([cls_id, *e.ids[: cfg["max_len"] - 2], sep_id]) for e in tok.encode_batch(texts, add_special_tokens=False)]
        items = list(zip(ids, labels))

        def collate(batch):
            return {
                "input_ids": pad_batch([b[0] for b in batch]),
                "attention_mask": pad_batch([np.ones(len(b[0]), dtype=np.int64) for b in batch]),
                "label": torch.tensor([b[1] for b in batch]),
            }

        gen = torch.Generator().manual_seed(ctx.seed)
        return DataLoader(items, batch_size=cfg["batch_size"], shuffle=shuffle, collate_fn=collate, generator=gen)

    torch.manual_seed(ctx.seed)  # the same head for every scheme
    clf = SentenceClassifier(encoder, cfg["hidden_size"], len(dm.corpus.test), cfg["finetune_lr"], cfg["finetune_steps"], slopes)
    trainer = make_trainer(ctx, log_name="finetune", max_steps=cfg["finetune_steps"], limit_val_batches=0)
    trainer.fit(clf, train_dataloaders=loader(tr_x, tr_y, True))
    (test,) = trainer.test(clf, dataloaders=loader(te_x, te_y, False), verbose=False)
    return float(test["test_acc"])


def realised_spans(masker: Masker, chunks, seed: int) -> tuple[float, float]:
    """(fraction of tokens the scheme labels, mean unit length in words) over ``chunks``."""
    rng, labelled, tokens, lengths = np.random.default_rng(seed), 0, 0, []
    for c in chunks:
        starts = {s: k for k, (s, _) in enumerate(c.word_spans)}
        ends = {e: k for k, (_, e) in enumerate(c.word_spans)}
        for s, e in masker(c, rng):
            labelled += e - s
            if s in starts and e in ends:  # whole words (a random token inside a word is not)
                lengths.append(ends[e] - starts[s] + 1)
        tokens += len(c.input_ids) - 2
    return labelled / tokens, float(np.mean(lengths)) if lengths else math.nan


def full_params(config: dict, variant: str = "") -> int:
    """Parameters of the MLM model for ``config`` (its ``vocab_size``), built on the meta device."""
    with torch.device("meta"):
        module = MaskedLMPretrainer(vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
                                    num_layers=config["num_layers"], num_heads=config["num_heads"],
                                    intermediate_size=config["intermediate_size"], max_len=config["max_len"],
                                    alibi=config["alibi"], bias_slopes=config.get("alibi_slopes"))
    return sum(p.numel() for p in module.parameters())


def run(ctx: UnitContext) -> list[Measurement]:
    """Pretrain with the variant's masking scheme; cross-evaluate under every masking."""
    cfg = ctx.config
    dm = ctx.datamodule().prepare()
    out: list[Measurement] = []
    by_len, _ = build_vocabulary(dm, cfg)
    vocab = vocabulary_set(by_len)  # every variant: the pmi masking and the held-out n-grams use it
    if not vocab:
        raise ValueError(f"the PMI masking vocabulary is empty (min_count {cfg['pmi_min_count']}, PMI_n > {cfg['pmi_min']}); "
                         "expected at least one n-gram: lower pmi_min_count or pmi_min")
    masker = make_masker(cfg, dm, cfg["scheme"], vocab)
    if cfg["scheme"] == "pmi":
        out += [Measurement("pmi_vocab_entries", len(vocab)),
                Measurement("pmi_vocab_coverage", coverage(dm.chunks["train"][: 4 * cfg["eval_chunks"]], vocab, cfg["pmi_max_n"], ctx.seed))]
    dm.collate_fn = MaskingCollator(masker, seed=ctx.seed)
    sets = heldout_sets(cfg, dm, vocab, ctx.seed)

    torch.manual_seed(ctx.seed)  # the same initial weights for every scheme
    module = MaskedLMPretrainer(
        vocab_size=dm.tokenizer.get_vocab_size(), hidden_size=cfg["hidden_size"], num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"], intermediate_size=cfg["intermediate_size"], max_len=cfg["max_len"], lr=cfg["lr"],
        weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"], max_steps=cfg["max_steps"],
        dropout=cfg["dropout"], alibi=cfg["alibi"], bias_slopes=cfg["alibi_slopes"],
    )
    out.append(Measurement("parameters", sum(p.numel() for p in module.parameters())))
    curve = DataLoader(sets[CURVE_MASKING], batch_size=None)  # already batched
    timer = StepTimer()
    trainer = make_trainer(
        ctx, callbacks=[timer], log_name="pretrain", max_steps=cfg["max_steps"], val_check_interval=cfg["eval_every"],
        check_val_every_n_epoch=None, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=dm.train_dataloader(), val_dataloaders=curve)
    for step, acc, loss in module.curve:
        out += [Measurement("heldout_acc_curve", acc, step=step), Measurement("heldout_loss_curve", loss, step=step)]
    out += cross_evaluation(module, dm, sets, cfg["scheme"])

    fraction, span_words = realised_spans(masker, dm.chunks["train"][: 8 * cfg["batch_size"]], ctx.seed + 1)
    out.append(Measurement("masked_fraction", fraction))
    if cfg["scheme"] == "span":
        out.append(Measurement("span_mean_words", span_words))
    steps = sorted(timer.step_times[5:]) or [math.nan]
    out.append(Measurement("step_time_ms", 1e3 * steps[len(steps) // 2]))
    if cfg["finetune_steps"] > 0:
        out.append(Measurement("downstream_acc", finetune_downstream(ctx, module.mlm.bert, dm, module.alibi_slopes)))
        torch.manual_seed(ctx.seed)  # the same initial weights, untrained: does the task see pretraining at all?
        fresh = MaskedLMPretrainer(**{k: v for k, v in module.hparams.items()})
        out.append(Measurement("downstream_acc_untrained", finetune_downstream(ctx, fresh.mlm.bert, dm, fresh.alibi_slopes)))
    return out


# --------------------------------------------------------------------------------------
# The cross-evaluation matrix as a heat map, drawn from the whole run's rows by the report
# --------------------------------------------------------------------------------------
def matrix_artifacts(rows, folder: Path) -> None:
    """The spec's ``report_artifacts``: from every ok row of the run (one process, after the
    last unit), the cross-evaluation matrix (mean over seeds) as PNG and Markdown in
    ``folder``. Held-out loss minus the unigram floor per (trained scheme, held-out
    masking), and accuracy; nothing is drawn when no unit measured the matrix."""
    flat = rows[rows["step"].isna()]
    nan = math.nan
    saved: dict[str, list[dict]] = {}
    for (variant, _seed), unit in flat.groupby(["variant", "seed"], sort=True):
        values = dict(zip(unit["metric"], unit["value"]))
        if not any(f"heldout_loss@mask={m}" in values for m in EVAL_MASKINGS):
            continue
        row = {m: {"loss": values.get(f"heldout_loss@mask={m}", nan), "acc": values.get(f"heldout_acc@mask={m}", nan),
                   "floor": values.get(f"floor_loss@mask={m}", nan), "reference": values.get(f"reference_loss@mask={m}", nan)}
               for m in EVAL_MASKINGS}
        row["shortcut_gap"] = values.get("shortcut_gap", nan)
        saved.setdefault(str(variant), []).append(row)
    if not saved:
        return
    schemes = [s for s in ("pmi", "random", "whole_word", "span") if s in saved] + sorted(set(saved) - {"pmi", "random", "whole_word", "span"})

    def mean(s, m, key):
        return float(np.mean([r[m][key] for r in saved[s]]))

    loss = np.array([[mean(s, m, "loss") - mean(s, m, "floor") for m in EVAL_MASKINGS] for s in schemes])
    acc = np.array([[mean(s, m, "acc") for m in EVAL_MASKINGS] for s in schemes])
    lines = ["**Cross-evaluation** (mean over seeds; rows: trained scheme, columns: held-out masking): held-out loss "
             "(nats) / accuracy; below them the unigram floor's loss and the simple reference's (a count model of the visible "
             "neighbours; every model is evaluated on the same masked chunks).", "",
             "| trained \\ held-out | " + " | ".join(EVAL_MASKINGS) + " | shortcut gap | seeds |",
             "|---" * (len(EVAL_MASKINGS) + 3) + "|"]
    for i, s in enumerate(schemes):
        cells = [f"{mean(s, m, 'loss'):.3f} / {acc[i, j]:.3f}" for j, m in enumerate(EVAL_MASKINGS)]
        gap = float(np.mean([r["shortcut_gap"] for r in saved[s]]))
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {gap:.3f} | {len(saved[s])} |")
    first = schemes[0]
    lines.append("| unigram floor | " + " | ".join(f"{mean(first, m, 'floor'):.3f}" for m in EVAL_MASKINGS) + " | | |")
    if all(math.isfinite(mean(first, m, "reference")) for m in EVAL_MASKINGS):
        lines.append("| neighbour-count reference | " + " | ".join(f"{mean(first, m, 'reference'):.3f}" for m in EVAL_MASKINGS) + " | | |")
    _atomic_text(folder / "pmi_masking_matrix.md", "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.6 * len(schemes)), dpi=110, layout="constrained")
    for ax, data, title, cmap in ((axes[0], loss, "held-out loss − unigram floor (nats, lower is better)", "viridis_r"),
                                  (axes[1], acc, "held-out accuracy (higher is better)", "viridis")):
        im = ax.imshow(data, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(EVAL_MASKINGS)), EVAL_MASKINGS, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(schemes)), schemes, fontsize=8)
        for (i, j), v in np.ndenumerate(data):
            r, g, b, _ = im.cmap(im.norm(v))
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="k" if 0.3 * r + 0.6 * g + 0.1 * b > 0.5 else "w")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("held-out masking", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    axes[0].set_ylabel("trained with", fontsize=8)
    fig.suptitle("pmi_masking: every model under every masking (same held-out chunks)", fontsize=9)
    tmp = folder / f".matrix.{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, folder / "pmi_masking_matrix.png")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ngram_statistics(ctx: UnitContext) -> list[Measurement]:
    """N-gram counting throughput and peak memory on the training split (its first
    ``ngram_stats_docs`` documents when set); the vocabulary's size per length, its coverage
    of the training words, and its top entries per length."""
    cfg = ctx.config
    dm = ctx.datamodule().prepare()
    docs = list(dm.train_words())  # pre-tokenised once, so that only counting is timed
    if cfg["ngram_stats_docs"]:
        docs = docs[: cfg["ngram_stats_docs"]]
    keep = is_word if cfg["pmi_words_only"] else None
    n_words = sum(map(len, docs))
    start = time.perf_counter()
    stats = count_ngrams(docs, cfg["pmi_max_n"], cfg["pmi_min_count"], keep)
    count_s = time.perf_counter() - start
    tracemalloc.start()
    count_ngrams(docs, cfg["pmi_max_n"], cfg["pmi_min_count"], keep)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    by_len = masking_vocabulary(ranking_scores(stats, cfg["pmi_score"], cfg["pmi_min"]), cfg["pmi_vocab_size"])
    vocab = vocabulary_set(by_len)
    out = [
        Measurement("ngram_count_tokens_per_s", n_words / count_s),
        Measurement("ngram_count_peak_mb", peak / 2**20),
        Measurement("pmi_vocab_coverage", coverage(dm.chunks["train"], vocab, cfg["pmi_max_n"], ctx.seed)),
    ]
    lines = [f"**PMI masking vocabulary** (score `{cfg['pmi_score']}`, PMI_n > {cfg['pmi_min']} nats, words only: "
             f"{cfg['pmi_words_only']}); top entries per length", "",
             "| n | rank | n-gram | score (nats) | count |", "|---|---|---|---|---|"]
    for n, entries in by_len.items():
        out.append(Measurement(f"pmi_vocab_entries@n={n}", len(entries)))
        for rank, (g, v) in enumerate(entries[:TOP_SHOWN], start=1):
            out.append(Measurement(f"pmi_top@n={n} #{rank} '{' '.join(g)}'", v))
        lines += [f"| {n} | {r} | {' '.join(g)} | {v:.2f} | {stats.counts[g]} |" for r, (g, v) in enumerate(entries[:25], 1)]
        if entries:
            g, v = entries[-1]
            lines.append(f"| {n} | last ({len(entries)}) | {' '.join(g)} | {v:.2f} | {stats.counts[g]} |")
    ctx.artifact("pmi_vocabulary.md").write_text("\n".join(lines) + "\n")
    return out
