"""The four masking schemes under one 15% budget, and the held-out maskings of the
cross-evaluation (the four schemes, whole PMI n-grams, one word of a PMI n-gram).

A unit is a token range [start, end) that is masked whole or not at all.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

from lit_modules.pmi_masking.ngrams import NGram

Scheme = Literal["random", "whole_word", "span", "pmi"]
SCHEMES = ("random", "whole_word", "span", "pmi")
# Held-out maskings: the four schemes (every chosen token -> [MASK]), whole PMI n-grams only,
# and one word of each of those n-grams with the rest of it visible (same draws as pmi_ngram).
EVAL_MASKINGS = (*SCHEMES, "pmi_ngram", "pmi_one_word")
MASK_RATE = 0.15  # BERT (Devlin et al., 2019), kept by every scheme in the paper
REPLACE_PROBS = (0.8, 0.1, 0.1)  # [MASK] / random token / unchanged, BERT
SPAN_P, SPAN_MAX = 0.2, 10  # SpanBERT (Joshi et al., 2020), Sec. 3.1: mean 3.8 words
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


def span_length_probs(p: float = SPAN_P, max_len: int = SPAN_MAX) -> np.ndarray:
    """P(ℓ) for ℓ = 1..max_len: Geometric(p) truncated at max_len and renormalised (SpanBERT)."""
    if not 0 < p <= 1 or max_len < 1:
        raise ValueError(f"span lengths need 0 < p <= 1 and max_len >= 1, got p={p}, max_len={max_len}")
    probs = p * (1 - p) ** np.arange(max_len)
    return probs / probs.sum()


def span_units(word_spans: Sequence[Span], budget: int, rng: np.random.Generator, p: float = SPAN_P, max_len: int = SPAN_MAX) -> list[Span]:
    """SpanBERT random spans whose lengths keep their distribution: length ℓ (in words) ~
    Geometric(p) clipped to max_len, start uniform among the words where ℓ free words follow.

    A span is never cut by the budget (SpanBERT's code cuts the last one; at 512 tokens that
    is rare, at 64 it would shorten the mean from 3.8 words to about 2). Instead another span
    is drawn, before its length is known, while the remaining budget is at least the mean
    overshoot of a renewal process, E[s²] / (2 E[s]) tokens for a span of s tokens (words of
    this chunk's mean size), so the masked count is near the budget on average (about 15.5%
    at 64 tokens) and the realised lengths follow the distribution."""
    probs = span_length_probs(p, max_len)
    lengths = np.arange(1, max_len + 1)
    n_words = len(word_spans)
    sizes = np.array([e - s for s, e in word_spans])
    cdf = np.cumsum(probs)
    overshoot = float(probs @ lengths**2) / (2 * float(probs @ lengths)) * float(sizes.mean())  # E[s²] / 2E[s]
    taken = np.zeros(n_words, dtype=np.int64)
    chosen, total = [], 0
    for _ in range(4 * n_words + 10):  # attempts; ends well before on any real sequence
        if total >= budget or (chosen and budget - total < overshoot):  # the first span always
            break
        ell = min(int(np.searchsorted(cdf, rng.random(), side="right")) + 1, max_len)  # ℓ ~ probs
        if ell > n_words:
            continue
        busy = np.concatenate([[0], np.cumsum(taken)])  # busy[j] = taken words before j
        starts = np.flatnonzero(busy[ell:] - busy[: n_words - ell + 1] == 0)  # ℓ free words from here
        if len(starts) == 0:
            continue
        w0 = int(rng.choice(starts))
        taken[w0 : w0 + ell] = 1
        chosen.append((word_spans[w0][0], word_spans[w0 + ell - 1][1]))
        total += int(sizes[w0 : w0 + ell].sum())
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
        span_length_probs(span_p, span_max)  # validates
        self.replace_probs = tuple(replace_probs)
        self.scheme, self.mask_id, self.vocab_size, self.first_regular_id = scheme, mask_id, vocab_size, first_regular_id
        self.rate, self.vocab, self.max_n, self.span_p, self.span_max = rate, vocab, max_n, span_p, span_max

    def word_units(self, chunk, rng: np.random.Generator) -> list[Span]:
        """PMI units as word ranges: vocabulary n-grams (longest, random overlaps), else words."""
        key = ("pmi_matches", self.max_n, hash(self.vocab))
        if key not in chunk.extra:  # matches depend only on the chunk and the vocabulary: cached
            chunk.extra[key] = find_matches(chunk.words, self.vocab, self.max_n)
        return pmi_word_units(len(chunk.word_spans), chunk.extra[key], rng)

    def units(self, chunk, rng: np.random.Generator) -> list[Span]:
        spans = chunk.word_spans
        budget = mask_budget(spans[-1][1] - spans[0][0], self.rate)
        if self.scheme == "random":
            return select_units([(t, t + 1) for t in range(spans[0][0], spans[-1][1])], budget, rng)
        if self.scheme == "whole_word":
            return select_units(list(spans), budget, rng)
        if self.scheme == "span":
            return span_units(spans, budget, rng, self.span_p, self.span_max)
        return select_units([(spans[a][0], spans[b - 1][1]) for a, b in self.word_units(chunk, rng)], budget, rng)

    __call__ = units

    def mask(self, chunk, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        units = self.units(chunk, rng)
        return replace_units(chunk.input_ids, units, rng, self.mask_id, self.vocab_size, self.first_regular_id, self.replace_probs)


def collocation_units(chunk, masker: Masker, rng: np.random.Generator) -> list[tuple[Span, Span]]:
    """PMI n-gram occurrences of a chunk drawn up to the masking budget (units of two or more
    words only), each with one of its words chosen uniformly: [(n-gram tokens, word tokens)]."""
    spans = chunk.word_spans
    budget = mask_budget(spans[-1][1] - spans[0][0], masker.rate)
    ngrams = [(a, b) for a, b in masker.word_units(chunk, rng) if b - a > 1]
    token_units = {(spans[a][0], spans[b - 1][1]): (a, b) for a, b in ngrams}
    out = []
    for s, e in select_units(list(token_units), budget, rng):
        a, b = token_units[(s, e)]
        out.append(((s, e), spans[int(rng.integers(a, b))]))
    return out


def eval_mask(chunk, masking: str, masker: Masker, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One held-out masking of a chunk, every chosen token -> [MASK]: (inputs, labels, focus).

    ``focus`` marks the tokens of the one chosen word of each PMI n-gram (``pmi_ngram`` and
    ``pmi_one_word``, which draw the same n-grams and words from the same ``rng`` state) and
    every labelled token otherwise. ``masker`` carries the rate, the vocabulary and the span
    settings; its own scheme is ignored."""
    if masking not in EVAL_MASKINGS:
        raise ValueError(f"unknown held-out masking {masking!r}; known: {', '.join(EVAL_MASKINGS)}")
    ids = chunk.input_ids
    if masking in SCHEMES:
        masker = Masker(masking, masker.mask_id, masker.vocab_size, masker.first_regular_id, masker.rate, masker.vocab,
                        masker.max_n, masker.span_p, masker.span_max, (1.0, 0.0, 0.0))
        inputs, labels = replace_units(ids, masker.units(chunk, rng), rng, masker.mask_id, masker.vocab_size, 0, (1.0, 0.0, 0.0))
        return inputs, labels, labels != -100
    inputs, labels, focus = ids.copy(), np.full_like(ids, -100), np.zeros(len(ids), dtype=bool)
    for (s, e), (ws, we) in collocation_units(chunk, masker, rng):
        a, b = (s, e) if masking == "pmi_ngram" else (ws, we)
        inputs[a:b], labels[a:b] = masker.mask_id, ids[a:b]
        focus[ws:we] = True
    return inputs, labels, focus


