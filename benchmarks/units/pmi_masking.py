"""pmi_masking: what a unit runs (run, extras, dataset factories). The declaration, verdict and
the description of the benchmark are in ``benchmarks/specs/pmi_masking.py``."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.train import StepTimer, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.text import MLMDataModule, pad_batch, sentence_classification_data
from lit_modules.pmi_masking import (
    Masker,
    MaskingCollator,
    MaskedLMPretrainer,
    SentenceClassifier,
    count_ngrams,
    find_matches,
    fixed_eval_batches,
    masking_vocabulary,
    pmi_from_counts,
    pmi_word_units,
    vocabulary_set,
)

EVAL_MASK_SEED = 10_007  # the common held-out mask: same for every scheme (offset by the run's seed)
TOP_SHOWN = 5  # vocabulary entries per length shown in the report


def text_data(config: dict, data_dir: str | None, seed: int, corpus: str = "gensim_wiki") -> MLMDataModule:
    return MLMDataModule(
        corpus=corpus, data_dir=data_dir, seed=seed, vocab_size=config["vocab_size"], max_len=config["max_len"],
        batch_size=config["batch_size"],
    )


def build_vocabulary(dm: MLMDataModule, cfg: dict):
    """PMI_n over the training split's words -> the per-length masking vocabulary."""
    stats = count_ngrams(dm.train_words(), cfg["pmi_max_n"], cfg["pmi_min_count"])
    by_len = masking_vocabulary(pmi_from_counts(stats), cfg["pmi_vocab_size"])
    return by_len, stats


def make_masker(cfg: dict, dm: MLMDataModule, scheme: str, vocab=None, **kw) -> Masker:
    tok = dm.tokenizer
    return Masker(
        scheme, mask_id=tok.token_to_id("[MASK]"), vocab_size=tok.get_vocab_size(), rate=cfg["mask_rate"], vocab=vocab,
        max_n=cfg["pmi_max_n"], span_p=cfg["span_p"], span_max=cfg["span_max"], **kw,
    )


def heldout_batches(cfg: dict, dm: MLMDataModule, seed: int) -> DataLoader:
    """Validation chunks masked once by random-token masking, every chosen token -> [MASK]."""
    chunks = dm.chunks["validation"]
    pick = np.random.default_rng(EVAL_MASK_SEED + seed).permutation(len(chunks))[: cfg["eval_chunks"]]
    masker = make_masker(cfg, dm, "random", replace_probs=(1.0, 0.0, 0.0))
    batches = fixed_eval_batches([chunks[i] for i in sorted(pick)], masker, EVAL_MASK_SEED + seed, cfg["batch_size"])
    return DataLoader(batches, batch_size=None)  # already batched


def finetune_downstream(ctx: UnitContext, encoder: torch.nn.Module, dm: MLMDataModule) -> float:
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
    clf = SentenceClassifier(encoder, cfg["hidden_size"], len(dm.corpus.test), cfg["finetune_lr"], cfg["finetune_steps"])
    trainer = make_trainer(ctx, log_name="finetune", max_steps=cfg["finetune_steps"], limit_val_batches=0)
    trainer.fit(clf, train_dataloaders=loader(tr_x, tr_y, True))
    (test,) = trainer.test(clf, dataloaders=loader(te_x, te_y, False), verbose=False)
    return float(test["test_acc"])


