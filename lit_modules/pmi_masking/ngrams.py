"""Word n-gram statistics, the paper's PMI_n (Eq. 3) and the per-length masking vocabulary.

PMI_n(w1..wn) = log p(w1..wn) - max over segmentations σ of w1..wn into >= 2 parts of
Σ_{s∈σ} log p(s), by a dynamic program over split points. The released lists of
AI21Labs/pmi-masking rank by a frequency-weighted variant, min_σ log p²(w1..wn)/Π p(s) =
PMI_n + log p(w1..wn) (their README); ``score="freq_weighted"`` selects it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

NGram = tuple[str, ...]
Score = Literal["pmi", "freq_weighted"]
SCORES = ("pmi", "freq_weighted")

# Paper Sec. 3 / AI21 README: vocabulary mix by length n = 2, 3, 4, 5.
PAPER_LENGTH_MIX = (0.5, 0.25, 0.125, 0.125)


def is_word(w: str) -> bool:
    """A masking-unit word: letters only (no punctuation, no digits). ``"york"``, ``"café"``
    qualify; ``","``, ``"1999"``, ``"'"`` do not. The tokenizer's pre-tokeniser already puts
    punctuation apart, so a word with any non-letter is punctuation or a number."""
    return w.isalpha()


@dataclass
class NGramCounts:
    """``counts[g]``: occurrences of word n-gram ``g`` (every unigram; n >= 2 only if
    count >= min_count, and only if all its words pass the counting filter); ``positions[n]``:
    number of n-gram positions of length n."""

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


def count_ngrams(
    docs: Iterable[Sequence[str]], max_n: int = 5, min_count: int = 10, keep: Callable[[str], bool] | None = None
) -> NGramCounts:
    """Count word n-grams (1 <= n <= max_n) within documents, streaming.

    ``docs`` is re-iterable (a list, or an object whose ``__iter__`` restarts): one pass
    per length. Apriori pruning keeps memory bounded by the surviving counts rather than
    the corpus: an n-gram is counted only if both its (n-1)-prefix and (n-1)-suffix reached
    ``min_count`` (each occurrence of g contains one of each, so no frequent n-gram is
    missed). N-grams never cross document boundaries. With ``keep`` (e.g. :func:`is_word`),
    n-grams of length >= 2 are counted only if every word passes it; unigrams and the
    position counts are unaffected (so probabilities are those of the whole corpus), and
    every sub-n-gram of a kept n-gram is kept, so PMI_n's segmentations stay computable.
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
    frequent = {g for g, c in unigrams.items() if c >= min_count and (keep is None or keep(g[0]))}
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


def pmi_from_counts(stats: NGramCounts, score: Score = "pmi") -> dict[NGram, float]:
    """The score of every counted n-gram with 2 <= n <= max_n (all have count >= min_count):
    PMI_n (``"pmi"``, the paper's Eq. 3) or PMI_n + log p(g) (``"freq_weighted"``, the
    score of AI21's released lists)."""
    if score not in SCORES:
        raise ValueError(f"unknown n-gram score {score!r}; known: {', '.join(SCORES)}")
    if score == "pmi":
        return {g: pmi_n(g, stats) for g in stats.counts if len(g) >= 2}
    return {g: pmi_n(g, stats) + stats.log_p(g) for g in stats.counts if len(g) >= 2}


def ranking_scores(stats: NGramCounts, score: Score = "pmi", min_pmi: float = -math.inf) -> dict[NGram, float]:
    """The ranking score (see :func:`pmi_from_counts`) of the n-grams whose PMI_n exceeds
    ``min_pmi``: the threshold is on the paper's PMI_n whichever score ranks."""
    pmi = pmi_from_counts(stats, "pmi")
    ranked = pmi if score == "pmi" else pmi_from_counts(stats, score)
    return {g: v for g, v in ranked.items() if pmi[g] > min_pmi}


def ngram_pmi(
    docs: Iterable[Sequence[str]], max_n: int = 5, min_count: int = 10, keep: Callable[[str], bool] | None = None
) -> dict[NGram, float]:
    """Word n-gram (2 <= n <= max_n, count >= min_count, words passing ``keep``) -> PMI_n in nats."""
    return pmi_from_counts(count_ngrams(docs, max_n, min_count, keep))


def masking_vocabulary(
    pmi: dict[NGram, float], size: int, mix: Sequence[float] = PAPER_LENGTH_MIX, min_score: float = -math.inf
) -> dict[int, list[tuple[NGram, float]]]:
    """Top ``round(size * mix[n-2])`` n-grams of each length n by score (ranked per length,
    since PMI_n grows with n), as ``{n: [(ngram, score), ...]}`` best first. Only n-grams
    scoring above ``min_score`` are taken: when a length's quota exceeds its candidates the
    threshold keeps near-independent n-grams (", the united states" at -0.04 nats) out
    rather than taking every candidate. Ties break on the n-gram's text."""
    if size < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {size}")
    if any(m < 0 for m in mix) or not math.isclose(sum(mix), 1.0, abs_tol=1e-6):
        raise ValueError(f"mix must be non-negative and sum to 1, got {tuple(mix)}")
    vocab = {}
    for n, share in enumerate(mix, start=2):
        ranked = sorted(((g, v) for g, v in pmi.items() if len(g) == n and v > min_score), key=lambda gv: (-gv[1], gv[0]))
        vocab[n] = ranked[: round(size * share)]
    return vocab


def vocabulary_set(vocab: dict[int, list[tuple[NGram, float]]]) -> frozenset[NGram]:
    return frozenset(g for entries in vocab.values() for g, _ in entries)
