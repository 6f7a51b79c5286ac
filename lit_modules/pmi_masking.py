"""PMI-Masking: Principled Masking of Correlated Spans (Levine et al., ICLR 2021, arXiv 2010.01825).

Reference checked against: the paper's Eq. 3 (PMI_n) and Sec. 3, and the masking policy in
the README of AI21Labs/pmi-masking (longest entry wins when one contains another, one of
two overlapping entries chosen at random, remaining words as whole-word units, units drawn
until 15% of tokens, 80/10/10 per unit). Baselines as in the paper: random-token masking
(BERT), whole-word masking (BERT's WWM) and random-span masking (SpanBERT: span lengths in
words ~ Geometric(p=0.2) clipped at 10).

Reproduced: the PMI_n score with its segmentation dynamic program, streaming n-gram
counting with exact Apriori pruning, the per-length masking vocabulary (50/25/12.5/12.5 %),
all four maskers under one 15% budget, and MLM pretraining of a small BERT
(``transformers.BertForMaskedLM``) where only the masking scheme differs. Not reproduced:
the paper's 800K-entry vocabulary over Wikipedia+BookCorpus, BERT-base scale and its
SQuAD/RACE/GLUE fine-tuning; the AI21 repo's later variant of the score (which multiplies
in p(w1..wn)) is not used.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torchmetrics

Scheme = Literal["random", "whole_word", "span", "pmi"]
SCHEMES = ("random", "whole_word", "span", "pmi")
NGram = tuple[str, ...]

# Paper Sec. 3 / AI21 README: vocabulary mix by length n = 2, 3, 4, 5.
PAPER_LENGTH_MIX = (0.5, 0.25, 0.125, 0.125)
MASK_RATE = 0.15  # BERT (Devlin et al., 2019), kept by every scheme in the paper
REPLACE_PROBS = (0.8, 0.1, 0.1)  # [MASK] / random token / unchanged, BERT
SPAN_P, SPAN_MAX = 0.2, 10  # SpanBERT (Joshi et al., 2020), Sec. 3.1


# --------------------------------------------------------------------------------------
# N-gram statistics and PMI_n
# --------------------------------------------------------------------------------------
@dataclass
class NGramCounts:
    """``counts[g]``: occurrences of word n-gram ``g`` (every unigram; n >= 2 only if
    count >= min_count); ``positions[n]``: number of n-gram positions of length n."""

    counts: dict[NGram, int]
    positions: list[int]
    max_n: int
    min_count: int

    def log_p(self, g: NGram) -> float:
        """log p(g) = log count(g) - log (number of |g|-gram positions)."""
        return math.log(self.counts[g]) - math.log(self.positions[len(g)])


def _check_args(max_n: int, min_count: int) -> None:
    if max_n < 2:
        raise ValueError(f"max_n must be >= 2 (n-grams of length 2..max_n), got {max_n}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")


def count_ngrams(docs: Iterable[Sequence[str]], max_n: int = 5, min_count: int = 10) -> NGramCounts:
    """Count word n-grams (1 <= n <= max_n) within documents, streaming.

    ``docs`` is re-iterable (a list, or an object whose ``__iter__`` restarts): one pass
    per length. Apriori pruning keeps memory bounded by the surviving counts rather than
    the corpus: an n-gram is counted only if both its (n-1)-prefix and (n-1)-suffix reached
    ``min_count`` (each occurrence of g contains one of each, so no frequent n-gram is
    missed). N-grams never cross document boundaries.
    """
    _check_args(max_n, min_count)
    if iter(docs) is docs:
        raise ValueError("docs must be re-iterable (a list or a view), not a one-shot iterator")
    positions = [0] * (max_n + 1)
    unigrams: Counter = Counter()
    for words in docs:
        unigrams.update((w,) for w in words)
        for n in range(1, max_n + 1):
            positions[n] += max(0, len(words) - n + 1)
    if positions[1] == 0:
        raise ValueError("empty corpus: no words to count")
    counts: dict[NGram, int] = dict(unigrams)
    frequent = {g for g, c in unigrams.items() if c >= min_count}
    for n in range(2, max_n + 1):
        if not frequent:
            break
        level: Counter = Counter()
        for words in docs:
            for i in range(len(words) - n + 1):
                g = tuple(words[i : i + n])
                if g[:-1] in frequent and g[1:] in frequent:
                    level[g] += 1
        kept = {g: c for g, c in level.items() if c >= min_count}
        del level
        counts.update(kept)
        frequent = set(kept)
    return NGramCounts(counts, positions, max_n, min_count)


def pmi_n(g: NGram, stats: NGramCounts) -> float:
    """PMI_n(w1..wn) = log p(w1..wn) - max_{σ ∈ seg(w1..wn), |σ| >= 2} Σ_{s ∈ σ} log p(s).

    Dynamic program over split points: best[j] = max over segmentations of w1..wj (one part
    allowed) of Σ log p(s); the answer excludes the one-part segmentation of w1..wn.
    """
    n = len(g)
    if n < 2:
        raise ValueError(f"PMI_n needs an n-gram with n >= 2, got {g!r}")
    lp = lambda i, j: stats.log_p(g[i:j])  # noqa: E731  log p(w_{i+1..j})
    best = [0.0] + [-math.inf] * n
    for j in range(1, n):
        best[j] = max(best[i] + lp(i, j) for i in range(j))
    seg_max = max(best[i] + lp(i, n) for i in range(1, n))
    return lp(0, n) - seg_max


def pmi_from_counts(stats: NGramCounts) -> dict[NGram, float]:
    """PMI_n of every counted n-gram with 2 <= n <= max_n (all have count >= min_count)."""
    return {g: pmi_n(g, stats) for g in stats.counts if len(g) >= 2}


def ngram_pmi(docs: Iterable[Sequence[str]], max_n: int = 5, min_count: int = 10) -> dict[NGram, float]:
    """Word n-gram (2 <= n <= max_n, count >= min_count) -> PMI_n in nats."""
    return pmi_from_counts(count_ngrams(docs, max_n, min_count))


def masking_vocabulary(
    pmi: dict[NGram, float], size: int, mix: Sequence[float] = PAPER_LENGTH_MIX
) -> dict[int, list[tuple[NGram, float]]]:
    """Top ``round(size * mix[n-2])`` n-grams of each length n by PMI_n (ranked per length,
    since PMI_n grows with n), as ``{n: [(ngram, pmi), ...]}`` best first. A length with
    fewer candidates contributes all it has. Ties break on the n-gram's text."""
    if size < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {size}")
    if any(m < 0 for m in mix) or not math.isclose(sum(mix), 1.0, abs_tol=1e-6):
        raise ValueError(f"mix must be non-negative and sum to 1, got {tuple(mix)}")
    vocab = {}
    for n, share in enumerate(mix, start=2):
        ranked = sorted(((g, v) for g, v in pmi.items() if len(g) == n), key=lambda gv: (-gv[1], gv[0]))
        vocab[n] = ranked[: round(size * share)]
    return vocab