def run(ctx: UnitContext) -> list[Measurement]:
    """Pretrain with the variant's masking scheme; held-out curve; downstream fine-tune."""
    cfg = ctx.config
    dm = ctx.datamodule().prepare()
    out: list[Measurement] = []
    vocab = None
    if cfg["scheme"] == "pmi":
        by_len, _ = build_vocabulary(dm, cfg)
        vocab = vocabulary_set(by_len)
        out.append(Measurement("pmi_vocab_entries", len(vocab)))
    masker = make_masker(cfg, dm, cfg["scheme"], vocab)
    dm.collate_fn = MaskingCollator(masker, seed=ctx.seed)
    heldout = heldout_batches(cfg, dm, ctx.seed)

    torch.manual_seed(ctx.seed)  # the same initial weights for every scheme
    module = MaskedLMPretrainer(
        vocab_size=dm.tokenizer.get_vocab_size(), hidden_size=cfg["hidden_size"], num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"], intermediate_size=cfg["intermediate_size"], max_len=cfg["max_len"], lr=cfg["lr"],
        weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"], max_steps=cfg["max_steps"],
    )
    timer = StepTimer()
    trainer = make_trainer(
        ctx, callbacks=[timer], log_name="pretrain", max_steps=cfg["max_steps"], val_check_interval=cfg["eval_every"], check_val_every_n_epoch=None
    )
    trainer.fit(module, train_dataloaders=dm.train_dataloader(), val_dataloaders=heldout)
    if not module.curve or module.curve[-1][0] != cfg["max_steps"]:
        trainer.validate(module, dataloaders=heldout, verbose=False)
    for step, acc, loss in module.curve:
        out += [Measurement("heldout_mlm_acc_curve", acc, step=step), Measurement("heldout_mlm_loss_curve", loss, step=step)]
    out += [Measurement("heldout_mlm_acc", module.curve[-1][1]), Measurement("heldout_mlm_loss", module.curve[-1][2])]

    # what the scheme actually masked: fraction of real tokens with a label, over a few batches
    probe = MaskingCollator(masker, seed=ctx.seed + 1)
    chunks = dm.chunks["train"][: 8 * cfg["batch_size"]]
    labelled = sum(int((probe([c])["labels"] != -100).sum()) for c in chunks)
    out.append(Measurement("masked_fraction", labelled / sum(len(c.input_ids) - 2 for c in chunks)))

    steps = sorted(timer.step_times[5:]) or [math.nan]
    out.append(Measurement("step_time_ms", 1e3 * steps[len(steps) // 2]))
    out.append(Measurement("downstream_acc", finetune_downstream(ctx, module.mlm.bert, dm)))
    return out


def ngram_statistics(ctx: UnitContext) -> list[Measurement]:
    """N-gram counting throughput and peak memory on the training split (its first
    ``ngram_stats_docs`` documents when set); the vocabulary's size per length, its coverage
    of the training words, and its top entries per length."""
    cfg = ctx.config
    dm = ctx.datamodule().prepare()
    docs = list(dm.train_words())  # pre-tokenised once, so that only counting is timed
    if cfg["ngram_stats_docs"]:
        docs = docs[: cfg["ngram_stats_docs"]]
    n_words = sum(map(len, docs))
    start = time.perf_counter()
    stats = count_ngrams(docs, cfg["pmi_max_n"], cfg["pmi_min_count"])
    count_s = time.perf_counter() - start
    tracemalloc.start()
    count_ngrams(docs, cfg["pmi_max_n"], cfg["pmi_min_count"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    by_len = masking_vocabulary(pmi_from_counts(stats), cfg["pmi_vocab_size"])
    vocab = vocabulary_set(by_len)
    rng = np.random.default_rng(ctx.seed)
    covered = 0
    for c in dm.chunks["train"]:
        units = pmi_word_units(len(c.words), find_matches(c.words, vocab, cfg["pmi_max_n"]), rng)
        covered += sum(b - a for a, b in units if b - a > 1)
    out = [
        Measurement("ngram_count_tokens_per_s", n_words / count_s),
        Measurement("ngram_count_peak_mb", peak / 2**20),
        Measurement("pmi_vocab_coverage", covered / sum(len(c.words) for c in dm.chunks["train"])),
    ]
    lines = ["| n | rank | n-gram | PMI_n (nats) | count |", "|---|---|---|---|---|"]
    for n, entries in by_len.items():
        out.append(Measurement(f"pmi_vocab_entries@n={n}", len(entries)))
        for rank, (g, v) in enumerate(entries[:TOP_SHOWN], start=1):
            out.append(Measurement(f"pmi_top@n={n} #{rank} '{' '.join(g)}'", v))
        lines += [f"| {n} | {r} | {' '.join(g)} | {v:.2f} | {stats.counts[g]} |" for r, (g, v) in enumerate(entries[:25], 1)]
    ctx.artifact("pmi_vocabulary.md").write_text("\n".join(lines) + "\n")
    return out