class MaskingCollator:
    """``collate_fn`` for ``MLMDataModule``: masks the chunks of a batch with one numpy
    stream seeded by ``seed``, pads, and returns input_ids / attention_mask / labels."""

    def __init__(self, masker: Masker, seed: int, pad_id: int = 0) -> None:
        self.masker, self.rng, self.pad_id = masker, np.random.default_rng(seed), pad_id

    def __call__(self, chunks) -> dict[str, torch.Tensor]:
        from datamodules.text import pad_batch

        pairs = [self.masker.mask(c, self.rng) for c in chunks]
        return {
            "input_ids": pad_batch([p[0] for p in pairs], self.pad_id),
            "attention_mask": pad_batch([np.ones(len(p[0]), dtype=np.int64) for p in pairs], 0),
            "labels": pad_batch([p[1] for p in pairs], fill=-100),
        }


def eval_batches(chunks, masking: str, masker: Masker, seed: int, batch_size: int, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """The held-out chunks masked once by ``masking`` with a stream seeded by ``seed``: the same
    batches for every model evaluated (and the same n-grams and words for pmi_ngram and
    pmi_one_word at the same seed). Batches hold input_ids, attention_mask, labels and focus."""
    from datamodules.text import pad_batch

    rng = np.random.default_rng(seed)
    triples = [eval_mask(c, masking, masker, rng) for c in chunks]
    out = []
    for i in range(0, len(triples), batch_size):
        part = triples[i : i + batch_size]
        out.append({
            "input_ids": pad_batch([t[0] for t in part], pad_id),
            "attention_mask": pad_batch([np.ones(len(t[0]), dtype=np.int64) for t in part], 0),
            "labels": pad_batch([t[1] for t in part], fill=-100),
            "focus": pad_batch([t[2].astype(np.int64) for t in part], 0).bool(),
        })
    return out