def vocabulary_set(vocab: dict[int, list[tuple[NGram, float]]]) -> frozenset[NGram]:
    return frozenset(g for entries in vocab.values() for g, _ in entries)


# --------------------------------------------------------------------------------------
# Masking units: a unit is a token range [start, end) that is masked whole or not at all
# --------------------------------------------------------------------------------------
Span = tuple[int, int]


def find_matches(words: Sequence[str], vocab: frozenset[NGram], max_n: int = 5) -> list[tuple[int, int]]:
    """Every occurrence (first word, n) of a vocabulary n-gram in ``words``."""
    out = []
    for i in range(len(words)):
        for n in range(2, min(max_n, len(words) - i) + 1):
            if tuple(words[i : i + n]) in vocab:
                out.append((i, n))
    return out


def pmi_word_units(n_words: int, matches: Sequence[tuple[int, int]], rng: np.random.Generator) -> list[Span]:
    """Segment words 0..n_words-1 into units (word ranges): an n-gram contained in a longer
    match yields to it; of overlapping matches one is chosen at random (random order,
    first come first served); every word left over is a unit of its own."""
    maximal, max_end = [], -1
    for s, n in sorted(matches, key=lambda m: (m[0], -m[1])):
        if s + n > max_end:  # not inside an earlier-starting (or same-start longer) match
            maximal.append((s, n))
            max_end = s + n
    taken = np.zeros(n_words, dtype=bool)
    units = []
    for k in rng.permutation(len(maximal)):
        s, n = maximal[k]
        if not taken[s : s + n].any():
            taken[s : s + n] = True
            units.append((s, s + n))
    units.extend((w, w + 1) for w in np.flatnonzero(~taken))
    return units


def select_units(units: Sequence[Span], budget: int, rng: np.random.Generator) -> list[Span]:
    """Draw units uniformly at random without replacement, keeping each that still fits
    in ``budget`` tokens, until the budget is met (BERT's create_masked_lm_predictions)."""
    chosen, total = [], 0
    for k in rng.permutation(len(units)):
        s, e = units[k]
        if total + (e - s) <= budget:
            chosen.append((s, e))
            total += e - s
            if total == budget:
                break
    return chosen


def span_units(word_spans: Sequence[Span], budget: int, rng: np.random.Generator, p: float = SPAN_P, max_len: int = SPAN_MAX) -> list[Span]:
    """SpanBERT random spans: length ℓ (in words) ~ Geometric(p) clipped to max_len, start
    word uniform; a span grows word by word while the words are free and fit the budget
    (so a word is never split, unlike SpanBERT's code which may cut the last word)."""
    lengths = np.arange(1, max_len + 1)
    probs = p * (1 - p) ** (lengths - 1)
    probs /= probs.sum()
    n_words = len(word_spans)
    taken = np.zeros(n_words, dtype=bool)
    chosen, total = [], 0
    for _ in range(10 * n_words + 10):  # attempts; ends well before on any real sequence
        if total >= budget:
            break
        ell = int(rng.choice(lengths, p=probs))
        w0 = int(rng.integers(n_words))
        w1 = w0
        while w1 < min(n_words, w0 + ell) and not taken[w1]:
            size = word_spans[w1][1] - word_spans[w1][0]
            if total + size > budget:
                break
            total += size
            w1 += 1
        if w1 > w0:
            taken[w0:w1] = True
            chosen.append((word_spans[w0][0], word_spans[w1 - 1][1]))
    return chosen


def mask_budget(n_tokens: int, rate: float = MASK_RATE) -> int:
    return max(1, round(rate * n_tokens))


def replace_units(
    input_ids: np.ndarray,
    units: Sequence[Span],
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    first_regular_id: int,
    probs: Sequence[float] = REPLACE_PROBS,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 per unit: all tokens of a unit become [MASK] (probs[0]), random
    regular tokens (probs[1]), or stay (probs[2]). Returns (inputs, labels) with labels
    -100 off the units."""
    inputs, labels = input_ids.copy(), np.full_like(input_ids, -100)
    for s, e in units:
        labels[s:e] = input_ids[s:e]
        r = rng.random()
        if r < probs[0]:
            inputs[s:e] = mask_id
        elif r < probs[0] + probs[1]:
            inputs[s:e] = rng.integers(first_regular_id, vocab_size, size=e - s)
    return inputs, labels


class Masker:
    """Chooses the units to mask in one chunk (``datamodules.text.Chunk``) by ``scheme``.

    ``vocab`` (a set of n-grams) is needed by ``pmi`` only. ``__call__`` returns the chosen
    token ranges; :meth:`mask` applies the 80/10/10 replacement too.
    """

    def __init__(
        self,
        scheme: Scheme,
        mask_id: int,
        vocab_size: int,
        first_regular_id: int = 5,
        rate: float = MASK_RATE,
        vocab: frozenset[NGram] | None = None,
        max_n: int = 5,
        span_p: float = SPAN_P,
        span_max: int = SPAN_MAX,
        replace_probs: Sequence[float] = REPLACE_PROBS,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown masking scheme {scheme!r}; known: {', '.join(SCHEMES)}")
        if scheme == "pmi" and not vocab:
            raise ValueError("scheme 'pmi' needs a non-empty n-gram vocabulary")
        if not 0 < rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        if len(replace_probs) != 3 or min(replace_probs) < 0 or not math.isclose(sum(replace_probs), 1.0):
            raise ValueError(f"replace_probs must be 3 non-negative numbers summing to 1, got {tuple(replace_probs)}")
        self.replace_probs = tuple(replace_probs)
        self.scheme, self.mask_id, self.vocab_size, self.first_regular_id = scheme, mask_id, vocab_size, first_regular_id
        self.rate, self.vocab, self.max_n, self.span_p, self.span_max = rate, vocab, max_n, span_p, span_max
        self._matches_key = ("pmi_matches", max_n, hash(vocab)) if vocab else None

    def units(self, chunk, rng: np.random.Generator) -> list[Span]:
        spans = chunk.word_spans
        budget = mask_budget(spans[-1][1] - spans[0][0], self.rate)
        if self.scheme == "random":
            return select_units([(t, t + 1) for t in range(spans[0][0], spans[-1][1])], budget, rng)
        if self.scheme == "whole_word":
            return select_units(list(spans), budget, rng)
        if self.scheme == "span":
            return span_units(spans, budget, rng, self.span_p, self.span_max)
        key = self._matches_key
        if key not in chunk.extra:  # matches depend only on the chunk and the vocabulary: cached
            chunk.extra[key] = find_matches(chunk.words, self.vocab, self.max_n)
        word_units = pmi_word_units(len(spans), chunk.extra[key], rng)
        return select_units([(spans[a][0], spans[b - 1][1]) for a, b in word_units], budget, rng)

    __call__ = units

    def mask(self, chunk, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        units = self.units(chunk, rng)
        return replace_units(chunk.input_ids, units, rng, self.mask_id, self.vocab_size, self.first_regular_id, self.replace_probs)


class MaskingCollator:
    """``collate_fn`` for ``MLMDataModule``: masks the chunks of a batch with one numpy
    stream seeded by ``seed``, pads, and returns input_ids / attention_mask / labels."""

    def __init__(self, masker: Masker, seed: int, pad_id: int = 0) -> None:
        self.masker, self.rng, self.pad_id = masker, np.random.default_rng(seed), pad_id

    def __call__(self, chunks) -> dict[str, torch.Tensor]:
        from datamodules.text import pad_batch

        pairs = [self.masker.mask(c, self.rng) for c in chunks]
        inputs = pad_batch([p[0] for p in pairs], self.pad_id)
        return {
            "input_ids": inputs,
            "attention_mask": pad_batch([np.ones(len(p[0]), dtype=np.int64) for p in pairs], 0),
            "labels": pad_batch([p[1] for p in pairs], fill=-100),
        }


def fixed_eval_batches(chunks, masker: Masker, seed: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """The held-out chunks masked once, the same way for every scheme under comparison."""
    collate = MaskingCollator(masker, seed)
    return [collate(chunks[i : i + batch_size]) for i in range(0, len(chunks), batch_size)]


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------
def build_bert_mlm(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, max_len: int):
    """A BERT masked LM from scratch (Hugging Face ``BertForMaskedLM``, tied embeddings)."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_len,
        type_vocab_size=1,
        pad_token_id=0,
    )
    return BertForMaskedLM(config)


def masked_lm_logits(mlm, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """Logits at the labelled positions only: (N_masked, V), and their targets (N_masked,).
    Equal to BertForMaskedLM's logits there, without the (B, T, V) tensor elsewhere."""
    hidden = mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
    where = labels != -100
    return mlm.cls(hidden[where]), labels[where]


class MaskedLMPretrainer(L.LightningModule):
    """MLM pretraining; validation = accuracy and cross-entropy on fixed, commonly masked
    held-out batches. ``curve`` collects (global step, accuracy, loss) at every validation."""

    def __init__(
        self,
        vocab_size: int = 8000,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 512,
        max_len: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        max_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.mlm = build_bert_mlm(vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_len)
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=vocab_size, average="micro")
        self.val_loss = torchmetrics.MeanMetric()  # per masked token
        self.curve: list[tuple[int, float, float]] = []

    def training_step(self, batch, batch_idx):
        logits, target = masked_lm_logits(self.mlm, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss = nn.functional.cross_entropy(logits, target)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits, target = masked_lm_logits(self.mlm, batch["input_ids"], batch["attention_mask"], batch["labels"])
        self.val_acc.update(logits.argmax(-1), target)
        self.val_loss.update(nn.functional.cross_entropy(logits, target), weight=target.numel())

    def on_validation_epoch_end(self) -> None:
        acc, loss = float(self.val_acc.compute()), float(self.val_loss.compute())
        self.val_acc.reset()
        self.val_loss.reset()
        self.log_dict({"val_mlm_acc": acc, "val_mlm_loss": loss})
        self.curve.append((int(self.global_step), acc, loss))

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = get_linear_schedule_with_warmup(opt, hp.warmup_steps, hp.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SentenceClassifier(L.LightningModule):
    """Downstream fine-tuning: the pretrained BERT encoder, mean-pooled, and a linear head."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_classes: int, lr: float = 5e-4, max_steps: int = 300) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.head = nn.Linear(hidden_size, num_classes)
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1.0))  # (B, C)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self(batch["input_ids"], batch["attention_mask"]), batch["label"])
        self.log("finetune_loss", loss)
        return loss

    def test_step(self, batch, batch_idx):
        self.test_acc.update(self(batch["input_ids"], batch["attention_mask"]).argmax(-1), batch["label"])
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = get_linear_schedule_with_warmup(opt, max(1, self.hparams.max_steps // 10), self.hparams.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
